//! Chapter 7's `Trainer`: transformers' training loop for `GPT2ForSequenceClassification`, on
//! the [`TrainStep`] of chapter 6. `train()` runs epochs of shuffled, padded batches - forward,
//! loss, backward, clipping, AdamW, the learning rate decayed linearly to 0 - evaluates and saves
//! checkpoints as the [`TrainingArguments`] say, and returns transformers' `TrainOutput`;
//! `evaluate()` returns the loss and `compute_metrics`' accuracy on the evaluation rows.
//!
//! The loop's whole position is data ([`TrainerState`]: epoch, next batch, flos, history), saved
//! with the weights and the optimizer in each `checkpoint-N/`, so a resumed run continues with
//! the same batches, dropout masks and losses.

mod rows;
mod state;
mod stopping;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};

use super::args::{Interval, TrainingArguments};
use super::checkpoint::load_checkpoint;
use super::metrics::{
    accuracy, floating_point_ops, num_parameters_exclude_embeddings, round_to, ComputeMetrics,
    EvalOutput, EvalPrediction, TrainMetrics, TrainOutput,
};
use super::progress::EpochBar;
use super::run_dir::RunDir;
use super::schedule::LinearSchedule;
use super::step::{TaskHead, TrainSettings, TrainStep};
use super::TrainPrecision;
use crate::data::epoch_order;
use crate::dropout::Dropout;
use crate::heads::Gpt2ForSequenceClassification;
use crate::loss::sequence_classification_loss;
use crate::{Error, Gpt2Config, Gpt2Tokenizer, Result, Weights};

pub use rows::{Collator, LabelledRows};
pub use state::{EvalLog, Logged, StepLog, TrainerState};

/// transformers' `Trainer` for `GPT2ForSequenceClassification`.
pub struct Trainer<'a> {
    /// The model, optimizer and precision being trained: what one optimizer step updates. Its
    /// model is the one in training (dropout on); for inference take [`Trainer::model`].
    pub train_step: TrainStep,
    state: TrainerState,
    train_data: &'a LabelledRows,
    eval_data: Option<&'a LabelledRows>,
    compute_metrics: Option<ComputeMetrics>,
    schedule: LinearSchedule,
    non_embedding_parameters: usize,
    tokenizer: Gpt2Tokenizer,
    device: Device,
    /// The output folder, once taken (by [`Trainer::set_output`] or the first save).
    out: Option<RunDir>,
    /// The checkpoint this run was resumed from: its folder may hold the run's own files.
    resumed_from: Option<PathBuf>,
    /// The last checkpoint written or resumed from: the one a divergence leaves intact.
    last_checkpoint: Option<PathBuf>,
    /// Set (by a Ctrl-C handler, say) to stop the run at the next batch.
    stop: Option<Arc<AtomicBool>>,
    /// Whether the last `train` was stopped before its end.
    interrupted: bool,
}

