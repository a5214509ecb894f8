//! The library's one error type.
//!
//! Every variant names what went wrong *and* what the reader can do about it, because most of
//! these errors are met by someone running an example for the first time.

use std::path::PathBuf;

/// Everything that can go wrong in `gpt2_tutorial`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model directory {0} does not exist: pass a directory holding config.json and model.safetensors, a Hub id such as openai-community/gpt2, or `bundled`")]
    MissingModelDir(PathBuf),

    #[error("{path} is missing: a model directory needs config.json and model.safetensors (save one with `save_pretrained` in transformers or `Gpt2::save` here)")]
    MissingFile { path: PathBuf },

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid config.json: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error("{path} is not a readable safetensors file ({reason}); it may be truncated or corrupt: download or save it again")]
    CorruptWeights { path: PathBuf, reason: String },

    #[error("weights do not match the config: {0}")]
    WeightMismatch(String),

    #[error("Hub model {repo} is not available: {reason}")]
    Hub { repo: String, reason: String },

    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    #[error("the prompt is empty: give at least one token of text")]
    EmptyPrompt,

    #[error("the input has {len} tokens but the model's context (n_positions) is {max}: shorten the prompt or lower the token budget")]
    ContextOverflow { len: usize, max: usize },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("max_length {max_length} leaves no room after the {prompt_len}-token prompt: max_length counts the prompt, so raise it above {prompt_len} or set max_new_tokens instead")]
    MaxLengthTooShort {
        max_length: usize,
        prompt_len: usize,
    },

    #[error("top_p {0} is outside (0, 1]: 1 keeps every token, smaller values keep only the most likely tokens whose probabilities add up to top_p")]
    InvalidTopP(f64),

    #[error("temperature {0} must be a finite number above 0: it divides the logits; for the limit of 0 use greedy decoding (no sampling), and 1 samples the model's own distribution")]
    InvalidTemperature(f64),

    #[error("labels have shape {labels:?} but {expected:?} is needed: {what}")]
    LabelShape {
        labels: Vec<usize>,
        expected: Vec<usize>,
        what: &'static str,
    },

    #[error("num_labels is 0: a classification head needs at least one class per output (the tutorial uses 5); set num_labels")]
    NoLabels,

    #[error("num_labels is 1, which transformers treats as regression (a mean-squared-error loss) and this crate does not implement: use 2 labels for a yes/no task")]
    RegressionUnsupported,

    #[error("a batch of {batch} sequences needs a pad token id to find where each one ends: set pad_token_id in the config (GPT-2 has none; the usual choice is its end-of-text token 50256), or classify one sequence at a time")]
    NoPadToken { batch: usize },

    #[error("the loss is not finite ({0}): lower the learning rate or check the data")]
    NonFiniteLoss(f32),

    #[error("f16 gradients overflow at every loss scale down to {0}: train in mixed-bf16 or f32, or lower the learning rate")]
    LossScaleCollapsed(f64),

    #[error("dataset error: {0}")]
    Dataset(String),

    #[error("plot error: {0}")]
    Plot(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
