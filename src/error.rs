//! The library's one error type.
//!
//! Every variant names what went wrong *and* what the reader can do about it, because most of
//! these errors are met by someone running an example for the first time.

use std::path::PathBuf;

/// Everything that can go wrong in `gpt2_tutorial`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model directory given as a path does not exist; holds the path as given.
    #[error("model directory {0} does not exist: pass a directory holding config.json and model.safetensors, a Hub id such as openai-community/gpt2, or `bundled`")]
    MissingModelDir(PathBuf),

    /// A file a model or checkpoint directory needs (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, ...) is not there.
    #[error("{path} is missing: a model directory needs config.json and model.safetensors (write one with `save_pretrained` in transformers, or with `Weights::save` and `Gpt2Config::to_json` here)")]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
    },

    /// Reading or writing a file failed; the message adds advice for a full disk.
    #[error("cannot read or write {path}: {source}{}", io_advice(source))]
    Io {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A `config.json` that cannot be parsed, or whose values fail
    /// [`Gpt2Config::validate`](crate::Gpt2Config::validate).
    #[error("{path} is not a valid config.json: {reason}")]
    BadConfig {
        /// The `config.json` read.
        path: PathBuf,
        /// serde_json's error, or the failed check.
        reason: String,
    },

    /// A [`Gpt2Config`](crate::Gpt2Config) whose numbers make no GPT-2 (say, `n_embd` not
    /// divisible by `n_head`, or an unsupported activation); the message says which.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A `model.safetensors` that cannot be read as safetensors.
    #[error("{path} is not a readable safetensors file ({reason}); it may be truncated or corrupt: download or save it again")]
    CorruptWeights {
        /// The weights file.
        path: PathBuf,
        /// What the safetensors reader reported.
        reason: String,
    },

    /// A tensor the config or a head needs is missing from the weights, or has another shape;
    /// the message names the tensor.
    #[error("weights do not match the config: {0}")]
    WeightMismatch(String),

    /// A model could not be fetched from the Hugging Face Hub (nor found in its local cache).
    #[error("Hub model {repo} is not available: {reason}")]
    Hub {
        /// The Hub id, such as `openai-community/gpt2`.
        repo: String,
        /// What went wrong: not cached while offline or unreachable, or a failed download.
        reason: String,
    },

    /// The `tokenizers` crate failed to load `tokenizer.json` or to encode or decode; holds its
    /// message.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// A forward pass or generation was given zero tokens.
    #[error("the prompt is empty: give at least one token of text")]
    EmptyPrompt,

    /// More tokens than the model has positions for (`n_positions`, 1024 for GPT-2): the
    /// learned position embeddings `wpe` have no row past it.
    #[error("the input has {len} tokens but the model's context (n_positions) is {max}: shorten the prompt or lower the token budget")]
    ContextOverflow {
        /// The tokens asked for: the prompt (with any cached past), or the length
        /// generation would reach.
        len: usize,
        /// The model's `n_positions`.
        max: usize,
    },

    /// An argument out of its range that has no variant of its own; the message says which and why.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Generation's `max_length`, which counts the prompt as in transformers, leaves no room for
    /// a new token.
    #[error("max_length {max_length} leaves no room after the {prompt_len}-token prompt: max_length counts the prompt, so raise it above {prompt_len} or set max_new_tokens instead")]
    MaxLengthTooShort {
        /// The total length generation would stop at.
        max_length: usize,
        /// The prompt's length in tokens.
        prompt_len: usize,
    },

    /// A nucleus-sampling `top_p` outside `(0, 1]`; holds the value given.
    #[error("top_p {0} is outside (0, 1]: 1 keeps every token, smaller values keep only the most likely tokens whose probabilities add up to top_p")]
    InvalidTopP(f64),

    /// A sampling temperature that is not a finite number above 0; holds the value given.
    #[error("temperature {0} must be a finite number above 0: it divides the logits; for the limit of 0 use greedy decoding (no sampling), and 1 samples the model's own distribution")]
    InvalidTemperature(f64),

    /// Labels passed to a loss whose shape does not fit the logits.
    #[error("labels have shape {labels:?} but {expected:?} is needed: {what}")]
    LabelShape {
        /// The labels' shape.
        labels: Vec<usize>,
        /// The shape the loss needs, such as `(B, T)` or `(B)`.
        expected: Vec<usize>,
        /// Which labels these are and what they should be.
        what: &'static str,
    },

    /// A classification head or loss with `num_labels` 0.
    #[error("num_labels is 0: a classification head needs at least one class per output (the tutorial uses 5); set num_labels")]
    NoLabels,

    /// `num_labels` 1, which transformers treats as regression (`problem_type` "regression",
    /// an MSE loss); only classification is implemented here.
    #[error("num_labels is 1, which transformers treats as regression (a mean-squared-error loss) and this crate does not implement: use 2 labels for a yes/no task")]
    RegressionUnsupported,

    /// Sequence classification of a batch of several rows without a `pad_token_id`: the head reads
    /// each row's last non-pad token, as transformers' `GPT2ForSequenceClassification` does.
    #[error("a batch of {batch} sequences needs a pad token id to find where each one ends: set pad_token_id in the config (GPT-2 has none; the usual choice is its end-of-text token 50256), or classify one sequence at a time")]
    NoPadToken {
        /// The number of rows in the batch.
        batch: usize,
    },

    // Training (`src/train/`).
    /// A training step's loss or gradient norm came out NaN or infinite; the weights were
    /// not updated.
    #[error("the {what} is not finite ({value}) at optimizer step {step}: training stopped before updating the weights; lower the learning rate, train in f32 or mixed precision if this is pure f16 (whose largest number is 65504), or check this step's data")]
    NonFiniteLoss {
        /// What was not finite: "loss", "gradient norm", ...
        what: &'static str,
        /// The value found: NaN or ±infinity.
        value: f64,
        /// The 1-based number of the optimizer step being computed.
        step: usize,
    },

    /// [`Error::NonFiniteLoss`] as a training loop reports it, with the last checkpoint it wrote.
    #[error("training stopped at optimizer step {step}: the {what} is {value}, so the weights were not updated; {}. Usual causes: a learning rate too high (lower it), pure f16 overflowing 65504 (train in bf16, or in mixed precision with f32 master weights), or bad data", last_checkpoint(.checkpoint))]
    TrainingDiverged {
        /// What was not finite: "loss", "gradient norm", ...
        what: &'static str,
        /// The value found: NaN or ±infinity.
        value: f64,
        /// The 1-based number of the optimizer step that was not applied.
        step: usize,
        /// The last checkpoint written before the step, intact.
        checkpoint: Option<PathBuf>,
    },

    /// An optimizer step left a weight or an AdamW moment infinite or NaN (an update too large
    /// for the number format), found when its checkpoint was about to be written: that
    /// checkpoint is not written, so no saved checkpoint ever holds such weights.
    #[error("training stopped after optimizer step {step}: it left {tensor} infinite or NaN, so no checkpoint was written for it; {}. Usual causes: a learning rate too high (lower it), pure f16 overflowing 65504 (train in bf16, or in mixed precision with f32 master weights)", last_checkpoint(.checkpoint))]
    NonFiniteWeights {
        /// The optimizer step whose update it was (1-based).
        step: usize,
        /// The first tensor found not finite: a weight's name, or `AdamW's moments of NAME`.
        tensor: String,
        /// The last checkpoint written before it, intact and finite.
        checkpoint: Option<PathBuf>,
    },

    /// Another run holds the output folder: two runs writing checkpoints into one folder
    /// would replace each other's.
    #[error("{} is in use by another run{}: wait for it to end, or write to another folder", .dir.display(), .pid.map(|p| format!(" (process {p})")).unwrap_or_default())]
    OutputInUse {
        /// The output folder.
        dir: PathBuf,
        /// The process id the other run wrote into the lock file, when it could be read.
        pid: Option<u32>,
    },

    /// A fresh run was pointed at a folder that holds another run's checkpoints or history.
    #[error("{} holds another run's files ({}): continue that run from its last checkpoint (resume), write to another folder, or overwrite, which removes those files first", .dir.display(), .found.join(", "))]
    OutputHoldsAnotherRun {
        /// The output folder.
        dir: PathBuf,
        /// What is there: checkpoint folders and history files, by name.
        found: Vec<String>,
    },

    /// A directory passed to resume from lacks a checkpoint's files, or one of its JSON files
    /// cannot be read.
    #[error("{dir} is not a training checkpoint: {missing} missing. A checkpoint directory holds model.safetensors, config.json, tokenizer.json, optimizer.safetensors, train_step.json and trainer_state.json; pass one written by `save_checkpoint` (in the output directory of a training run){old}")]
    NotACheckpoint {
        /// The directory given.
        dir: PathBuf,
        /// What is missing or unreadable, worded to precede "missing" in the message.
        missing: String,
        /// A note about a `.old` sibling left by an interrupted save, or empty.
        old: String,
    },

    /// Saved AdamW state (`optimizer.safetensors`) that cannot be read, or whose moments do not
    /// match the model's parameters.
    #[error("{path}: optimizer state does not fit: {reason}. Resume from the checkpoint that holds it, with the same model and precision")]
    OptimizerState {
        /// The optimizer state file.
        path: PathBuf,
        /// What does not fit: a missing or misshapen moment, a bad header, ...
        reason: String,
    },

    /// Dynamic loss scaling for f16 halved its scale below 1 without finding finite gradients
    /// (PyTorch's `GradScaler` would keep skipping steps).
    #[error("training stopped at optimizer step {step}: the f16 gradients overflow at every loss scale down to {scale}, so the weights were not updated; {}. Train in mixed-bf16 or f32, or lower the learning rate", last_checkpoint(.checkpoint))]
    LossScaleCollapsed {
        /// The last scale tried.
        scale: f64,
        /// The 1-based number of the optimizer step that was not applied.
        step: usize,
        /// The last checkpoint written before it (filled in by the training loops).
        checkpoint: Option<PathBuf>,
    },

    /// Any other problem with a dataset; the message says what.
    #[error("dataset error: {0}")]
    Dataset(String),

    // The data of the fine-tuning chapters (`src/data/`).
    /// A dataset path that is neither a file nor a directory.
    #[error("data file {path} does not exist: pass a .parquet file or a directory of them, `hub` for the Hub dataset, or `bundled` for the sample shipped with the crate")]
    MissingDataFile {
        /// The path given.
        path: PathBuf,
    },

    /// A dataset directory with no `.parquet` file anywhere below it.
    #[error("{path} holds no .parquet files: pass a .parquet file or a directory of them (such as a dataset's data/ folder), `hub`, or `bundled`")]
    NoParquetFiles {
        /// The directory searched.
        path: PathBuf,
    },

    /// A file the `parquet` crate cannot read: not parquet, truncated, or corrupt.
    #[error("{path} is not a readable parquet file ({reason}): it may be truncated, corrupt or not parquet at all; download it again, or write it with pandas' `to_parquet` or pyarrow")]
    BadParquet {
        /// The file read.
        path: PathBuf,
        /// The `parquet` crate's error.
        reason: String,
    },

    /// A parquet file without a column the dataset needs (the jokes' `Joke`, IMDB's `text` and
    /// `label`).
    #[error("{path} has no column `{column}`: its columns are {}; pass a file with a `{column}` column", available.join(", "))]
    MissingColumn {
        /// The file read.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The file's top-level column names.
        available: Vec<String>,
    },

    /// A parquet column of the wrong type: integers where text is needed, a list, ...
    #[error("column `{column}` of {path} holds {found}, but {expected} are needed: pass a file whose `{column}` column holds {expected}")]
    ColumnType {
        /// The file read.
        path: PathBuf,
        /// The column.
        column: String,
        /// What the column holds, in words ("integers", "lists of values", ...).
        found: String,
        /// What is needed: "strings" or "integers".
        expected: &'static str,
    },

    /// A parquet column compressed with a codec this build does not read (only uncompressed and
    /// snappy are).
    #[error("column `{column}` of {path} is compressed with {codec}, which this crate does not read (it reads uncompressed and snappy parquet, the default of pandas, pyarrow and Hugging Face datasets): rewrite it with compression=\"snappy\"")]
    UnsupportedCompression {
        /// The file read.
        path: PathBuf,
        /// The column.
        column: String,
        /// The codec's name: "gzip", "zstd", ...
        codec: String,
    },

    /// A dataset, split or file with no usable rows.
    #[error("the dataset {origin} is empty ({reason}): pass a parquet file with at least one non-empty row")]
    EmptyDataset {
        /// Where the rows came from: a path, a Hub id, "the train split", ...
        origin: String,
        /// Why nothing is left: no rows, every row null or empty, no file for the split, ...
        reason: String,
    },

    /// Packing for training with a `max_seq_len` below every text's length in tokens, so no
    /// sequence can be made.
    #[error("max_seq_len {max_seq_len} is shorter than every text (the shortest has {shortest} tokens), so no training sequence can be made: raise max_seq_len to at least {shortest}")]
    SeqLenTooShort {
        /// The longest training sequence allowed, in tokens.
        max_seq_len: usize,
        /// The shortest text's length, in tokens.
        shortest: usize,
    },

    /// A dataset could not be fetched from the Hugging Face Hub (nor found complete in its local
    /// cache).
    #[error("Hub dataset {repo} is not available: {reason}")]
    HubDataset {
        /// The dataset's Hub id.
        repo: String,
        /// What went wrong: not cached while offline or unreachable, no parquet file
        /// wanted in the repo, or a failed listing or download.
        reason: String,
    },

    // Chapter 7's classification data and Trainer (`src/data/imdb.rs`, `src/train/trainer.rs`).
    /// A class label outside `0..num_labels`.
    #[error("label {label} in row {row} of the {split} split is not a class of a {num_labels}-way classifier (labels must be 0 to {}): check the label column, or load the model with more labels", num_labels.saturating_sub(1))]
    LabelOutOfRange {
        /// The split it is in: "train", "test", ...
        split: String,
        /// The 0-based row of the first bad label.
        row: usize,
        /// The label found.
        label: i64,
        /// The classifier's number of classes.
        num_labels: usize,
    },

    /// A size or count that must be at least 1 is 0 (a batch size, the number of epochs, the
    /// `k` of top-k, ...).
    #[error("{what} is 0: {why}")]
    ZeroSize {
        /// The setting that is 0, by its name: `per_device_train_batch_size`, `max_length`, ...
        what: &'static str,
        /// Why it must not be 0, with a usual value where there is one.
        why: &'static str,
    },

    /// Drawing an SVG figure failed; holds the plotting library's message.
    #[error("plot error: {0}")]
    Plot(String),

    /// A candle error that is a device out of memory, with advice on what to make smaller.
    #[error("the device ran out of memory ({0}): lower the batch size or max_length (chapter 7's longest-row padding pads a batch only to its longest row), or max_seq_len in chapter 6; train a smaller model; or train in bf16 or mixed precision. On a GPU this crate's training keeps every activation of the step, more than PyTorch does (see the performance page)")]
    OutOfMemory(candle_core::Error),

    /// Any other error from candle: a shape mismatch, a failed kernel, ...
    #[error(transparent)]
    Candle(candle_core::Error),

    /// The crate's bundled files (the `data/` folder: the tiny model, GPT-2's tokenizer, the
    /// samples) are in none of the places looked at; a binary copied away from its source
    /// tree meets this.
    #[error("the bundled files (the crate's data/ folder, holding tiny-gpt2/ and gpt2-tokenizer/) are not in {}: set the environment variable GPT2_TUTORIAL_DATA to that folder, or put it beside the executable as data/", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", nor "))]
    BundledDataMissing {
        /// Where they were looked for, in order: `GPT2_TUTORIAL_DATA` when set, else the
        /// source tree the crate was built from and `data/` beside the executable.
        tried: Vec<PathBuf>,
    },
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
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
            " - the disk is full: free some space, or write to another directory; a file being \
             written is only renamed into place once complete, so what was saved before is intact"
        }
        _ => "",
    }
}

/// The part of [`Error::TrainingDiverged`]'s message about what is saved.
fn last_checkpoint(dir: &Option<PathBuf>) -> String {
    match dir {
        Some(dir) => format!(
            "the last good checkpoint is {}: resume from it with a lower learning rate",
            dir.display()
        ),
        None => {
            "no checkpoint had been written yet (save_steps N writes one every N optimizer steps)"
                .into()
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
            text.contains("ran out of memory") && text.contains("batch size"),
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
                && text.contains("another directory"),
            "{text}"
        );
        let missing =
            Error::io("x", std::io::Error::from(std::io::ErrorKind::NotFound)).to_string();
        assert!(!missing.contains("disk is full"), "{missing}");
    }
}
