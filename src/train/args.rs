//! transformers' `TrainingArguments`, the part of them chapter 7's tutorial uses: the numbers of
//! a fine-tune in one value, with transformers' defaults for everything the tutorial leaves
//! out, and the step arithmetic they imply.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::adamw::{AdamWConfig, HalfMoments};
use super::precision::TrainPrecision;
use super::schedule::LinearSchedule;
use crate::{Error, Result};

/// When to evaluate or save: never, at the end of every epoch, or every N optimizer steps
/// (transformers' `IntervalStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Never (`"no"`).
    No,
    /// At the end of every epoch (`"epoch"`).
    Epoch,
    /// Every this many optimizer steps (`"steps"` with `eval_steps`/`save_steps` N).
    Steps(usize),
}

impl std::str::FromStr for Interval {
    type Err = Error;

    /// `no`, `epoch`, or a number of optimizer steps (as transformers' `"steps"` with that
    /// many `eval_steps`/`save_steps`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "no" => Ok(Self::No),
            "epoch" => Ok(Self::Epoch),
            _ => match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Self::Steps(n)),
                _ => Err(Error::InvalidArgument(format!(
                    "interval {s:?}: expected no, epoch or a number of steps above 0"
                ))),
            },
        }
    }
}

/// What a [`Trainer`](super::Trainer) run does. [`TrainingArguments::tutorial`] gives the
/// tutorial's values; what it does not set has transformers' default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingArguments {
    /// Where the checkpoints (`checkpoint-N/`) go.
    pub output_dir: PathBuf,
    /// Let a fresh run replace another run's checkpoints and history in `output_dir`
    /// (transformers' `overwrite_output_dir`); otherwise such a folder is refused.
    #[serde(default)]
    pub overwrite_output_dir: bool,
    /// The peak learning rate, reached at once (no warm-up) and decayed linearly to 0.
    pub learning_rate: f64,
    /// Rows per training batch (one device here, so the whole batch).
    pub per_device_train_batch_size: usize,
    /// Rows per batch when evaluating; larger than training's, as no gradients are kept.
    pub per_device_eval_batch_size: usize,
    /// Passes over the training rows, unless `max_steps` is given.
    pub num_train_epochs: usize,
    /// AdamW's decoupled weight decay, on every parameter but biases and LayerNorm weights.
    pub weight_decay: f64,
    /// Warm-up steps before the decay (transformers' default: 0).
    pub warmup_steps: usize,
    /// Clip the gradients' global norm to this (transformers' default: 1.0).
    pub max_grad_norm: Option<f64>,
    /// AdamW's decay rate of the first moment, the gradients' running mean: 0.9.
    pub adam_beta1: f64,
    /// AdamW's decay rate of the second moment, the squared gradients' running mean: 0.999.
    pub adam_beta2: f64,
    /// Added to the square root of the second moment before dividing by it: 1e-8.
    pub adam_epsilon: f64,
    /// Seeds the shuffling, dropout and nothing else (the new `score` is drawn at loading).
    pub seed: u64,
    /// Print the mean training loss every this many optimizer steps (every step is recorded).
    pub logging_steps: usize,
    /// When to evaluate on the evaluation rows during training (the tutorial: every epoch).
    pub eval_strategy: Interval,
    /// When to write a `checkpoint-N/` (the tutorial: every epoch); unless it is
    /// [`Interval::No`], the last step is saved too.
    pub save_strategy: Interval,
    /// Stop after this many optimizer steps, overriding `num_train_epochs`.
    pub max_steps: Option<usize>,
    /// Batches whose gradients make one optimizer step (averaged).
    pub gradient_accumulation_steps: usize,
    /// `f32`, `mixed-f16`, `mixed-bf16` (`fp16=True`/`bf16=True`), `f16`/`bf16` (pure half,
    /// the tutorial's `model.half()`).
    pub precision: String,
    /// Shuffle the training rows each epoch (transformers' `RandomSampler`), seeded.
    pub shuffle: bool,
    /// Dropout during training (PyTorch's `model.train()`); off only to compare with a
    /// reference run without it.
    pub dropout: bool,
    /// Progress bars (transformers' tqdm, `disable_tqdm=False`).
    pub progress_bars: bool,
}

