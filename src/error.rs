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

    #[error("{path} is missing: a model directory needs config.json and model.safetensors (write one with `save_pretrained` in transformers, or with `Weights::save` and `Gpt2Config::to_json` here)")]
    MissingFile { path: PathBuf },

    #[error("cannot read or write {path}: {source}{}", io_advice(source))]
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

    // Training (`src/train/`).
    #[error("the {what} is not finite ({value}) at optimizer step {step}: training stopped before updating the weights, so the last checkpoint is still good: lower the learning rate, train in f32 or mixed precision if this is pure f16 (whose largest number is 65504), or check this step's data")]
    NonFiniteLoss {
        /// What was not finite: "loss", "gradient norm", ...
        what: &'static str,
        value: f64,
        /// The 1-based number of the optimizer step being computed.
        step: usize,
    },

    #[error("training stopped at optimizer step {step}: the {what} is {value}, so the weights were not updated; {}. Usual causes: a learning rate too high (lower --lr), pure f16 overflowing 65504 (use --dtype bf16, or the fixed recipe's f32 master weights), or bad data", last_checkpoint(.checkpoint))]
    TrainingDiverged {
        what: &'static str,
        value: f64,
        step: usize,
        /// The last checkpoint written before the step, intact.
        checkpoint: Option<PathBuf>,
    },

    #[error("{dir} is not a training checkpoint: {missing} missing. A checkpoint directory holds model.safetensors, config.json, tokenizer.json, optimizer.safetensors, train_step.json and trainer_state.json; pass one written by `save_checkpoint` (--out of a training run){old}")]
    NotACheckpoint {
        dir: PathBuf,
        missing: String,
        /// A note about a `.old` sibling left by an interrupted save, or empty.
        old: String,
    },

    #[error("{path}: optimizer state does not fit: {reason}. Resume from the checkpoint that holds it, with the same model and precision")]
    OptimizerState { path: PathBuf, reason: String },

    #[error("f16 gradients overflow at every loss scale down to {0}: train in mixed-bf16 or f32, or lower the learning rate")]
    LossScaleCollapsed(f64),

    #[error("dataset error: {0}")]
    Dataset(String),

    // The data of the fine-tuning chapters (`src/data/`).
    #[error("data file {path} does not exist: pass a .parquet file or a directory of them, `hub` for the Hub dataset, or `bundled` for the sample shipped with the crate")]
    MissingDataFile { path: PathBuf },

    #[error("{path} holds no .parquet files: pass a .parquet file or a directory of them (such as a dataset's data/ folder), `hub`, or `bundled`")]
    NoParquetFiles { path: PathBuf },

    #[error("{path} is not a readable parquet file ({reason}): it may be truncated, corrupt or not parquet at all; download it again, or write it with pandas' `to_parquet` or pyarrow")]
    BadParquet { path: PathBuf, reason: String },

    #[error("{path} has no column `{column}`: its columns are {}; pass a file with a `{column}` column", available.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: Vec<String>,
    },

    #[error("column `{column}` of {path} holds {found}, but {expected} are needed: pass a file whose `{column}` column holds {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: String,
        expected: &'static str,
    },

    #[error("column `{column}` of {path} is compressed with {codec}, which this crate does not read (it reads uncompressed and snappy parquet, the default of pandas, pyarrow and Hugging Face datasets): rewrite it with compression=\"snappy\"")]
    UnsupportedCompression {
        path: PathBuf,
        column: String,
        codec: String,
    },

    #[error("the dataset {origin} is empty ({reason}): pass a parquet file with at least one non-empty row")]
    EmptyDataset { origin: String, reason: String },

    #[error("max_seq_len {max_seq_len} is shorter than every text (the shortest has {shortest} tokens), so no training sequence can be made: raise --max-seq-len to at least {shortest}")]
    SeqLenTooShort { max_seq_len: usize, shortest: usize },

    #[error("Hub dataset {repo} is not available: {reason}")]
    HubDataset { repo: String, reason: String },

    // Chapter 7's classification data and Trainer (`src/data/imdb.rs`, `src/train/trainer.rs`).
    #[error("label {label} in row {row} of the {split} split is not a class of a {num_labels}-way classifier (labels must be 0 to {}): check the label column, or load the model with more labels", num_labels.saturating_sub(1))]
    LabelOutOfRange {
        split: String,
        row: usize,
        label: i64,
        num_labels: usize,
    },

    #[error("{what} is 0: {why}")]
    ZeroSize {
        what: &'static str,
        why: &'static str,
    },

    #[error("plot error: {0}")]
    Plot(String),

    #[error("the device ran out of memory ({0}): lower --batch-size or --max-length (chapter 7's --padding longest pads a batch only to its longest row), or --max-seq-len in chapter 6; train a smaller model; or train in bf16 or mixed precision. On a GPU this crate's training keeps every activation of the step, more than PyTorch does (see the performance page)")]
    OutOfMemory(candle_core::Error),

    #[error(transparent)]
    Candle(candle_core::Error),
}

/// candle reports a GPU that has run out of memory as a driver error deep inside whichever
/// operation asked for the memory; as such it says nothing about what to change.
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        if e.to_string().contains("OUT_OF_MEMORY") {
            Error::OutOfMemory(e)
        } else {
            Error::Candle(e)
        }
    }
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

/// What to do about an I/O error where there is something to say: a full disk (a checkpoint
/// of gpt2-xl with its optimizer state is about 9 GB in bf16).
fn io_advice(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => {
            " - the disk is full: free some space, or write elsewhere (--out); a file being \
             written is only renamed into place once complete, so what was saved before is intact"
        }
        _ => "",
    }
}

/// The part of [`Error::TrainingDiverged`]'s message about what is saved.
fn last_checkpoint(dir: &Option<PathBuf>) -> String {
    match dir {
        Some(dir) => format!(
            "the last good checkpoint is {} (continue with --resume {0} and a lower --lr)",
            dir.display()
        ),
        None => {
            "no checkpoint had been written yet (--save-steps N writes one every N steps)".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_out_of_memory_says_what_to_change() {
        // What candle 0.11 prints for cudarc's error (seen on an H200: benchmarks/gpu-2026-11-26-h200).
        let cuda = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = Error::from(cuda);
        assert!(matches!(e, Error::OutOfMemory(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("ran out of memory") && text.contains("--batch-size"),
            "{text}"
        );
        let other = Error::from(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(other, Error::Candle(_)), "{other:?}");
    }

    #[test]
    fn a_full_disk_says_what_to_do() {
        let full = Error::io(
            "out/optimizer.safetensors.tmp",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        let text = full.to_string();
        assert!(
            text.starts_with("cannot read or write out/optimizer.safetensors.tmp")
                && text.contains("the disk is full")
                && text.contains("--out"),
            "{text}"
        );
        let missing =
            Error::io("x", std::io::Error::from(std::io::ErrorKind::NotFound)).to_string();
        assert!(!missing.contains("disk is full"), "{missing}");
    }
}
