//! What the Trainer logs and where it stands: transformers' `log_history` entries and the
//! `TrainerState` saved in every checkpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::rows::Collator;
use crate::train::args::TrainingArguments;
use crate::train::resume::ScheduleChange;

/// One optimizer step of the run, as transformers' `log_history` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The optimizer step, from 1.
    pub step: usize,
    /// Epochs done, counting the batches of the one under way (0.5 halfway through the first).
    pub epoch: f64,
    /// The step's loss: the mean over its rows (and its accumulated batches).
    pub loss: f64,
    /// The learning rate the step was taken with, from the schedule.
    pub learning_rate: f64,
    /// The gradients' norm before clipping.
    pub grad_norm: f64,
}

/// One evaluation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    /// Optimizer steps done when it ran.
    pub step: usize,
    /// Epochs done when it ran, as a fraction.
    pub epoch: f64,
    /// The mean loss over the evaluation rows.
    pub eval_loss: f64,
    /// The share of rows classified right, when `compute_metrics` reports `accuracy`.
    pub eval_accuracy: Option<f64>,
}

/// What the loop tells its caller as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    /// Every `logging_steps` steps: the mean loss since the last such line.
    Train {
        /// The optimizer step just taken.
        step: usize,
        /// Epochs done, as a fraction.
        epoch: f64,
        /// The mean of the steps' losses since the last line.
        loss: f64,
        /// The last step's gradient norm, before clipping.
        grad_norm: f64,
        /// The last step's learning rate.
        learning_rate: f64,
    },
    /// An evaluation, as `eval_strategy` asks.
    Eval(EvalLog),
    /// A checkpoint written, as `save_strategy` asks: its directory.
    Saved(PathBuf),
}

/// Where a run is: what `trainer_state.json` in a checkpoint holds beside the weights and the
/// optimizer, so that a resumed run continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The run's arguments.
    pub args: TrainingArguments,
    /// How its rows are batched.
    pub collator: Collator,
    /// The classifier's number of classes.
    pub num_labels: usize,
    /// The optimizer steps of the whole run (where the learning rate reaches 0).
    pub max_steps: usize,
    /// The epoch under way, from 0, and the next batch in its order.
    pub epoch: usize,
    /// The next batch of the epoch's order, from 0.
    pub batch: usize,
    /// `floating_point_ops` summed over every training batch so far.
    pub total_flos: f64,
    /// Every optimizer step taken, in order (transformers' `log_history`, every step kept).
    pub log_history: Vec<StepLog>,
    /// Every evaluation run during training, in order.
    pub eval_history: Vec<EvalLog>,
    /// Every resume that changed the schedule, in order.
    #[serde(default)]
    pub schedule_changes: Vec<ScheduleChange>,
    pub(super) data: [u64; 3],
}