impl TrainingArguments {
    /// The tutorial's `TrainingArguments(output_dir, learning_rate=2e-5,
    /// per_device_train_batch_size=16, per_device_eval_batch_size=64, num_train_epochs=3,
    /// weight_decay=0.01)`, evaluating and saving every epoch, and transformers' defaults:
    /// AdamW (torch, eps 1e-8), linear decay without warm-up, clipping at 1.0, seed 42,
    /// logging every 500 steps.
    pub fn tutorial(output_dir: impl Into<PathBuf>) -> Self {
        Self {
            output_dir: output_dir.into(),
            overwrite_output_dir: false,
            learning_rate: 2e-5,
            per_device_train_batch_size: 16,
            per_device_eval_batch_size: 64,
            num_train_epochs: 3,
            weight_decay: 0.01,
            warmup_steps: 0,
            max_grad_norm: Some(1.0),
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            seed: 42,
            logging_steps: 500,
            eval_strategy: Interval::Epoch,
            save_strategy: Interval::Epoch,
            max_steps: None,
            gradient_accumulation_steps: 1,
            precision: TrainPrecision::F32.to_string(),
            shuffle: true,
            dropout: true,
            progress_bars: false,
        }
    }

    /// Checks the numbers make a run.
    pub fn validate(&self) -> Result<()> {
        let zero = |what, why| Err(Error::ZeroSize { what, why });
        if self.per_device_train_batch_size == 0 {
            return zero(
                "per_device_train_batch_size",
                "a batch needs at least one row; the tutorial uses 16",
            );
        }
        if self.per_device_eval_batch_size == 0 {
            return zero(
                "per_device_eval_batch_size",
                "an evaluation batch needs at least one row; the tutorial uses 64",
            );
        }
        if self.num_train_epochs == 0 && self.max_steps.is_none() {
            return zero(
                "num_train_epochs",
                "train for at least one epoch, or give max_steps",
            );
        }
        if self.max_steps == Some(0) {
            return zero("max_steps", "nothing would be trained");
        }
        if self.gradient_accumulation_steps == 0 {
            return zero(
                "gradient_accumulation_steps",
                "an optimizer step needs at least one batch",
            );
        }
        if self.logging_steps == 0 {
            return zero("logging_steps", "log every N >= 1 optimizer steps");
        }
        for s in [self.eval_strategy, self.save_strategy] {
            if s == Interval::Steps(0) {
                return zero("an interval of steps", "give N >= 1 steps");
            }
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "learning_rate {}: a learning rate is a finite number >= 0",
                self.learning_rate
            )));
        }
        self.train_precision().map(|_| ())
    }

    /// `precision` parsed; an unknown name is an error.
    pub fn train_precision(&self) -> Result<TrainPrecision> {
        TrainPrecision::parse(&self.precision)
    }

    /// Optimizer steps per epoch over `rows` training rows: the batches (the last one may be
    /// short, `dataloader_drop_last=False`), grouped by `gradient_accumulation_steps` with a
    /// short last group - transformers' `num_update_steps_per_epoch`.
    pub fn steps_per_epoch(&self, rows: usize) -> usize {
        let batches = rows.div_ceil(self.per_device_train_batch_size.max(1));
        batches
            .div_ceil(self.gradient_accumulation_steps.max(1))
            .max(1)
    }

    /// The run's optimizer steps: `max_steps` if given, else epochs × steps per epoch (the
    /// tutorial's 25,000 rows in batches of 16 for 3 epochs: 1,563 × 3 = 4,689).
    pub fn total_steps(&self, rows: usize) -> usize {
        self.max_steps
            .unwrap_or(self.num_train_epochs * self.steps_per_epoch(rows))
    }

    /// The learning rate of every step: linear warm-up over `warmup_steps`, then linear decay
    /// to 0 at the last step (`lr_scheduler_type="linear"`, transformers' default).
    pub fn schedule(&self, total_steps: usize) -> LinearSchedule {
        LinearSchedule::new(self.learning_rate, self.warmup_steps, Some(total_steps))
    }

    /// `adamw_torch` with these arguments' betas, eps and weight decay, computed as PyTorch
    /// computes it on the model it is given: on a `.half()` model (`precision` `f16`/`bf16`)
    /// its moments are half too (`zeros_like(param)`) and every operation rounds to half - so
    /// in f16 `eps` 1e-8, below f16's smallest subnormal (2^-24, 5.96e-8), adds nothing.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
            half_moments: HalfMoments::LikeWeights,
            ..AdamWConfig::torch(self.learning_rate)
        }
    }
}
