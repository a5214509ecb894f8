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
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::adamw::{named_vars, AdamW, AdamWState};
use super::clip::{clip_grad_norm, grad_norm};
use super::precision::{LossScaler, TrainPrecision};
use crate::dropout::Dropout;
use crate::heads::Gpt2ForSequenceClassification;
use crate::written_out::GradSums;
use crate::{loss, Error, Gpt2Config, Gpt2LmHeadModel, Result, Weights};

mod cpu_pass;
mod settings;

use cpu_pass::Batch;
pub use settings::{TaskHead, TrainSettings, TrainStepState};

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

/// The weights the optimiser updates: f32 masters (f32, mixed) or the half weights (pure),
/// with the checkpoint name of each.
struct Parameters {
    varmap: VarMap,
    vars: Vec<Var>,
    names: Vec<String>,
}

impl Parameters {
    /// The checkpoint names and tensors, in the step's order.
    fn named(&self) -> (Vec<&str>, Vec<Tensor>) {
        let names = self.names.iter().map(String::as_str).collect();
        let params = self.vars.iter().map(|v| v.as_tensor().clone()).collect();
        (names, params)
    }
}

/// The gradients summed by the micro-steps since the last update.
#[derive(Default)]
struct Accumulated {
    /// From the graph's backward pass, for the parameters only.
    graph: GradStore,
    /// From the written-out micro-step ([`crate::written_out`]), in the order of the
    /// parameters, with its buffers; joined to `graph` by the update.
    written: GradSums,
    micro_steps: usize,
    /// A micro-step's loss was not finite under loss scaling: skip the coming update.
    overflowed: bool,
}

/// One training setup: trainable weights in the chosen precision, the model in training mode
/// (dropout on, as PyTorch's `model.train()`, unless switched off), the optimiser, and the
/// gradients accumulated since its last update.
pub struct TrainStep {
    // What is trained.
    cfg: Gpt2Config,
    task: TaskHead,
    precision: TrainPrecision,
    params: Parameters,
    /// The model over the trainable weights themselves; `None` in mixed precision, where each
    /// step builds it over fresh half-precision casts of the masters.
    model: Option<TaskModel>,
    dropout: Dropout,
    dropout_on: bool,
    // How it learns.
    opt: AdamW,
    scaler: Option<LossScaler>,
    accumulated: Accumulated,
    // Switches.
    /// Whether a micro-step may take the written-out pass where it applies.
    written_out: bool,
    halt_on_non_finite: bool,
}

impl TrainStep {
    /// Trainable copies of `weights` as `settings` say, with [`AdamW`] over the named
    /// parameters. For sequence classification `weights` must hold the `score` head already
    /// (see `heads::for_sequence_classification`), and `cfg.pad_token_id` says where each
    /// padded row ends.
    pub fn new(weights: &Weights, cfg: &Gpt2Config, settings: TrainSettings) -> Result<Self> {
        let varmap = weights.to_varmap_in(settings.precision.weight_dtype())?;
        let opt = AdamW::from_varmap(&varmap, settings.adamw)?;
        Self::assemble(weights, varmap, cfg, settings, opt)
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
        let settings = TrainSettings {
            task: state.task,
            precision,
            adamw: adamw.config,
            seed: 0,
        };
        let opt = AdamW::from_state(named_vars(&varmap)?, adamw)?;
        let mut train = Self::assemble(weights, varmap, cfg, settings, opt)?;
        train.dropout.set_rng_state(&state.dropout_rng)?;
        train.set_dropout(state.dropout);
        if let Some(scaler) = &state.loss_scaler {
            train = train.with_loss_scaler(scaler.clone())?;
        }
        if train.opt.step_count() != state.optimizer_steps {
            return Err(Error::InvalidArgument(format!(
                "the checkpoint's training state counts {} optimizer steps but its optimizer state {}: \
                 the two files come from different checkpoints",
                state.optimizer_steps,
                train.opt.step_count()
            )));
        }
        Ok(train)
    }

