//! Training checkpoints: a directory that is at once a model transformers opens
//! (`GPT2LMHeadModel.from_pretrained(dir)`) and everything a run needs to continue exactly
//! where it stopped.
//!
//! | file | what |
//! |---|---|
//! | `model.safetensors` | the weights, Hugging Face names, in the training dtype |
//! | `config.json` | the model's config, with `torch_dtype` naming that dtype |
//! | `tokenizer.json` | the tokenizer |
//! | `optimizer.safetensors` | AdamW's moments by parameter name, its step count and config |
//! | `train_step.json` | the step's own state: precision, dropout and its generator, loss scale |
//! | `trainer_state.json` | the caller's state: step, epoch, data position, history, recipe |
//!
//! A checkpoint is written whole into a sibling `<dir>.tmp` and renamed into place, so a
//! save that fails or is interrupted never replaces the last good checkpoint. Replacing one
//! takes two renames (old aside to `<dir>.old`, new into place); an interruption between
//! them leaves the old checkpoint at `<dir>.old`, which loading points out.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::adamw::{all_finite, AdamWState};
use super::step::{TrainStep, TrainStepState};
use super::TrainPrecision;
use crate::source::write_model_files;
use crate::{Error, Gpt2Config, Gpt2Tokenizer, Result, Weights};

/// The files of a checkpoint directory.
pub const CHECKPOINT_FILES: [&str; 6] = [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "optimizer.safetensors",
    "train_step.json",
    "trainer_state.json",
];

/// A checkpoint read back by [`load_checkpoint`].
pub struct Checkpoint {
    /// The checkpoint directory it was read from.
    pub dir: PathBuf,
    /// The model's `config.json`.
    pub config: Gpt2Config,
    /// The weights in the dtype they were trained in.
    pub weights: Weights,
    /// AdamW's saved moments, step count and hyper-parameters (`optimizer.safetensors`).
    pub optimizer: AdamWState,
    /// The training step's own state (`train_step.json`): precision, dropout stream and
    /// loss scale.
    pub train_step: TrainStepState,
    /// The caller's `trainer_state.json`, as JSON (see [`Checkpoint::state`]).
    pub state: serde_json::Value,
}

impl Checkpoint {
    /// The caller's state as the type it was saved from.
    pub fn state<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.state.clone())
            .map_err(|e| bad_json(&self.dir, "trainer_state.json", e))
    }

    /// A [`TrainStep`] continuing where the saved one stopped: same weights, moments, step
    /// count, dropout stream and loss scale.
    pub fn train_step(&self) -> Result<TrainStep> {
        TrainStep::resume(
            &self.weights,
            &self.config,
            &self.train_step,
            self.optimizer.clone(),
        )
    }
}

fn bad_json(dir: &Path, file: &str, e: serde_json::Error) -> Error {
    Error::NotACheckpoint {
        dir: dir.to_path_buf(),
        missing: format!("a readable {file} is ({e})"),
        old: String::new(),
    }
}

/// `dir` with `suffix` added to its last component: `out/ckpt` → `out/ckpt.tmp`.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "checkpoint directory {} has no name of its own: name a directory such as out/checkpoint",
            dir.display()
        ))
    })?;
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(dir.with_file_name(name))
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| Error::io(path, e))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot write {}: {e}", path.display())))?;
    io(path, std::fs::write(path, text))
}

/// Writes `train`'s weights, config and optimizer, its own state `step_state` (see
/// [`save_checkpoint`]), `tokenizer` and the caller's `state` as the checkpoint directory
/// `dir`, replacing an earlier checkpoint there only once the new one is complete. A `dir` that exists but is not a checkpoint is refused,
/// so a mistyped path never deletes anything.
pub fn save_checkpoint_at(
    dir: &Path,
    train: &TrainStep,
    step_state: &TrainStepState,
    tokenizer: &Gpt2Tokenizer,
    state: &impl Serialize,
) -> Result<()> {
    if dir.exists() && !dir.join("trainer_state.json").is_file() {
        let empty = io(dir, std::fs::read_dir(dir))?.next().is_none();
        if !empty {
            return Err(Error::InvalidArgument(format!(
                "{} exists and is not a checkpoint (no trainer_state.json): refusing to replace it; choose another output directory",
                dir.display()
            )));
        }
    }
    let tmp = sibling(dir, ".tmp")?;
    if tmp.exists() {
        // What an earlier interrupted save left behind.
        io(&tmp, std::fs::remove_dir_all(&tmp))?;
    }
    io(&tmp, std::fs::create_dir_all(&tmp))?;
    let written = write_files(&tmp, train, step_state, tokenizer, state);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp); // best effort: the error matters more
        return Err(e);
    }
    if dir.exists() {
        let old = sibling(dir, ".old")?;
        if old.exists() {
            io(&old, std::fs::remove_dir_all(&old))?;
        }
        io(dir, std::fs::rename(dir, &old))?;
        io(dir, std::fs::rename(&tmp, dir))?;
        io(&old, std::fs::remove_dir_all(&old))?;
    } else {
        io(dir, std::fs::rename(&tmp, dir))?;
    }
    Ok(())
}

