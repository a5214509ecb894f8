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
//!   type, as after the tutorial's `model.half()`. Cheapest, and small updates can vanish.
//!   AdamW's moments stay f32 unless [`HalfMoments::LikeWeights`] asks for PyTorch's own
//!   rounding, where even its `eps` can vanish (see `optim.rs`).
//!
//! f16 also has a small range: gradients below 6e-8 become 0. Mixed f16 therefore multiplies
//! the loss by a large factor before the backward pass and divides the gradients by it before
//! the update, skipping the update and lowering the factor when a gradient overflowed -
//! PyTorch's `GradScaler`, here [`LossScaler`]. bf16 has f32's range and needs none of it.
//!
//! Around the step, the parts of a fine-tuning loop (chapters 6 and 7): [`LinearSchedule`]
//! (transformers' linear warm-up and decay), [`AdamW`] in PyTorch's and the tutorial's
//! transformers-4 versions, [`clip_grad_norm`], gradient accumulation
//! ([`TrainStep::accumulate`], [`TrainStep::apply`]) and checkpoints that resume exactly
//! ([`save_checkpoint`], [`load_checkpoint`]). Chapter 7 adds transformers' `Trainer` on top:
//! [`TrainingArguments`], [`Trainer`] (`train`, `evaluate`, checkpoints that resume) and what it
//! reports ([`TrainOutput`], [`EvalOutput`], accuracy, `total_flos`).
//!
//! For texts of your own, [`LmFineTuner`] is chapter 6's loop with typed
//! [`FineTuneSettings`]: give it texts (or token ids), optionally a directory for checkpoints,
//! run it, and take back a model ready for inference or save it where transformers opens it.

mod adamw;
mod args;
mod checkpoint;
mod clip;
mod history;
mod lm_finetune;
mod metrics;
mod precision;
mod progress;
mod recipe;
mod resume;
mod run_dir;
mod schedule;
mod step;
mod trainer;

pub use adamw::{decays, named_vars, AdamW, AdamWConfig, AdamWState, AdamWVariant, HalfMoments};
pub use args::{Interval, TrainingArguments};
pub use checkpoint::{
    check_checkpoint, load_checkpoint, save_checkpoint, save_checkpoint_at, Checkpoint,
    CHECKPOINT_FILES,
};
pub use clip::{clip_grad_norm, grad_norm};
pub use history::{EpochEnd, History, StepRecord};
pub use lm_finetune::{continue_prompt, DataFingerprint, FineTuneReport, LmFineTuner, LoopState};
pub use metrics::{
    accuracy, floating_point_ops, get_sentiment, num_parameters_exclude_embeddings, python_dict,
    python_float, ComputeMetrics, EvalOutput, EvalPrediction, Sentiment, TrainMetrics, TrainOutput,
};
pub use precision::{LossScaler, TrainPrecision};
pub use progress::bars_wanted;
pub use recipe::{FineTuneSettings, Recipe};
pub use resume::{ResumeChanges, ScheduleChange};
pub use run_dir::{RunDir, LOCK_FILE};
pub use schedule::LinearSchedule;
pub use step::{StepReport, TaskHead, TrainSettings, TrainStep, TrainStepState, UpdateReport};
pub use trainer::{
    latest_checkpoint, Collator, EvalLog, LabelledRows, Logged, StepLog, Trainer, TrainerState,
};
