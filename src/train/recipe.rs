//! The settings of a causal-LM fine-tune, and chapter 6's two recipes for them: the tutorial's
//! jokes loop, choice for choice, and one that fixes what it gets wrong. Either fine-tunes any
//! texts, not only jokes.

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::adamw::AdamWConfig;
use super::precision::TrainPrecision;
use super::schedule::LinearSchedule;
use crate::data::PackingMode;
use crate::generation::GenerationConfig;
use crate::{Error, Result};

/// Which recipe a run follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// Every choice of the tutorial's loop.
    Tutorial,
    /// Nothing dropped, gradients averaged, warm-up then decay, clipping, f32 master weights.
    Fixed,
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tutorial => "tutorial",
            Self::Fixed => "fixed",
        })
    }
}

/// Everything a causal-LM fine-tune ([`LmFineTuner`](super::LmFineTuner)) is run with.
/// [`FineTuneSettings::tutorial`] and [`FineTuneSettings::fixed`] give each recipe's values;
/// change the fields you want with struct update syntax (`..FineTuneSettings::fixed()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTuneSettings {
    /// The recipe these settings started from (reported, and the default of the precision rule
    /// in [`FineTuneSettings::set_dtype`]).
    pub recipe: Recipe,
    /// Passes over the texts.
    pub epochs: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// Warm-up steps: `None` means a tenth of the run's optimizer steps (fixed recipe).
    pub warmup: Option<usize>,
    /// Sequences per optimizer step (the tutorial's `BATCH_SIZE`).
    pub accumulate: usize,
    /// The longest packed sequence, in tokens (the tutorial's `MAX_SEQ_LEN`).
    pub max_seq_len: usize,
    /// How jokes are packed into sequences.
    pub packing: PackingMode,
    /// Divide each sequence's loss by `accumulate` (a mean over the step) or not (a sum).
    pub average_gradients: bool,
    /// Decay the learning rate linearly to 0 at the last step, or only warm up
    /// (transformers' `num_training_steps=-1`).
    pub decay: bool,
    /// Clip the gradients' global norm to this.
    pub max_grad_norm: Option<f64>,
    /// The optimiser, its learning rate set from `lr` and the schedule each step.
    pub adamw: AdamWConfig,
    /// The number formats of training (in JSON by name: `f32`, `mixed-bf16`, `f16`, ...).
    pub precision: TrainPrecision,
    /// Dropout during training (PyTorch's `model.train()`) or not (eval mode). A checkpoint
    /// saved before this setting existed trained with dropout on, and reads as such.
    #[serde(default = "dropout_was_on")]
    pub dropout: bool,
    /// Shuffle the jokes each epoch (the tutorial's `DataLoader(shuffle=True)`).
    pub shuffle: bool,
    /// Seeds the shuffling and dropout.
    pub seed: u64,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Save a checkpoint every this many optimizer steps (and always at the end).
    pub save_steps: Option<usize>,
}

fn dropout_was_on() -> bool {
    true
}

impl FineTuneSettings {
    /// The tutorial's loop: lr 3e-6 warming up over 5,000 steps and never decaying, 32
    /// sequences of up to 500 tokens per step with their gradients summed, the tutorial's
    /// packing, transformers 4's `AdamW` (eps 1e-6), 5 epochs, no clipping; pure f16 (its
    /// `model.half()`: f16 weights, gradients and AdamW moments) and dropout off (its model
    /// comes from `from_pretrained` in eval mode, and its loop never calls `model.train()`).
    pub fn tutorial() -> Self {
        Self {
            recipe: Recipe::Tutorial,
            epochs: 5,
            lr: 3e-6,
            warmup: Some(5000),
            accumulate: 32,
            max_seq_len: 500,
            packing: PackingMode::Tutorial,
            average_gradients: false,
            decay: false,
            max_grad_norm: None,
            adamw: AdamWConfig::tutorial(3e-6),
            precision: TrainPrecision::Pure(DType::F16),
            dropout: false,
            shuffle: true,
            seed: 42,
            max_steps: None,
            save_steps: None,
        }
    }

    /// The loop that works: every token trained, gradients averaged over 8 sequences of up to
    /// 128 tokens, lr 1e-4 warming up over a tenth of the steps and decaying to 0, gradient
    /// norm clipped at 1.0, PyTorch's `AdamW` (eps 1e-8), f32, dropout on. Dropout stays on as
    /// in every `Trainer` fine-tune (`model.train()`) and in GPT-2's own training: at lr 1e-4,
    /// five passes over a few hundred jokes would otherwise let the model learn them by heart
    /// sooner.
    pub fn fixed() -> Self {
        Self {
            recipe: Recipe::Fixed,
            epochs: 5,
            lr: 1e-4,
            warmup: None,
            accumulate: 8,
            max_seq_len: 128,
            packing: PackingMode::Full,
            average_gradients: true,
            decay: true,
            max_grad_norm: Some(1.0),
            adamw: AdamWConfig::torch(1e-4),
            precision: TrainPrecision::F32,
            dropout: true,
            shuffle: true,
            seed: 42,
            max_steps: None,
            save_steps: None,
        }
    }

