//! One training step: forward, loss, backward and an optimiser update - whole with
//! [`TrainStep::step`], or split for gradient accumulation into micro-steps
//! ([`TrainStep::accumulate`]) and one update ([`TrainStep::apply`]).
//!
//! The step trains one model class, its [`TaskHead`]: `GPT2LMHeadModel` and the shifted
//! language-modelling loss (chapter 6), or `GPT2ForSequenceClassification` and the
//! cross-entropy of one label per sequence (chapter 7, [`TrainStep::accumulate_labelled`]).
//! Everything after the loss - backward, accumulation, clipping, AdamW - is the same for both.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::clip::{clip_grad_norm, grad_norm};
use super::optim::{named_vars, AdamW, AdamWConfig, AdamWKind, AdamWState, Opt};
use super::precision::{LossScaler, TrainPrecision};
use crate::dropout::{Dropout, DropoutRngState};
use crate::heads::Gpt2ForSequenceClassification;
use crate::{kernels, loss, Error, Gpt2Config, Gpt2LmHeadModel, Result, Weights};

mod written_out;
use written_out::Batch;

// ANCHOR: task_head
/// Which model class a [`TrainStep`] trains, and so which loss it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskHead {
    /// `GPT2LMHeadModel`: the shifted language-modelling loss of the ids themselves.
    #[default]
    LanguageModel,
    /// `GPT2ForSequenceClassification` with this many labels: the cross-entropy of the logits
    /// at each row's last non-pad token against the row's label.
    SequenceClassification { num_labels: usize },
}
// ANCHOR_END: task_head

/// The model over the trainable weights, of the step's [`TaskHead`].
#[derive(Clone)]
enum TaskModel {
    Lm(Gpt2LmHeadModel),
    Classifier(Gpt2ForSequenceClassification),
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

/// What one [`TrainStep::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateReport {
    /// The norm of the accumulated gradients before clipping; `None` when loss scaling found
    /// an overflow and skipped the update.
    pub grad_norm: Option<f64>,
    /// False when loss scaling found an overflow and the update was skipped.
    pub applied: bool,
    /// The loss scale of the accumulated micro-steps (mixed f16 only).
    pub loss_scale: Option<f64>,
}

/// The smallest loss scale that still means something: below it even the unscaled f16
/// gradients overflow, and no amount of skipping helps.
const MIN_LOSS_SCALE: f64 = 1.0;

/// A training step's own state beyond weights and optimiser, for checkpoints: with it a resumed
/// run draws the same dropout masks and scales its loss as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStepState {
    /// [`TrainPrecision`] as written by its `Display` (`f32`, `mixed-bf16`, `f16`, ...).
    pub precision: String,
    pub dropout: bool,
    pub dropout_rng: DropoutRngState,
    pub loss_scaler: Option<LossScaler>,
    pub optimizer_steps: usize,
    /// The model class trained (checkpoints written before chapter 7 lack it: LM).
    #[serde(default)]
    pub task: TaskHead,
}

/// One language-modelling training setup: trainable weights in the chosen precision, the model
/// in training mode (dropout on, as PyTorch's `model.train()`, unless switched off), the
/// optimiser, and the gradients accumulated since its last update.
pub struct TrainStep {
    cfg: Gpt2Config,
    task: TaskHead,
    precision: TrainPrecision,
    /// The weights the optimiser updates: f32 masters (f32, mixed) or the half weights (pure).
    pub varmap: VarMap,
    vars: Vec<Var>,
    /// The checkpoint name of each of `vars`.
    names: Vec<String>,
    dropout: Dropout,
    dropout_on: bool,
    /// The model over the trainable weights themselves; `None` in mixed precision, where each
    /// step builds it over fresh half-precision casts of the masters.
    model: Option<TaskModel>,
    scaler: Option<LossScaler>,
    opt: Opt,
    /// Optimizer updates made (the checkpoint's step count).
    updates: usize,
    /// The sum of the micro-steps' gradients since the last update, for `vars` only.
    accumulated: GradStore,
    /// The same sums from the written-out micro-step (`kernels::lm_micro_step`), in the order
    /// of `vars`, with its buffers; joined to `accumulated` by the update.
    written: kernels::GradSums,
    /// Whether the language-modelling micro-step may take the written-out pass.
    written_out: bool,
    micro_steps: usize,
    /// A micro-step's loss was not finite under loss scaling: skip the coming update.
    overflowed: bool,
    halt_on_non_finite: bool,
}