impl<'a> Trainer<'a> {
    /// A fresh run of `args` on `weights` (which hold the `score` head, see
    /// `heads::for_sequence_classification`; `cfg.pad_token_id` must be the collator's).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weights: &Weights,
        cfg: &Gpt2Config,
        num_labels: usize,
        args: TrainingArguments,
        collator: Collator,
        train_data: &'a LabelledRows,
        eval_data: Option<&'a LabelledRows>,
        tokenizer: &Gpt2Tokenizer,
    ) -> Result<Self> {
        args.validate()?;
        if cfg.pad_token_id != Some(collator.pad_token_id) {
            return Err(Error::InvalidArgument(format!(
                "the model's pad_token_id is {:?} but batches are padded with {}: set config.pad_token_id = {1} (the tutorial's `model.config.pad_token_id = model.config.eos_token_id`)",
                cfg.pad_token_id, collator.pad_token_id
            )));
        }
        check_rows("train", train_data, num_labels)?;
        if let Some(eval) = eval_data {
            check_rows("test", eval, num_labels)?;
        }
        let settings = TrainSettings {
            task: TaskHead::SequenceClassification { num_labels },
            precision: args.train_precision()?,
            adamw: args.adamw(),
            seed: args.seed,
        };
        let mut train_step = TrainStep::new(weights, cfg, settings)?;
        train_step.set_dropout(args.dropout);
        let state = TrainerState {
            max_steps: args.total_steps(train_data.len()),
            args,
            collator,
            num_labels,
            epoch: 0,
            batch: 0,
            total_flos: 0.0,
            log_history: Vec::new(),
            eval_history: Vec::new(),
            schedule_changes: Vec::new(),
            data: train_data.fingerprint(),
        };
        Self::assemble(train_step, state, train_data, eval_data, tokenizer.clone())
    }

    /// Continues the run saved in checkpoint `dir` (`trainer.train(resume_from_checkpoint=dir)`),
    /// on the same training rows.
    pub fn resume(
        dir: &Path,
        train_data: &'a LabelledRows,
        eval_data: Option<&'a LabelledRows>,
        device: &Device,
    ) -> Result<Self> {
        let checkpoint = load_checkpoint(dir, device)?;
        let state: TrainerState = checkpoint.state()?;
        if state.data != train_data.fingerprint() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} was trained on other rows ({} rows, {} tokens) than these ({} rows, {} tokens): resume with the same rows, tokenized to the same max_length",
                dir.display(),
                state.data[0],
                state.data[1],
                train_data.len(),
                train_data.fingerprint()[1],
            )));
        }
        let train_step = checkpoint.train_step()?;
        let tokenizer = Gpt2Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let mut trainer = Self::assemble(train_step, state, train_data, eval_data, tokenizer)?;
        trainer.resumed_from = Some(dir.to_path_buf());
        trainer.last_checkpoint = Some(dir.to_path_buf());
        Ok(trainer)
    }

    fn assemble(
        train_step: TrainStep,
        state: TrainerState,
        train_data: &'a LabelledRows,
        eval_data: Option<&'a LabelledRows>,
        tokenizer: Gpt2Tokenizer,
    ) -> Result<Self> {
        let wants_eval = state.args.eval_strategy != Interval::No;
        if wants_eval && eval_data.is_none_or(LabelledRows::is_empty) {
            return Err(Error::InvalidArgument(
                "eval_strategy evaluates during training, but no evaluation rows were given: pass them, or set eval_strategy to Interval::No".into(),
            ));
        }
        let non_embedding_parameters =
            num_parameters_exclude_embeddings(train_step.config(), state.num_labels)?;
        let device = train_step.weights()?.device().clone();
        Ok(Self {
            schedule: state.args.schedule(state.max_steps),
            train_step,
            state,
            train_data,
            eval_data,
            compute_metrics: Some(accuracy),
            non_embedding_parameters,
            tokenizer,
            out: None,
            resumed_from: None,
            last_checkpoint: None,
            stop: None,
            interrupted: false,
            device,
        })
    }

    /// Replaces `compute_metrics` (accuracy by default; `None` reports the loss only).
    pub fn set_compute_metrics(&mut self, f: Option<ComputeMetrics>) {
        self.compute_metrics = f;
    }

    /// Where the run is: epoch, batch, flos and history.
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The learning rate of every optimizer step of the run.
    pub fn schedule(&self) -> &LinearSchedule {
        &self.schedule
    }

    /// Where checkpoints go from now on, and whether to draw bars: a resumed run takes both
    /// from its command line, not from the checkpoint's arguments. Without it, the first
    /// save takes `output_dir` of the arguments (see [`RunDir`]).
    pub fn set_output(&mut self, out: RunDir, progress_bars: bool) {
        self.state.args.output_dir = out.path().to_path_buf();
        self.state.args.progress_bars = progress_bars;
        self.out = Some(out);
    }

    /// The directory of the checkpoint after optimizer step `step`.
    pub fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.state
            .args
            .output_dir
            .join(format!("checkpoint-{step}"))
    }

    /// Epochs done, as a fraction: transformers' `state.epoch`.
    fn epoch_float(&self) -> f64 {
        let batches = self.batches_per_epoch();
        self.state.epoch as f64 + self.state.batch as f64 / batches as f64
    }

    fn batches_per_epoch(&self) -> usize {
        let bs = self.state.args.per_device_train_batch_size;
        self.train_data.len().div_ceil(bs)
    }

    /// [`Trainer::train_with`], without watching.
    pub fn train(&mut self) -> Result<TrainOutput> {
        self.train_with(&mut |_| {})
    }

    // ANCHOR: train
    /// Trains to `max_steps` (or the end of the last epoch), calling `on_log` with the logged
    /// losses, evaluations and saves as they happen.
    pub fn train_with(&mut self, on_log: &mut dyn FnMut(&Logged)) -> Result<TrainOutput> {
        let started = Instant::now();
        let args = self.state.args.clone();
        let (n, bs) = (self.train_data.len(), args.per_device_train_batch_size);
        let batches = self.batches_per_epoch();
        let mut since_log: Vec<StepLog> = Vec::new();
        let mut at_step = self.at_step()?;
        self.interrupted = false;
        // With max_steps, one bar over the steps (an epoch's would jump to its end there).
        let done = self.train_step.step_count();
        let mut steps_bar = args
            .max_steps
            .map(|max| EpochBar::steps(max, done, args.progress_bars));
        'run: while self.train_step.step_count() < self.state.max_steps {
            let order = epoch_order(n, args.seed, self.state.epoch as u64, args.shuffle);
            let epochs = args.num_train_epochs.max(self.state.epoch + 1);
            let epoch = self.state.epoch;
            let mut epoch_bar = steps_bar
                .is_none()
                .then(|| EpochBar::new(epoch, epochs, n as u64, "samples", args.progress_bars));
            let bar = epoch_bar.as_mut().or(steps_bar.as_mut()).expect("a bar");
            while self.state.batch < batches && self.train_step.step_count() < self.state.max_steps
            {
                // One optimizer step: the next `gradient_accumulation_steps` batches (fewer at
                // the end of an epoch), their gradients averaged.
                let end = (self.state.batch + args.gradient_accumulation_steps).min(batches);
                let weight = 1.0 / (end - self.state.batch) as f64;
                let mut loss = 0.0;
                for b in self.state.batch..end {
                    if self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                        self.interrupted = true;
                        break 'run;
                    }
                    let picked = &order[b * bs..((b + 1) * bs).min(n)];
                    let batch = self
                        .state
                        .collator
                        .batch(self.train_data, picked, &self.device)?;
                    let micro = self.train_step.accumulate_labelled(
                        &batch.input_ids,
                        Some(&batch.attention_mask),
                        &batch.labels,
                        weight,
                    );
                    loss += weight * f64::from(micro.map_err(|e| self.explain(e))?);
                    self.state.total_flos +=
                        floating_point_ops(self.non_embedding_parameters, batch.tokens);
                }
                self.state.batch = end;
                let lr = self.schedule.lr(self.train_step.step_count());
                let update = self
                    .train_step
                    .apply(lr, args.max_grad_norm)
                    .map_err(|e| self.explain(e))?;
                let step = self.train_step.step_count();
                bar.set_position(match args.max_steps {
                    Some(_) => step as u64,
                    None => (end * bs).min(n) as u64,
                });
                // An update mixed f16's loss scaling skipped (an overflow) is not a step: it is
                // neither counted nor logged, as with PyTorch's GradScaler.
                if let (true, Some(grad_norm)) = (update.applied, update.grad_norm) {
                    let log = StepLog {
                        step,
                        epoch: self.epoch_float(),
                        loss,
                        learning_rate: lr,
                        grad_norm,
                    };
                    self.state.log_history.push(log);
                    since_log.push(log);
                    bar.show(loss, lr);
                    if step.is_multiple_of(args.logging_steps) {
                        bar.suspend(|| on_log(&mean_log(&since_log)));
                        since_log.clear();
                    }
                }
                if self.state.batch == batches {
                    self.state.epoch += 1;
                    self.state.batch = 0;
                }
                let epoch_end = self.state.batch == 0;
                if due(args.eval_strategy, step, epoch_end) {
                    let eval = self.evaluate()?;
                    let record = self.eval_log(&eval);
                    bar.suspend(|| on_log(&Logged::Eval(record)));
                }
                let last = step == self.state.max_steps;
                if step > 0 && due(args.save_strategy, step, epoch_end)
                    || (last && args.save_strategy != Interval::No)
                {
                    let saved = Logged::Saved(self.save()?);
                    bar.suspend(|| on_log(&saved));
                }
                at_step = self.at_step()?;
                if epoch_end {
                    break; // the next epoch draws its own order
                }
            }
            if let Some(bar) = epoch_bar {
                bar.finish();
            }
        }
        if let Some(bar) = steps_bar {
            bar.finish();
        }
        if self.interrupted {
            self.stopped(at_step)?;
        }
        Ok(self.train_output(started.elapsed().as_secs_f64()))
    }
    // ANCHOR_END: train

    fn eval_log(&mut self, eval: &EvalOutput) -> EvalLog {
        let record = EvalLog {
            step: self.train_step.step_count(),
            epoch: eval.epoch,
            eval_loss: eval.eval_loss,
            eval_accuracy: eval.accuracy(),
        };
        self.state.eval_history.push(record.clone());
        record
    }

    fn train_output(&self, runtime: f64) -> TrainOutput {
        let args = &self.state.args;
        let history = &self.state.log_history;
        let training_loss =
            history.iter().map(|l| l.loss).sum::<f64>() / history.len().max(1) as f64;
        // transformers' count: rows × epochs, or max_steps full batches when max_steps is set.
        let samples = match args.max_steps {
            Some(steps) => {
                steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
            }
            None => self.train_data.len() * args.num_train_epochs,
        };
        let runtime = runtime.max(1e-9);
        TrainOutput {
            global_step: self.train_step.step_count(),
            training_loss,
            metrics: TrainMetrics {
                train_runtime: round_to(runtime, 4),
                train_samples_per_second: round_to(samples as f64 / runtime, 3),
                train_steps_per_second: round_to(self.state.max_steps as f64 / runtime, 3),
                total_flos: self.state.total_flos,
                train_loss: training_loss,
                epoch: self.epoch_float(),
            },
        }
    }

    /// The trained model for inference: the current weights, dropout off.
    pub fn model(&self) -> Result<Gpt2ForSequenceClassification> {
        let weights = self.train_step.weights()?;
        let cfg = self.train_step.config();
        let mut model = Gpt2ForSequenceClassification::load(
            weights.var_builder(),
            cfg,
            self.state.num_labels,
            &Dropout::seeded(0),
        )?;
        model.set_training(false);
        Ok(model)
    }

    /// Every row's logits and the mean loss over the rows, in batches of
    /// `per_device_eval_batch_size`, dropout off, in file order (transformers' `predict`).
    pub fn predict(&self, data: &LabelledRows) -> Result<(EvalPrediction, f64)> {
        // f32 on the CPU: the written-out forward pass, which skips the padding; elsewhere
        // the model's own.
        let written_out = self.train_step.takes_written_out_pass()
            && self.train_step.precision() == TrainPrecision::F32;
        let mut model = None;
        let bs = self.state.args.per_device_eval_batch_size;
        let (mut logits, mut loss_sum) = (Vec::with_capacity(data.len()), 0.0);
        let all: Vec<usize> = (0..data.len()).collect();
        for picked in all.chunks(bs) {
            let batch = self.state.collator.batch(data, picked, &self.device)?;
            let (ids, mask) = (&batch.input_ids, Some(&batch.attention_mask));
            let fast = match written_out {
                true => self.train_step.classify_written_out(ids, mask)?,
                false => None,
            };
            let out = match fast {
                Some(out) => out,
                None => {
                    let m = match model.take() {
                        Some(m) => m,
                        None => self.model()?,
                    };
                    model.insert(m).forward(ids, mask)?
                }
            }; // (B, num_labels)
            let out = out.to_dtype(DType::F32)?;
            let loss = sequence_classification_loss(&out, &batch.labels)?;
            // The batch's mean, weighted by its rows: a mean over all rows in the end.
            loss_sum += f64::from(loss.to_scalar::<f32>()?) * picked.len() as f64;
            logits.extend(out.to_vec2::<f32>()?);
        }
        let prediction = EvalPrediction {
            logits,
            labels: data.labels.clone(),
        };
        Ok((prediction, loss_sum / data.len().max(1) as f64))
    }

    /// `trainer.evaluate()` on the evaluation rows given at construction.
    pub fn evaluate(&self) -> Result<EvalOutput> {
        let data = self.eval_data.ok_or_else(|| {
            Error::InvalidArgument(
                "evaluate() needs evaluation rows: pass them to Trainer::new".into(),
            )
        })?;
        self.evaluate_on(data)
    }

    /// `trainer.evaluate(eval_dataset=data)`.
    pub fn evaluate_on(&self, data: &LabelledRows) -> Result<EvalOutput> {
        check_rows("evaluation", data, self.state.num_labels)?;
        let started = Instant::now();
        let (prediction, eval_loss) = self.predict(data)?;
        let metrics = self
            .compute_metrics
            .map(|f| f(&prediction))
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (format!("eval_{k}"), v))
            .collect();
        let runtime = started.elapsed().as_secs_f64().max(1e-9);
        let steps = data
            .len()
            .div_ceil(self.state.args.per_device_eval_batch_size);
        Ok(EvalOutput {
            eval_loss,
            metrics,
            eval_runtime: round_to(runtime, 4),
            eval_samples_per_second: round_to(data.len() as f64 / runtime, 3),
            eval_steps_per_second: round_to(steps as f64 / runtime, 3),
            epoch: self.epoch_float(),
        })
    }
}