    /// The settings of `recipe`.
    pub fn for_recipe(recipe: Recipe) -> Self {
        match recipe {
            Recipe::Tutorial => Self::tutorial(),
            Recipe::Fixed => Self::fixed(),
        }
    }

    /// Sets the precision from a dtype's name as the recipe reads it: `f32`; `f16`/`bf16` mean
    /// pure half precision in the tutorial's recipe (its `model.half()`) and mixed precision
    /// with f32 master weights in the fixed one; `mixed-f16`/`mixed-bf16` ask for mixed
    /// precision in either.
    pub fn set_dtype(&mut self, dtype: &str) -> Result<()> {
        self.precision = match (self.recipe, TrainPrecision::parse(dtype)?) {
            (Recipe::Fixed, TrainPrecision::Pure(half)) => TrainPrecision::Mixed(half),
            (_, precision) => precision,
        };
        Ok(())
    }

    /// Checks the numbers make a run; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.epochs == 0 {
            return bad("epochs is 0: train for at least one epoch".into());
        }
        if self.accumulate == 0 {
            return bad("accumulate is 0: an optimizer step needs at least one sequence".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!(
                "lr is {}: a learning rate is a finite number >= 0",
                self.lr
            ));
        }
        if self.max_steps == Some(0) {
            return bad("max_steps is Some(0): nothing would be trained".into());
        }
        if self.save_steps == Some(0) {
            return bad(
                "save_steps is Some(0): give the number of optimizer steps between checkpoints"
                    .into(),
            );
        }
        match self.precision {
            TrainPrecision::Mixed(d) | TrainPrecision::Pure(d)
                if !matches!(d, DType::F16 | DType::BF16) =>
            {
                bad(format!(
                    "precision is {}: the half type is f16 or bf16",
                    self.precision
                ))
            }
            _ => Ok(()),
        }
    }

    /// How the example continues its prompts once trained. The tutorial's recipe: its
    /// `model.generate(**inputs)` with the defaults - greedy, `max_length` 20 counting the
    /// prompt, stopping at `<|endoftext|>`, padding with it. The fixed recipe samples 40 new
    /// tokens with top-p 0.8 from a generator seeded with `seed`, for texts that vary.
    pub fn generation(&self) -> GenerationConfig {
        match self.recipe {
            Recipe::Tutorial => GenerationConfig::default(),
            Recipe::Fixed => GenerationConfig {
                max_new_tokens: Some(40),
                top_p: 0.8,
                seed: self.seed,
                ..GenerationConfig::sampling()
            },
        }
    }

    /// The schedule for a run of `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: usize) -> LinearSchedule {
        let warmup = self.warmup.unwrap_or(total_steps.div_ceil(10));
        let total = self.decay.then_some(total_steps);
        LinearSchedule::new(self.lr, warmup, total)
    }

    /// One line saying what a run of `total_steps` optimizer steps does.
    pub fn describe(&self, total_steps: usize) -> String {
        let schedule = self.schedule(total_steps);
        let decay = if self.decay {
            format!("then linear decay to 0 at step {total_steps}")
        } else {
            "no decay (num_training_steps=-1)".into()
        };
        let grads = if self.average_gradients {
            "averaged"
        } else {
            "summed"
        };
        let clip = self.max_grad_norm.map_or("no clipping".into(), |c| {
            format!("gradient norm clipped at {c}")
        });
        let adamw = match self.adamw.variant {
            super::adamw::AdamWVariant::Torch => "torch.optim.AdamW",
            super::adamw::AdamWVariant::Transformers4 => "transformers 4's AdamW",
        };
        let dropout = if self.dropout {
            "dropout on"
        } else {
            "dropout off"
        };
        format!(
            "{} recipe: lr {:e} warming up over {} steps, {decay}; {} sequences of up to {} tokens per optimizer step, gradients {grads}; {clip}; {adamw} (eps {:e}, weight decay {}); {}, {dropout}; {} epochs, {total_steps} optimizer steps",
            self.recipe,
            self.lr,
            schedule.warmup_steps,
            self.accumulate,
            self.max_seq_len,
            self.adamw.eps,
            self.adamw.weight_decay,
            self.precision,
            self.epochs,
        )
    }
}
