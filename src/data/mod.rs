//! The data of the fine-tuning chapters, from parquet files to training sequences.
//!
//! - [`parquet`]: reading named text and integer columns of the parquet files
//!   Hugging Face stores datasets in, with the checks that turn a wrong file into a clear error.
//! - [`jokes`]: chapter 6's dataset - the Hub's `Maximofn/short-jokes-dataset`, a local file or
//!   the bundled sample - and the tutorial's text for each joke, tokenized.
//! - [`packing`]: the tutorial's packing of jokes into sequences of at most `MAX_SEQ_LEN`
//!   tokens (and the fixed recipe's, which drops nothing), and the seeded order of each epoch.
//! - [`imdb`]: chapter 7's reviews - the Hub's `stanfordnlp/imdb`, a local directory of its
//!   parquet files or the bundled sample - with their labels and the number of classes.
//! - [`collate`](mod@collate): reviews into padded batches, to `max_length` (the tutorial) or
//!   to each batch's longest row.
//! - [`hub`]: a Hub dataset's parquet files, cached in `HF_HOME` like the models.
//!
//! Reading files needs the `parquet` feature (on by default); packing and collating do not.

pub mod collate;
#[cfg(feature = "parquet")]
pub mod hub;
#[cfg(feature = "parquet")]
pub mod imdb;
#[cfg(feature = "parquet")]
pub mod jokes;
pub mod packing;
#[cfg(feature = "parquet")]
pub mod parquet;

#[cfg(feature = "parquet")]
pub use self::parquet::{
    column_names, parquet_files, read_columns, read_columns_of, ColumnKind, ColumnValues, Columns,
};
pub use collate::{check_labels, collate, tokenize_truncated, Batch, Padding};
#[cfg(feature = "parquet")]
pub use imdb::{
    bundled_imdb_dir, Imdb, ImdbSource, Split, IMDB_DATASET, IMDB_LABEL_NAMES, LABEL_COLUMN,
    TEXT_COLUMN,
};
#[cfg(feature = "parquet")]
pub use jokes::{
    bundled_jokes_path, joke_text, tokenize_jokes, Jokes, JokesSource, END_OF_TEXT, JOKES_DATASET,
    JOKE_COLUMN,
};
pub use packing::{check_max_seq_len, epoch_order, Packer, PackingMode};