    fn assemble(
        weights: &Weights,
        varmap: VarMap,
        cfg: &Gpt2Config,
        settings: TrainSettings,
        opt: AdamW,
    ) -> Result<Self> {
        let TrainSettings {
            task,
            precision,
            seed,
            ..
        } = settings;
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
        Ok(Self {
            cfg: cfg.clone(),
            task,
            precision,
            params: Parameters {
                varmap,
                vars,
                names,
            },
            model,
            dropout,
            dropout_on: true,
            opt,
            scaler,
            accumulated: Accumulated::default(),
            written_out: true,
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

    /// The number formats this step trains in.
    pub fn precision(&self) -> TrainPrecision {
        self.precision
    }

    /// The config of the model trained.
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

    /// The optimiser.
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// The trainable weights, by checkpoint name.
    pub fn varmap(&self) -> &VarMap {
        &self.params.varmap
    }

    /// Optimizer updates made so far (counting those before a resume).
    pub fn step_count(&self) -> usize {
        self.opt.step_count()
    }

    /// Micro-steps accumulated since the last update.
    pub fn micro_steps(&self) -> usize {
        self.accumulated.micro_steps
    }

    /// This step's own state, for a checkpoint.
    pub fn state(&self) -> Result<TrainStepState> {
        Ok(TrainStepState {
            precision: self.precision.to_string(),
            dropout: self.dropout_on,
            dropout_rng: self.dropout.rng_state()?,
            loss_scaler: self.scaler.clone(),
            optimizer_steps: self.opt.step_count(),
            task: self.task,
        })
    }

    /// The model the next forward pass runs: the one over the trainable weights, or, in mixed
    /// precision, one over half-precision casts of the masters, made now so that it sees the
    /// latest update. The casts are operations on the masters, so the backward pass carries
    /// the gradients through them into f32.
    ///
    /// This is the model *in training*: its dropout is as the step has it (on for the
    /// Trainer), so it generates differently from the same weights saved and loaded again. For
    /// inference take `Gpt2LmHeadModel::from_weights(&step.weights()?, step.config())` (dropout
    /// off), or [`LmFineTuner::model`](super::LmFineTuner::model) after a fine-tune.
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
            "this training step trains {:?}, not {wanted}: build it with the TaskHead you mean in its TrainSettings",
            self.task
        ))
    }

