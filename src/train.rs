//! One training step - forward, loss, backward, AdamW - in f32 or in half precision.
//!
//! Half precision halves the memory traffic and, on a GPU, runs on the tensor cores, but 16 bits
//! hold little: an update of 1e-4 added to a weight of 1 is lost in f16 (its step at 1 is 1e-3)
//! and in bf16 (8e-3). So there are two ways to train in half precision, both here:
//!
//! - **mixed** ([`TrainPrecision::Mixed`]): the weights the optimiser updates (the *master*
//!   weights) stay in f32; each step casts them to f16 or bf16 for the forward and backward
//!   passes, and the gradients flow back through the cast into f32. The loss is computed from
//!   the logits in f32, as transformers does. This is what PyTorch's `autocast` gives.
//! - **pure** ([`TrainPrecision::Pure`]): weights, activations and gradients all in the half
//!   type, as after the tutorial's `model.half()`. Cheapest, and small updates can vanish. Only
//!   AdamW's moments stay f32 (see [`HalfWeightsAdamW`] for why).
//!
//! f16 also has a small range: gradients below 6e-8 become 0. Mixed f16 therefore multiplies
//! the loss by a large factor before the backward pass and divides the gradients by it before
//! the update, skipping the update and lowering the factor when a gradient overflowed -
//! PyTorch's `GradScaler`, here [`LossScaler`]. bf16 has f32's range and needs none of it.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::dropout::Dropout;
use crate::kernels::FusedAdamW;
use crate::{loss, Error, Gpt2Config, Gpt2LmHeadModel, Result, Weights};

// ANCHOR: precision
/// The number formats of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainPrecision {
    /// Everything in f32.
    F32,
    /// f32 master weights and optimiser; forward and backward in this half type (f16 with
    /// loss scaling).
    Mixed(DType),
    /// Weights, activations and gradients in this half type (AdamW's moments in f32).
    Pure(DType),
}
// ANCHOR_END: precision

impl TrainPrecision {
    /// Reads `f32`, `mixed-f16`, `mixed-bf16`, `f16` or `bf16` (the last two: pure half).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "f32" => Self::F32,
            "mixed-f16" => Self::Mixed(DType::F16),
            "mixed-bf16" => Self::Mixed(DType::BF16),
            "f16" => Self::Pure(DType::F16),
            "bf16" => Self::Pure(DType::BF16),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "training precision {s:?}: expected f32, mixed-f16, mixed-bf16, f16 or bf16"
                )))
            }
        })
    }

    /// The dtype of the weights the optimiser updates.
    pub fn weight_dtype(self) -> DType {
        match self {
            Self::F32 | Self::Mixed(_) => DType::F32,
            Self::Pure(d) => d,
        }
    }

    /// The dtype the forward and backward passes run in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Mixed(d) | Self::Pure(d) => d,
        }
    }
}

impl std::fmt::Display for TrainPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 => write!(f, "f32"),
            Self::Mixed(d) => write!(f, "mixed-{}", d.as_str()),
            Self::Pure(d) => write!(f, "{}", d.as_str()),
        }
    }
}

// ANCHOR: loss_scaler
/// Dynamic loss scaling, with the rules and defaults of PyTorch's `torch.amp.GradScaler`: start
/// at 2^16; after an overflow (a gradient that is inf or NaN) skip the update and halve the
/// scale; after 2000 steps in a row without one, double it.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: usize,
    good_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new(65536.0, 2000)
    }
}

impl LossScaler {
    pub fn new(init_scale: f64, growth_interval: usize) -> Self {
        Self {
            scale: init_scale,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval,
            good_steps: 0,
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Divides the gradients of `vars` in `grads` by the scale. Returns false, and leaves
    /// `grads` unusable, if any of them holds an inf or a NaN.
    pub fn unscale(&self, grads: &mut GradStore, vars: &[Var]) -> Result<bool> {
        for var in vars {
            let Some(g) = grads.get(var) else { continue };
            let g = (g.to_dtype(DType::F32)? / self.scale)?;
            // A sum is inf or NaN when any of its terms is: one reduction per gradient.
            if !g.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Ok(false);
            }
            grads.insert(var, g.to_dtype(var.dtype())?);
        }
        Ok(true)
    }

    /// Adjusts the scale after a step whose gradients were finite or not.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
        }
    }
}
// ANCHOR_END: loss_scaler