impl TrainStep {
    /// Trainable copies of `weights` in `precision`, dropout seeded with `seed`, and candle's
    /// AdamW defaults at `lr` (weight decay 0.01 on everything) - the benchmark's setup.
    pub fn new(
        weights: &Weights,
        cfg: &Gpt2Config,
        lr: f64,
        seed: u64,
        adamw: AdamWKind,
        precision: TrainPrecision,
    ) -> Result<Self> {
        let varmap = weights.to_varmap_in(precision.weight_dtype())?;
        let params = ParamsAdamW {
            lr,
            ..ParamsAdamW::default()
        };
        let opt = Opt::legacy(&varmap, params, adamw)?;
        Self::assemble(
            weights,
            varmap,
            cfg,
            TaskHead::LanguageModel,
            seed,
            precision,
            opt,
        )
    }

    /// Trainable copies of `weights` in `precision`, dropout seeded with `seed`, and [`AdamW`]
    /// with `adamw` over the named parameters - the fine-tuning chapters' setup.
    pub fn with_adamw(
        weights: &Weights,
        cfg: &Gpt2Config,
        precision: TrainPrecision,
        adamw: AdamWConfig,
        seed: u64,
    ) -> Result<Self> {
        Self::for_task(
            weights,
            cfg,
            TaskHead::LanguageModel,
            precision,
            adamw,
            seed,
        )
    }

    /// [`TrainStep::with_adamw`] for any [`TaskHead`]. For sequence classification `weights`
    /// must hold the `score` head already (see `heads::for_sequence_classification`), and
    /// `cfg.pad_token_id` says where each padded row ends.
    pub fn for_task(
        weights: &Weights,
        cfg: &Gpt2Config,
        task: TaskHead,
        precision: TrainPrecision,
        adamw: AdamWConfig,
        seed: u64,
    ) -> Result<Self> {
        let varmap = weights.to_varmap_in(precision.weight_dtype())?;
        let opt = Opt::Named(AdamW::from_varmap(&varmap, adamw)?);
        Self::assemble(weights, varmap, cfg, task, seed, precision, opt)
    }

    /// A training step continuing from a checkpoint: `weights` (as saved, in the training
    /// dtype), the step's own `state` and the optimiser's.
    pub fn resume(
        weights: &Weights,
        cfg: &Gpt2Config,
        state: &TrainStepState,
        adamw: AdamWState,
    ) -> Result<Self> {
        let precision = TrainPrecision::parse(&state.precision)?;
        let varmap = weights.to_varmap_in(precision.weight_dtype())?;
        let opt = Opt::Named(AdamW::from_state(named_vars(&varmap)?, adamw)?);
        let mut train = Self::assemble(weights, varmap, cfg, state.task, 0, precision, opt)?;
        train.dropout.set_rng_state(&state.dropout_rng)?;
        train.set_dropout(state.dropout);
        if let Some(scaler) = &state.loss_scaler {
            train = train.with_loss_scaler(scaler.clone())?;
        }
        train.updates = state.optimizer_steps;
        Ok(train)
    }

    fn assemble(
        weights: &Weights,
        varmap: VarMap,
        cfg: &Gpt2Config,
        task: TaskHead,
        seed: u64,
        precision: TrainPrecision,
        opt: Opt,
    ) -> Result<Self> {
        let (names, vars) = named_vars(&varmap)?.into_iter().unzip();
        let dtype = precision.weight_dtype();
        let dropout = Dropout::seeded(seed);
        let model = match precision {
            TrainPrecision::Mixed(_) => None,
            _ => Some(Self::build(
                VarBuilder::from_varmap(&varmap, dtype, weights.device()),
                cfg,
                task,
                &dropout,
                true,
            )?),
        };
        let scaler = (precision == TrainPrecision::Mixed(DType::F16)).then(LossScaler::default);
        let updates = match &opt {
            Opt::Named(adamw) => adamw.step_count(),
            _ => 0,
        };
        Ok(Self {
            cfg: cfg.clone(),
            task,
            precision,
            varmap,
            vars,
            names,
            dropout,
            dropout_on: true,
            model,
            scaler,
            opt,
            updates,
            accumulated: GradStore::default(),
            written: kernels::GradSums::default(),
            written_out: true,
            micro_steps: 0,
            overflowed: false,
            halt_on_non_finite: true,
        })
    }

