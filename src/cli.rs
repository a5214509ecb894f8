//! The command-line flags every example shares: which model, on which device, in which dtype.

use candle_core::Device;

use crate::device::{parse_device, Precision};
use crate::source::{LoadedModel, ModelSource, DEFAULT_MODEL};
use crate::Result;

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