    fn task_model(&self) -> Result<TaskModel> {
        if let Some(model) = &self.model {
            return Ok(model.clone());
        }
        let half = self.precision.compute_dtype();
        let data = self
            .params
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

    fn non_finite(&self, what: &'static str, value: f64) -> Error {
        Error::NonFiniteLoss {
            what,
            value,
            step: self.opt.step_count() + 1,
        }
    }

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

    /// [`TrainStep::accumulate`] for one sequence of token ids held on the host, `(1, T)`: on
    /// the CPU they reach the written-out pass as they are, elsewhere they become a tensor.
    pub fn accumulate_ids(&mut self, ids: &[u32], loss_weight: f64) -> Result<f32> {
        if let Some(loss) = self.accumulate_written_out(Batch::Sequence(ids), loss_weight)? {
            return Ok(loss);
        }
        let device = self
            .params
            .vars
            .first()
            .map_or(Device::Cpu, |v| v.device().clone());
        let ids = Tensor::new(ids, &device)?.unsqueeze(0)?; // (1, T)
        let loss = self.forward(&ids)?;
        self.accumulate_loss(loss, loss_weight)
    }

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

    /// The part of a micro-step after the loss, whatever the task: backward, and the gradients
    /// added to the sum since the last update.
    fn accumulate_loss(&mut self, loss: Tensor, loss_weight: f64) -> Result<f32> {
        let value = loss.to_scalar::<f32>()?;
        let scale = self.scaler.as_ref().map_or(1.0, LossScaler::scale);
        if !value.is_finite() {
            if self.scaler.is_some() {
                self.accumulated.overflowed = true;
            } else if self.halt_on_non_finite {
                self.zero_grad();
                return Err(self.non_finite("loss", f64::from(value)));
            }
        }
        let mut grads = (loss * (loss_weight * scale))?.backward()?;
        for var in &self.params.vars {
            // Detached: candle's gradients still reference the graph that made them, and a
            // sum kept across micro-steps would keep every step's activations alive.
            let Some(g) = grads.remove(var).map(|g| g.detach()) else {
                continue;
            };
            let sum = match self.accumulated.graph.remove(var) {
                Some(acc) if crate::kernels::add_in_place(&acc, &g)? => acc,
                Some(acc) => (acc + g)?,
                None => g,
            };
            self.accumulated.graph.insert(var, sum);
        }
        self.accumulated.micro_steps += 1;
        Ok(value)
    }

    /// One optimizer update from the accumulated gradients at learning rate `lr`: unscale them
    /// (mixed f16), clip their joint norm to `max_grad_norm` if given, update, and start a new
    /// accumulation. A gradient norm that is not finite is an error and nothing is updated -
    /// in mixed f16 the update is skipped and the loss scale lowered instead.
    pub fn apply(&mut self, lr: f64, max_grad_norm: Option<f64>) -> Result<UpdateReport> {
        self.apply_at(Some(lr), max_grad_norm)
    }

    // ANCHOR: step
    /// [`TrainStep::apply`], at the optimiser's own learning rate when `lr` is `None`.
    fn apply_at(&mut self, lr: Option<f64>, max_grad_norm: Option<f64>) -> Result<UpdateReport> {
        if self.accumulated.micro_steps == 0 {
            return Err(Error::InvalidArgument(
                "no gradients to apply: call TrainStep::accumulate at least once first".into(),
            ));
        }
        if let Some(report) = self.apply_written_out(lr, max_grad_norm)? {
            return Ok(report); // the written-out sums alone, on the CPU
        }
        self.join_written_out()?;
        // The written-out pass's buffers stay in `accumulated` for the next micro-step.
        let mut grads = std::mem::take(&mut self.accumulated.graph);
        let overflowed = std::mem::take(&mut self.accumulated.overflowed);
        self.accumulated.micro_steps = 0;
        let loss_scale = self.scaler.as_ref().map(LossScaler::scale);
        if let Some(scaler) = &mut self.scaler {
            let finite = !overflowed && scaler.unscale(&mut grads, &self.params.vars)?;
            scaler.update(finite);
            if scaler.scale() < MIN_LOSS_SCALE {
                return Err(Error::LossScaleCollapsed {
                    scale: scaler.scale(),
                    step: self.opt.step_count() + 1,
                    checkpoint: None,
                });
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
            Some(max) => clip_grad_norm(&mut grads, &self.params.vars, max)?,
            None => grad_norm(&grads, &self.params.vars)?,
        };
        self.update_with(norm, lr, loss_scale, |opt| opt.step(&grads))
    }

    /// The update itself, once the gradients' norm is known (after any clipping): refused if
    /// the norm is not finite, else `step` at learning rate `lr` (the optimiser's own if none).
    fn update_with(
        &mut self,
        norm: f64,
        lr: Option<f64>,
        loss_scale: Option<f64>,
        step: impl FnOnce(&mut AdamW) -> Result<()>,
    ) -> Result<UpdateReport> {
        if !norm.is_finite() && self.halt_on_non_finite {
            return Err(self.non_finite("gradient norm", norm));
        }
        if let Some(lr) = lr {
            self.opt.set_lr(lr);
        }
        step(&mut self.opt)?;
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
        // The written-out pass's buffers stay for the next micro-step; only its sums go.
        self.accumulated.graph = GradStore::default();
        self.accumulated.written.clear();
        self.accumulated.micro_steps = 0;
        self.accumulated.overflowed = false;
    }

    /// One optimiser update from gradients of [`TrainStep::forward`]'s loss (already unscaled).
    pub fn update(&mut self, grads: &GradStore) -> Result<()> {
        self.opt.step(grads)?;
        Ok(())
    }

    /// The trained weights, in the dtype they are kept in.
    pub fn weights(&self) -> Result<Weights> {
        Weights::from_varmap(&self.params.varmap)
    }
}