    fn build(
        vb: VarBuilder,
        cfg: &Gpt2Config,
        task: TaskHead,
        dropout: &Dropout,
        training: bool,
    ) -> Result<TaskModel> {
        Ok(match task {
            TaskHead::LanguageModel => {
                let mut model = Gpt2LmHeadModel::load(vb, cfg, dropout)?;
                model.transformer.set_training(training);
                TaskModel::Lm(model)
            }
            TaskHead::SequenceClassification { num_labels } => {
                let mut model = Gpt2ForSequenceClassification::load(vb, cfg, num_labels, dropout)?;
                model.set_training(training);
                TaskModel::Classifier(model)
            }
        })
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

    /// Switches dropout on (the default, PyTorch's `model.train()`) or off. A config whose
    /// `*_pdrop` are 0 drops nothing either way.
    pub fn set_dropout(&mut self, on: bool) {
        self.dropout_on = on;
        match &mut self.model {
            Some(TaskModel::Lm(model)) => model.transformer.set_training(on),
            Some(TaskModel::Classifier(model)) => model.set_training(on),
            None => {}
        }
    }

    /// Whether a non-finite loss or gradient norm stops training with
    /// [`Error::NonFiniteLoss`] (the default). Switched off, the update goes ahead as in
    /// PyTorch, which checks nothing - to watch what a run like the tutorial's does next.
    pub fn set_halt_on_non_finite(&mut self, halt: bool) {
        self.halt_on_non_finite = halt;
    }

    pub fn precision(&self) -> TrainPrecision {
        self.precision
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    /// The model class this step trains.
    pub fn task(&self) -> TaskHead {
        self.task
    }

    /// The loss scaler (mixed f16 only).
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// The dropout generator every layer draws from (its state goes into checkpoints).
    pub fn dropout(&self) -> &Dropout {
        &self.dropout
    }

    /// The [`AdamW`], when built with [`TrainStep::with_adamw`] or [`TrainStep::resume`].
    pub fn optimizer(&self) -> Option<&AdamW> {
        match &self.opt {
            Opt::Named(adamw) => Some(adamw),
            _ => None,
        }
    }

    /// Optimizer updates made so far (counting those before a resume).
    pub fn step_count(&self) -> usize {
        self.updates
    }

    /// Micro-steps accumulated since the last update.
    pub fn micro_steps(&self) -> usize {
        self.micro_steps
    }

    /// This step's own state, for a checkpoint.
    pub fn state(&self) -> Result<TrainStepState> {
        Ok(TrainStepState {
            precision: self.precision.to_string(),
            dropout: self.dropout_on,
            dropout_rng: self.dropout.rng_state()?,
            loss_scaler: self.scaler.clone(),
            optimizer_steps: self.updates,
            task: self.task,
        })
    }

    /// The model the next forward pass runs: the one over the trainable weights, or, in mixed
    /// precision, one over half-precision casts of the masters, made now so that it sees the
    /// latest update. The casts are operations on the masters, so the backward pass carries
    /// the gradients through them into f32.
    pub fn model(&self) -> Result<Gpt2LmHeadModel> {
        match self.task_model()? {
            TaskModel::Lm(model) => Ok(model),
            TaskModel::Classifier(_) => Err(self.wrong_task("a language model")),
        }
    }

    /// [`TrainStep::model`] for a sequence-classification step: `GPT2ForSequenceClassification`
    /// over the trainable weights, in training mode.
    pub fn classifier(&self) -> Result<Gpt2ForSequenceClassification> {
        match self.task_model()? {
            TaskModel::Classifier(model) => Ok(model),
            TaskModel::Lm(_) => Err(self.wrong_task("a sequence classifier")),
        }
    }

    fn wrong_task(&self, wanted: &str) -> Error {
        Error::InvalidArgument(format!(
            "this training step trains {:?}, not {wanted}: build it with TrainStep::for_task and the TaskHead you mean",
            self.task
        ))
    }

    fn task_model(&self) -> Result<TaskModel> {
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
        Self::build(vb, &self.cfg, self.task, &self.dropout, self.dropout_on)
    }

    /// The language-modelling loss of `ids` `(B, T)` predicting themselves, shifted by one; in
    /// f32 whatever the precision (the logits are cast up first, as transformers does).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let logits = self.model()?.forward(ids, None, None)?; // (B, T, V)
        let logits = logits.to_dtype(DType::F32)?;
        let labels = ids.to_dtype(DType::I64)?;
        loss::lm_loss(&logits, &labels)
    }

    // ANCHOR: forward_labelled
    /// The sequence-classification loss of a padded batch: `ids` `(B, T)`, its attention mask
    /// `(B, T)` (1 = token, 0 = padding) and one label per row `labels` `(B)` - the mean over
    /// the rows of the cross-entropy at each row's last non-pad token, in f32.
    pub fn forward_labelled(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
    ) -> Result<Tensor> {
        let logits = self.classifier()?.forward(ids, attention_mask)?; // (B, num_labels)
        let logits = logits.to_dtype(DType::F32)?;
        loss::sequence_classification_loss(&logits, &labels.to_dtype(DType::I64)?)
    }
    // ANCHOR_END: forward_labelled

    fn non_finite(&self, what: &'static str, value: f64) -> Error {
        Error::NonFiniteLoss {
            what,
            value,
            step: self.updates + 1,
        }
    }

    // ANCHOR: accumulate
    /// One micro-step: the loss of `ids` `(B, T)`, and the gradients of `loss · loss_weight`
    /// added to those accumulated since the last update. A weight of 1 sums the micro-steps'
    /// gradients (the tutorial's one `backward()` per sequence), 1/N averages N of them.
    /// Returns the loss itself, unweighted. A loss that is not finite is an error, and the
    /// accumulated gradients are dropped - except in mixed f16, where an overflow is expected
    /// now and then: the coming update is skipped instead.
    pub fn accumulate(&mut self, ids: &Tensor, loss_weight: f64) -> Result<f32> {
        if let Some(loss) = self.accumulate_written_out(Batch::Lm(ids), loss_weight)? {
            return Ok(loss); // f32 or pure bf16 on the CPU: the same, written out (kernels)
        }
        let loss = self.forward(ids)?;
        self.accumulate_loss(loss, loss_weight)
    }
    // ANCHOR_END: accumulate

    /// [`TrainStep::accumulate`] for a sequence-classification step: the loss of
    /// [`TrainStep::forward_labelled`] and its gradients, weighted by `loss_weight`.
    pub fn accumulate_labelled(
        &mut self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
        loss_weight: f64,
    ) -> Result<f32> {
        let batch = (ids, attention_mask, labels);
        if let Some(loss) = self.accumulate_written_out(Batch::Labelled(batch), loss_weight)? {
            return Ok(loss); // f32 or pure bf16 on the CPU: the same, written out (kernels)
        }
        let loss = self.forward_labelled(ids, attention_mask, labels)?;
        self.accumulate_loss(loss, loss_weight)
    }

    // ANCHOR: accumulate_loss
    /// The part of a micro-step after the loss, whatever the task: backward, and the gradients
    /// added to the sum since the last update.
    fn accumulate_loss(&mut self, loss: Tensor, loss_weight: f64) -> Result<f32> {
        let value = loss.to_scalar::<f32>()?;
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale);
        if !value.is_finite() {
            if self.scaler.is_some() {
                self.overflowed = true;
            } else if self.halt_on_non_finite {
                self.zero_grad();
                return Err(self.non_finite("loss", f64::from(value)));
            }
        }
        let mut grads = (loss * (loss_weight * scale))?.backward()?;
        for var in &self.vars {
            // Detached: candle's gradients still reference the graph that made them, and a
            // sum kept across micro-steps would keep every step's activations alive.
            let Some(g) = grads.remove(var).map(|g| g.detach()) else {
                continue;
            };
            let sum = match self.accumulated.remove(var) {
                Some(acc) if crate::kernels::add_in_place(&acc, &g)? => acc,
                Some(acc) => (acc + g)?,
                None => g,
            };
            self.accumulated.insert(var, sum);
        }
        self.micro_steps += 1;
        Ok(value)
    }
    // ANCHOR_END: accumulate_loss

