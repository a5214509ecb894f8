//! What a [`TrainStep`](super::TrainStep) is made from: the model class it trains, its
//! settings, and its own state in a checkpoint.

use serde::{Deserialize, Serialize};

use crate::dropout::DropoutRngState;
use crate::train::adamw::AdamWConfig;
use crate::train::precision::{LossScaler, TrainPrecision};

/// Which model class a `TrainStep` trains, and so which loss it computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskHead {
    /// `GPT2LMHeadModel`: the shifted language-modelling loss of the ids themselves.
    #[default]
    LanguageModel,
    /// `GPT2ForSequenceClassification` with this many labels: the cross-entropy of the logits
    /// at each row's last non-pad token against the row's label.
    SequenceClassification {
        /// The number of classes (transformers' `num_labels`).
        num_labels: usize,
    },
}

/// How to make a [`TrainStep`](super::TrainStep): the model class it trains, the precision, the optimiser and
/// the seed of its dropout masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSettings {
    /// The model class trained, and so its loss.
    pub task: TaskHead,
    /// The number formats of weights, activations and gradients.
    pub precision: TrainPrecision,
    /// The optimiser (its learning rate is set again at each [`apply`](super::TrainStep::apply)).
    pub adamw: AdamWConfig,
    /// Seeds the generator every dropout layer draws its masks from.
    pub seed: u64,
}

impl TrainSettings {
    /// A language model (`GPT2LMHeadModel`, chapter 6) trained in `precision` with `adamw`,
    /// dropout seeded with 0.
    pub fn new(precision: TrainPrecision, adamw: AdamWConfig) -> Self {
        Self {
            task: TaskHead::LanguageModel,
            precision,
            adamw,
            seed: 0,
        }
    }

    /// The same settings for another model class.
    pub fn task(self, task: TaskHead) -> Self {
        Self { task, ..self }
    }

    /// The same settings with another dropout seed.
    pub fn seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }
}

/// A training step's own state beyond weights and optimiser, for checkpoints: with it a resumed
/// run draws the same dropout masks and scales its loss as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStepState {
    /// [`TrainPrecision`] as written by its `Display` (`f32`, `mixed-bf16`, `f16`, ...).
    pub precision: String,
    /// Whether dropout was on (the Trainer's `model.train()`; the tutorial's jokes loop has it
    /// off).
    pub dropout: bool,
    /// Where the dropout masks' generator stands, so the next mask is the one an
    /// uninterrupted run would draw.
    pub dropout_rng: DropoutRngState,
    /// Mixed f16's loss scaler, with its scale and count of good steps.
    pub loss_scaler: Option<LossScaler>,
    /// Optimizer steps taken (checked against the optimizer's own count on resume).
    pub optimizer_steps: usize,
    /// The model class trained (checkpoints written before chapter 7 lack it: LM).
    #[serde(default)]
    pub task: TaskHead,
}