/// [`save_checkpoint_at`] with the step's state as it is now. (A loop stopped between two
/// optimizer steps saves the state of the last one instead, which it kept.)
pub fn save_checkpoint(
    dir: &Path,
    train: &TrainStep,
    tokenizer: &Gpt2Tokenizer,
    state: &impl Serialize,
) -> Result<()> {
    save_checkpoint_at(dir, train, &train.state()?, tokenizer, state)
}

fn write_files(
    tmp: &Path,
    train: &TrainStep,
    step_state: &TrainStepState,
    tokenizer: &Gpt2Tokenizer,
    state: &impl Serialize,
) -> Result<()> {
    write_model_files(tmp, &train.weights()?, train.config())?;
    tokenizer.save(&tmp.join("tokenizer.json"))?;
    train.optimizer().save(&tmp.join("optimizer.safetensors"))?;
    write_json(&tmp.join("train_step.json"), step_state)?;
    write_json(&tmp.join("trainer_state.json"), state)
}

/// A training loop's checkpoint: written only when every weight and AdamW moment of `train` is
/// finite (else [`Error::NonFiniteWeights`], naming `last`, the loop's last checkpoint).
pub(crate) fn save_finite_checkpoint(
    dir: &Path,
    train: &TrainStep,
    step_state: &TrainStepState,
    tokenizer: &Gpt2Tokenizer,
    state: &impl Serialize,
    last: &Option<PathBuf>,
) -> Result<()> {
    if let Some(tensor) = first_non_finite(train)? {
        return Err(Error::NonFiniteWeights {
            step: train.step_count(),
            tensor,
            checkpoint: last.clone(),
        });
    }
    save_checkpoint_at(dir, train, step_state, tokenizer, state)
}

/// A training step's error as a loop reports it: a non-finite loss or gradient, or a loss
/// scale that collapsed, with `last`, the loop's last checkpoint, which stays intact.
pub(crate) fn with_last_checkpoint(e: Error, last: &Option<PathBuf>) -> Error {
    match e {
        Error::NonFiniteLoss { what, value, step } => Error::TrainingDiverged {
            what,
            value,
            step,
            checkpoint: last.clone(),
        },
        Error::LossScaleCollapsed { scale, step, .. } => Error::LossScaleCollapsed {
            scale,
            step,
            checkpoint: last.clone(),
        },
        other => other,
    }
}

/// The first tensor of `train` - a weight, or AdamW's moments of one - holding an infinity or
/// a NaN, if any: a checkpoint is written only when there is none.
pub fn first_non_finite(train: &TrainStep) -> Result<Option<String>> {
    let weights = train.weights()?;
    for name in weights.names() {
        if let Some(t) = weights.get(&name) {
            if !all_finite(t)? {
                return Ok(Some(name));
            }
        }
    }
    let moments = train.optimizer().first_non_finite_moment()?;
    Ok(moments.map(|name| format!("AdamW's moments of {name}")))
}

/// Checks that `dir` has a checkpoint's files - cheaply, before anything is read from it -
/// with [`Error::NotACheckpoint`] naming what is missing.
pub fn check_checkpoint(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = if dir.is_dir() {
        CHECKPOINT_FILES
            .into_iter()
            .filter(|f| !dir.join(f).is_file())
            .collect()
    } else {
        vec!["the directory itself"]
    };
    if !missing.is_empty() {
        let old = sibling(dir, ".old")?;
        let old = if old.join("trainer_state.json").is_file() {
            format!(
                ". {} holds the previous checkpoint (a save was interrupted while replacing it): rename it to {} to resume from it",
                old.display(),
                dir.display()
            )
        } else {
            String::new()
        };
        return Err(Error::NotACheckpoint {
            dir: dir.to_path_buf(),
            missing: format!("{} is", missing.join(", ")),
            old,
        });
    }
    Ok(())
}

/// Reads the checkpoint directory `dir` onto `device`. A directory that lacks a checkpoint's
/// files is [`Error::NotACheckpoint`], naming what is missing.
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<Checkpoint> {
    check_checkpoint(dir)?;
    let read_json = |file: &str| -> Result<serde_json::Value> {
        let path = dir.join(file);
        let text = io(&path, std::fs::read_to_string(&path))?;
        serde_json::from_str(&text).map_err(|e| bad_json(dir, file, e))
    };
    let train_step: TrainStepState = serde_json::from_value(read_json("train_step.json")?)
        .map_err(|e| bad_json(dir, "train_step.json", e))?;
    let dtype = TrainPrecision::parse(&train_step.precision)?.weight_dtype();
    let config = Gpt2Config::from_file(&dir.join("config.json"))?;
    let weights = Weights::load(&dir.join("model.safetensors"), &config, device, dtype)?;
    let optimizer = AdamWState::load(&dir.join("optimizer.safetensors"), device)?;
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        config,
        weights,
        optimizer,
        train_step,
        state: read_json("trainer_state.json")?,
    })
}
