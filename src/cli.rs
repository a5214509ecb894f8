//! The command-line flags the examples share: which model, on which device, in which dtype;
//! and for the chapters' examples that read a prompt, the prompt and `--json`.

use candle_core::Device;

use crate::device::{parse_device, Precision};
use crate::source::{LoadedModel, ModelSource, DEFAULT_MODEL};
use crate::tutorial::TUTORIAL_PROMPT;
use crate::{Gpt2LmHeadModel, Result};

// ANCHOR: model_args
/// Model selection, as `--model`, `--device` and `--dtype`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A Hub id (openai-community/gpt2, gpt2-medium, gpt2-large, gpt2-xl), a directory with
    /// config.json and model.safetensors, or `bundled` for the tiny offline model.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Where to run: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Precision of the weights and activations.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
}
// ANCHOR_END: model_args

impl ModelArgs {
    /// Arguments for the bundled model on the CPU (what the tests use).
    pub fn bundled() -> Self {
        Self {
            model: "bundled".into(),
            device: "cpu".into(),
            dtype: Precision::F32,
        }
    }

    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    /// Loads the chosen model. The default model, when it cannot be had (not cached, no
    /// network), falls back to the bundled one, and the one-line reason goes to stderr so that
    /// `--json` output stays clean; a model asked for by name is loaded or is an error, never
    /// silently replaced. Large freed buffers are kept for reuse from here on
    /// ([`crate::memory::reuse_freed_buffers`]).
    pub fn load(&self) -> Result<LoadedModel> {
        crate::memory::reuse_freed_buffers();
        let source: ModelSource = self.model.parse()?;
        let device = self.device()?;
        let dtype = self.dtype.dtype();
        if self.model != DEFAULT_MODEL {
            return LoadedModel::load(&source, &device, dtype);
        }
        let (model, note) = LoadedModel::load_or_bundled(&source, &device, dtype)?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        Ok(model)
    }
}

/// The model and data flags of the fine-tuning examples: the bundled model and sample by default
/// (a fine-tune is long; the real ones are asked for by name), weights loaded in f32 (the
/// training precision has a flag of its own).
#[derive(clap::Args, Debug, Clone)]
pub struct FinetuneArgs {
    /// A Hub id (openai-community/gpt2 ... gpt2-xl), a model directory, or `bundled`.
    #[arg(long, default_value = "bundled")]
    pub model: String,
    /// Where to run: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// `hub` (the chapter's Hub dataset), a local .parquet file or directory, or `bundled`.
    #[arg(long, default_value = "bundled")]
    pub data: String,
}

impl FinetuneArgs {
    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    /// Loads the model in f32 (see [`ModelArgs::load`]).
    pub fn load(&self) -> Result<LoadedModel> {
        ModelArgs {
            model: self.model.clone(),
            device: self.device.clone(),
            dtype: Precision::F32,
        }
        .load()
    }
}

/// The flags of the chapters' examples that run a model on a prompt: the model, the prompt and
/// `--json`.
#[derive(Debug, Clone, clap::Args)]
pub struct PromptArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text the model reads.
    #[arg(long, default_value = TUTORIAL_PROMPT)]
    pub prompt: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl PromptArgs {
    /// Loads the chosen model ([`ModelArgs::load`]) and builds `GPT2LMHeadModel` on it.
    pub fn load_lm(&self) -> Result<(LoadedModel, Gpt2LmHeadModel)> {
        let loaded = self.model.load()?;
        let lm = Gpt2LmHeadModel::from_weights(&loaded.weights, &loaded.config)?;
        Ok((loaded, lm))
    }
}

/// The data of a `load_or_bundled`, its note (why the bundled sample stands in) printed on
/// stderr so that `--json` output stays clean.
pub fn noted<T>((data, note): (T, Option<String>)) -> T {
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    data
}