/// Which AdamW a [`TrainStep`] uses for f32 weights: both compute the same update. (Half
/// weights always get [`HalfWeightsAdamW`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdamWKind {
    /// `candle_nn::AdamW`: a dozen tensor operations per parameter.
    Candle,
    /// [`FusedAdamW`]: one pass per parameter, in place, where it applies (f32 weights on the
    /// CPU); candle's AdamW elsewhere.
    Fused,
}

enum Opt {
    Candle(AdamW),
    Fused(FusedAdamW),
    Half(HalfWeightsAdamW),
}

/// AdamW for weights kept in a half type: the moments and the arithmetic in f32, the new weight
/// rounded to the weight's type. In f16 itself AdamW breaks down: its `eps` (1e-8) and the
/// squared small gradients in its second moment underflow to 0, and the update divides by
/// zero. Pure half precision thus means half-precision weights, gradients and activations;
/// what is lost is what it is meant to show, the updates smaller than the weights' rounding.
struct HalfWeightsAdamW {
    /// Each weight with its first and second moments (f32).
    vars: Vec<(Var, Var, Var)>,
    params: ParamsAdamW,
    step_t: i32,
}

impl HalfWeightsAdamW {
    fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|w| {
                let m = Var::zeros(w.shape(), DType::F32, w.device())?;
                let v = Var::zeros(w.shape(), DType::F32, w.device())?;
                Ok((w, m, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            params,
            step_t: 0,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let (b1, b2) = (p.beta1, p.beta2);
        let scale_m = 1.0 / (1.0 - b1.powi(self.step_t));
        let scale_v = 1.0 / (1.0 - b2.powi(self.step_t));
        for (w, m, v) in &self.vars {
            let Some(g) = grads.get(w) else { continue };
            let g = g.to_dtype(DType::F32)?;
            let m_next = ((m.as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let v_next = ((v.as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let step = ((&m_next * scale_m)? / ((&v_next * scale_v)?.sqrt()? + p.eps)?)?;
            let decayed = (w.as_tensor().to_dtype(DType::F32)? * (1.0 - p.lr * p.weight_decay))?;
            let next = (decayed - (step * p.lr)?)?;
            w.set(&next.to_dtype(w.dtype())?)?;
            m.set(&m_next)?;
            v.set(&v_next)?;
        }
        Ok(())
    }
}

/// What one [`TrainStep::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The loss before the update (unscaled).
    pub loss: f32,
    /// False when loss scaling found an overflow and the update was skipped.
    pub applied: bool,
    /// The loss scale this step used (mixed f16 only).
    pub loss_scale: Option<f64>,
}

/// The smallest loss scale that still means something: below it even the unscaled f16
/// gradients overflow, and no amount of skipping helps.
const MIN_LOSS_SCALE: f64 = 1.0;

/// One language-modelling training setup: trainable weights in the chosen precision, the model
/// in training mode (dropout on, as PyTorch's `model.train()`), and AdamW over every parameter.
pub struct TrainStep {
    cfg: Gpt2Config,
    precision: TrainPrecision,
    /// The weights AdamW updates: f32 masters (f32, mixed) or the half weights (pure).
    pub varmap: VarMap,
    vars: Vec<Var>,
    dropout: Dropout,
    /// The model over the trainable weights themselves; `None` in mixed precision, where each
    /// step builds it over fresh half-precision casts of the masters.
    model: Option<Gpt2LmHeadModel>,
    scaler: Option<LossScaler>,
    opt: Opt,
}

impl TrainStep {
    /// Trainable copies of `weights` in `precision`, dropout seeded with `seed`.
    pub fn new(
        weights: &Weights,
        cfg: &Gpt2Config,
        lr: f64,
        seed: u64,
        adamw: AdamWKind,
        precision: TrainPrecision,
    ) -> Result<Self> {
        let dtype = precision.weight_dtype();
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::InvalidArgument("var map lock poisoned".into()))?;
            for name in weights.names() {
                let t = weights.get(&name).expect("a listed name").to_dtype(dtype)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let vars = varmap.all_vars();
        let mut dropout = Dropout::seeded(seed);
        dropout.set_training(true);
        let model = match precision {
            TrainPrecision::Mixed(_) => None,
            _ => Some(Self::build(
                VarBuilder::from_varmap(&varmap, dtype, weights.device()),
                cfg,
                &dropout,
            )?),
        };
        let scaler = (precision == TrainPrecision::Mixed(DType::F16)).then(LossScaler::default);
        let params = ParamsAdamW {
            lr,
            ..ParamsAdamW::default()
        };
        let fused_applies = weights.device().is_cpu() && dtype == DType::F32;
        let opt = match adamw {
            _ if dtype != DType::F32 => Opt::Half(HalfWeightsAdamW::new(vars.clone(), params)?),
            AdamWKind::Fused if fused_applies => Opt::Fused(FusedAdamW::new(vars.clone(), params)?),
            _ => Opt::Candle(AdamW::new(vars.clone(), params)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            precision,
            varmap,
            vars,
            dropout,
            model,
            scaler,
            opt,
        })
    }

    fn build(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Gpt2LmHeadModel> {
        let mut model = Gpt2LmHeadModel::load(vb, cfg, dropout)?;
        model.transformer.set_training(true);
        Ok(model)
    }

    /// Replaces the loss scaler (mixed f16 only; other precisions scale nothing and refuse).
    pub fn with_loss_scaler(mut self, scaler: LossScaler) -> Result<Self> {
        if self.scaler.is_none() {
            return Err(Error::InvalidArgument(format!(
                "loss scaling is for mixed-f16 training, not {}",
                self.precision
            )));
        }
        self.scaler = Some(scaler);
        Ok(self)
    }

    pub fn precision(&self) -> TrainPrecision {
        self.precision
    }

    /// The loss scaler (mixed f16 only).
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// The model the next forward pass runs: the one over the trainable weights, or, in mixed
    /// precision, one over half-precision casts of the masters, made now so that it sees the
    /// latest update. The casts are operations on the masters, so the backward pass carries
    /// the gradients through them into f32.
    pub fn model(&self) -> Result<Gpt2LmHeadModel> {
        if let Some(model) = &self.model {
            return Ok(model.clone());
        }
        let half = self.precision.compute_dtype();
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidArgument("var map lock poisoned".into()))?;
        let mut casts = HashMap::with_capacity(data.len());
        let mut device = candle_core::Device::Cpu;
        for (name, var) in data.iter() {
            device = var.device().clone();
            casts.insert(name.clone(), var.as_tensor().to_dtype(half)?);
        }
        drop(data);
        let vb = VarBuilder::from_tensors(casts, half, &device);
        Self::build(vb, &self.cfg, &self.dropout)
    }

    /// The language-modelling loss of `ids` `(B, T)` predicting themselves, shifted by one; in
    /// f32 whatever the precision (the logits are cast up first, as transformers does).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let logits = self.model()?.forward(ids, None, None)?; // (B, T, V)
        let logits = logits.to_dtype(DType::F32)?;
        let labels = ids.to_dtype(DType::I64)?;
        loss::lm_loss(&logits, &labels)
    }

    // ANCHOR: step
    /// Forward, loss, backward and one AdamW update on `ids` `(B, T)`. A loss that is not
    /// finite is an error and nothing is updated - except in mixed f16, where an overflow is
    /// expected now and then: the update is skipped and the loss scale lowered.
    pub fn step(&mut self, ids: &Tensor) -> Result<StepReport> {
        let loss = self.forward(ids)?;
        let value = loss.to_scalar::<f32>()?;
        let Some(scaler) = &mut self.scaler else {
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss(value));
            }
            let grads = loss.backward()?;
            self.update(&grads)?;
            return Ok(StepReport {
                loss: value,
                applied: true,
                loss_scale: None,
            });
        };
        let scale = scaler.scale();
        let mut grads = (&loss * scale)?.backward()?;
        let finite = value.is_finite() && scaler.unscale(&mut grads, &self.vars)?;
        scaler.update(finite);
        if scaler.scale() < MIN_LOSS_SCALE {
            return Err(Error::LossScaleCollapsed(scaler.scale()));
        }
        if finite {
            self.update(&grads)?;
        }
        Ok(StepReport {
            loss: value,
            applied: finite,
            loss_scale: Some(scale),
        })
    }
    // ANCHOR_END: step

    /// One AdamW update from gradients of [`TrainStep::forward`]'s loss (already unscaled).
    pub fn update(&mut self, grads: &GradStore) -> Result<()> {
        match &mut self.opt {
            Opt::Candle(opt) => Ok(opt.step(grads)?),
            Opt::Fused(opt) => opt.step(grads),
            Opt::Half(opt) => opt.step(grads),
        }
    }

    /// The trained weights, in the dtype they are kept in.
    pub fn weights(&self) -> Result<Weights> {
        Weights::from_varmap(&self.varmap)
    }
}