    // ANCHOR: apply
    /// One optimizer update from the accumulated gradients at learning rate `lr`: unscale them
    /// (mixed f16), clip their joint norm to `max_grad_norm` if given, update, and start a new
    /// accumulation. A gradient norm that is not finite is an error and nothing is updated -
    /// in mixed f16 the update is skipped and the loss scale lowered instead.
    pub fn apply(&mut self, lr: f64, max_grad_norm: Option<f64>) -> Result<UpdateReport> {
        self.apply_at(Some(lr), max_grad_norm)
    }
    // ANCHOR_END: apply

    // ANCHOR: step
    /// [`TrainStep::apply`], at the optimiser's own learning rate when `lr` is `None`.
    fn apply_at(&mut self, lr: Option<f64>, max_grad_norm: Option<f64>) -> Result<UpdateReport> {
        if self.micro_steps == 0 {
            return Err(Error::InvalidArgument(
                "no gradients to apply: call TrainStep::accumulate at least once first".into(),
            ));
        }
        self.join_written_out()?;
        let mut grads = std::mem::take(&mut self.accumulated);
        let overflowed = std::mem::take(&mut self.overflowed);
        self.micro_steps = 0;
        let loss_scale = self.scaler.as_ref().map(LossScaler::scale);
        if let Some(scaler) = &mut self.scaler {
            let finite = !overflowed && scaler.unscale(&mut grads, &self.vars)?;
            scaler.update(finite);
            if scaler.scale() < MIN_LOSS_SCALE {
                return Err(Error::LossScaleCollapsed(scaler.scale()));
            }
            if !finite {
                return Ok(UpdateReport {
                    grad_norm: None,
                    applied: false,
                    loss_scale,
                });
            }
        }
        let norm = match max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, &self.vars, max)?,
            None => grad_norm(&grads, &self.vars)?,
        };
        if !norm.is_finite() && self.halt_on_non_finite {
            return Err(self.non_finite("gradient norm", norm));
        }
        if let Some(lr) = lr {
            self.opt.set_lr(lr);
        }
        self.opt.step(&grads)?;
        self.updates += 1;
        Ok(UpdateReport {
            grad_norm: Some(norm),
            applied: true,
            loss_scale,
        })
    }

    /// Forward, loss, backward and one update on `ids` `(B, T)` at the optimiser's learning
    /// rate: one [`TrainStep::accumulate`] and one [`TrainStep::apply`].
    pub fn step(&mut self, ids: &Tensor) -> Result<StepReport> {
        let loss = self.accumulate(ids, 1.0)?;
        let report = self.apply_at(None, None)?;
        Ok(StepReport {
            loss,
            applied: report.applied,
            loss_scale: report.loss_scale,
        })
    }
    // ANCHOR_END: step

    /// Drops the gradients accumulated since the last update.
    pub fn zero_grad(&mut self) {
        self.accumulated = GradStore::default();
        self.written.clear();
        self.micro_steps = 0;
        self.overflowed = false;
    }

    /// One optimiser update from gradients of [`TrainStep::forward`]'s loss (already unscaled).
    pub fn update(&mut self, grads: &GradStore) -> Result<()> {
        self.opt.step(grads)?;
        self.updates += 1;
        Ok(())
    }

    /// The trained weights, in the dtype they are kept in.
    pub fn weights(&self) -> Result<Weights> {
        Weights::from_varmap(&self.varmap)
    }
}