/// Whether an interval strategy asks for its action after `step`.
fn due(interval: Interval, step: usize, epoch_end: bool) -> bool {
    match interval {
        Interval::No => false,
        Interval::Epoch => epoch_end,
        Interval::Steps(n) => step.is_multiple_of(n),
    }
}

/// The logged line for the steps since the last one: their mean loss, the last step's rest.
fn mean_log(steps: &[StepLog]) -> Logged {
    let last = steps[steps.len() - 1];
    Logged::Train {
        step: last.step,
        epoch: last.epoch,
        loss: steps.iter().map(|s| s.loss).sum::<f64>() / steps.len() as f64,
        grad_norm: last.grad_norm,
        learning_rate: last.learning_rate,
    }
}

/// A split the Trainer can use: some rows, one label per row, every label a class.
fn check_rows(split: &str, data: &LabelledRows, num_labels: usize) -> Result<()> {
    if data.is_empty() {
        return Err(Error::EmptyDataset {
            origin: format!("the {split} split"),
            reason: "it has no rows".into(),
        });
    }
    if data.ids.len() != data.labels.len() {
        return Err(Error::InvalidArgument(format!(
            "the {split} split has {} rows of tokens but {} labels",
            data.ids.len(),
            data.labels.len()
        )));
    }
    crate::data::check_labels(split, &data.labels, num_labels)
}

/// The checkpoint of `output_dir` with the highest step (`get_last_checkpoint`), if any.
pub fn latest_checkpoint(output_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(output_dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then_some((step, e.path()))
        })
        .max_by_key(|(step, _)| *step)
        .map(|(_, path)| path)
}
