//! The command-line flags the examples share: which model, on which device, in which dtype;
//! and for the chapters' examples that read a prompt, the prompt and `--json`.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::device::{parse_device, Precision};
use crate::source::{LoadedModel, ModelSource, DEFAULT_MODEL};
use crate::tutorial::TUTORIAL_PROMPT;
use crate::{Gpt2LmHeadModel, Gpt2Tokenizer, Result};

// ANCHOR: model_args
/// Model selection, as `--model`, `--device` and `--dtype`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A Hub id (openai-community/gpt2, gpt2-medium, gpt2-large, gpt2-xl), a directory with
    /// config.json and model.safetensors, or `bundled` for the tiny offline model [default:
    /// openai-community/gpt2, or `bundled` when that cannot be had].
    // No clap default: a model named here must never be swapped for the bundled one, so the
    // field tells a name given from the default left in place.
    #[arg(long)]
    pub model: Option<String>,
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
            model: Some("bundled".into()),
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
        let device = self.device()?;
        let dtype = self.dtype.dtype();
        if let Some(named) = &self.model {
            return LoadedModel::load(&named.parse()?, &device, dtype);
        }
        let source: ModelSource = DEFAULT_MODEL.parse()?;
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
    /// `hub` (the chapter's Hub dataset; an error when it cannot be had), `bundled` (the sample
    /// shipped with the crate), or a local path: for chapter 6 a .parquet file or a directory of
    /// them, for chapter 7 a directory holding train-*.parquet and test-*.parquet.
    #[arg(long, default_value = "bundled")]
    pub data: String,
}

impl FinetuneArgs {
    pub fn device(&self) -> Result<Device> {
        parse_device(&self.device)
    }

    /// Loads the model in f32 (see [`ModelArgs::load`]). Its default is the bundled model, so
    /// nothing falls back: a model that cannot be had is an error.
    pub fn load(&self) -> Result<LoadedModel> {
        ModelArgs {
            model: Some(self.model.clone()),
            device: self.device.clone(),
            dtype: Precision::F32,
        }
        .load()
    }
}

/// How a fine-tuning example begins: from a model's weights, or from a saved checkpoint (whose
/// model, tokenizer and settings are its own, so `--model` is not loaded).
pub enum Start {
    /// A fresh run on the model `--model` names. Boxed: a loaded model is large beside a path.
    Fresh(Box<LoadedModel>),
    /// A run continued from this checkpoint directory.
    Resume(PathBuf),
}

impl Start {
    /// `Resume(dir)` when `--resume` gave a directory, else the model `args` name, loaded.
    pub fn new(resume: Option<&Path>, args: &FinetuneArgs) -> Result<Self> {
        Ok(match resume {
            Some(dir) => Self::Resume(dir.to_path_buf()),
            None => Self::Fresh(Box::new(args.load()?)),
        })
    }

    /// A name for output: the model's, or `checkpoint DIR`.
    pub fn name(&self) -> String {
        match self {
            Self::Fresh(m) => m.name.clone(),
            Self::Resume(dir) => format!("checkpoint {}", dir.display()),
        }
    }

    /// The tokenizer the run uses: the model's, or the one saved in the checkpoint.
    pub fn tokenizer(&self) -> Result<Gpt2Tokenizer> {
        match self {
            Self::Fresh(m) => Ok(m.tokenizer.clone()),
            Self::Resume(dir) => Gpt2Tokenizer::from_file(&dir.join("tokenizer.json")),
        }
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

/// The first Ctrl-C (or SIGTERM) asks a training run to stop: the returned flag becomes true,
/// and the run saves where it stands and ends (see `LmFineTuner::stop_when`,
/// `Trainer::stop_when`). A second one stops at once, without that save, with exit status 130.
pub fn stop_on_ctrl_c() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this sequence, saving where the run stands (Ctrl-C again to quit at once)");
    })
    .map_err(|e| crate::Error::InvalidArgument(format!("cannot handle Ctrl-C: {e}")))?;
    Ok(stop)
}
