//! The jokes of chapter 6: the Hub dataset `Maximofn/short-jokes-dataset` (231,657 jokes), a
//! local parquet file, or the 283-joke sample bundled with the crate.
//!
//! Each file has the columns `ID` and `Joke`; we read `Joke`. The tutorial's dataset turns a
//! joke into the text `"JOKE: " + joke + "<|endoftext|>"` ([`joke_text`]), so the model learns
//! to start a joke after `JOKE:` and to end it with GPT-2's end-of-text token, id 50256.
//!
//! The Hub dataset goes through `hf-hub` like the models (`src/source.rs`): it is cached in
//! `HF_HOME`, found there offline, and `HF_HUB_OFFLINE=1` forbids the network.

use std::path::PathBuf;
use std::str::FromStr;

use super::hub::{hub_parquet_files, HubFiles};
use super::parquet::{parquet_files, read_columns_of, ColumnKind};
use crate::config::EOS_TOKEN_ID;
use crate::tokenizer::bundled_data_dir;
use crate::{Error, Gpt2Tokenizer, Result};

/// The tutorial's dataset on the Hub.
pub const JOKES_DATASET: &str = "Maximofn/short-jokes-dataset";
/// The column holding the jokes.
pub const JOKE_COLUMN: &str = "Joke";
/// GPT-2's end-of-text token, which ends every joke's text.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The sample shipped with the crate (283 jokes, see `data/jokes-sample/PROVENANCE.md`), under
/// [`bundled_data_dir`] (whose error this returns when the bundled files cannot be found).
pub fn bundled_jokes_path() -> Result<PathBuf> {
    Ok(bundled_data_dir()?.join("jokes-sample/jokes.parquet"))
}

/// Where the jokes come from; `"...".parse()` reads the spellings the example's `--data` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JokesSource {
    /// `hub`: [`JOKES_DATASET`] (or `hub:owner/name` for another dataset with a `Joke` column).
    Hub(String),
    /// `bundled`: the sample in `data/jokes-sample/`.
    Bundled,
    /// A `.parquet` file, or a directory of them.
    Local(PathBuf),
}

impl Default for JokesSource {
    fn default() -> Self {
        Self::Hub(JOKES_DATASET.into())
    }
}

impl FromStr for JokesSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "" => Err(Error::InvalidArgument(
                "the dataset source is empty: give `hub`, `bundled`, or a .parquet file or directory".into(),
            )),
            "hub" => Ok(Self::default()),
            "bundled" => Ok(Self::Bundled),
            _ => match s.strip_prefix("hub:") {
                Some(id) if id.split('/').count() == 2 && !id.contains(' ') => {
                    Ok(Self::Hub(id.to_string()))
                }
                Some(id) => Err(Error::InvalidArgument(format!(
                    "`hub:{id}` is not a Hub dataset id: write hub:owner/name, or just `hub` for {JOKES_DATASET}"
                ))),
                None => Ok(Self::Local(PathBuf::from(s))),
            },
        }
    }
}

/// Jokes read from parquet, with where they came from.
#[derive(Debug, Clone)]
pub struct Jokes {
    /// Where they came from, for output (`Data: ...`): the Hub id, `bundled sample (...)` or
    /// the path.
    pub origin: String,
    /// The parquet files read.
    pub files: Vec<PathBuf>,
    /// The jokes, in file order.
    pub jokes: Vec<String>,
    /// Rows skipped because their `Joke` was null or empty.
    pub skipped: usize,
}

impl std::fmt::Display for Jokes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} jokes from {}", self.jokes.len(), self.origin)?;
        if self.skipped > 0 {
            write!(f, " ({} null or empty rows skipped)", self.skipped)?;
        }
        Ok(())
    }
}

impl Jokes {
    /// Reads the jokes at `source` (for the Hub, downloading them if they are not cached).
    pub fn load(source: &JokesSource) -> Result<Self> {
        match source {
            JokesSource::Bundled => {
                let path = bundled_jokes_path()?;
                let origin = format!("bundled sample ({})", path.display());
                Self::from_files(&[path], origin)
            }
            JokesSource::Local(path) => {
                Self::from_files(&parquet_files(path)?, path.display().to_string())
            }
            JokesSource::Hub(repo) => Self::from_files(&hub_jokes_files(repo)?, repo.clone()),
        }
    }

    /// Loads `source`; if it is the Hub and the dataset cannot be had (not cached, no network),
    /// loads the bundled sample instead and returns a one-line note saying so. Meant for a
    /// default source only: data a user named should be loaded with [`Jokes::load`], so that
    /// it is what runs or an error.
    pub fn load_or_bundled(source: &JokesSource) -> Result<(Self, Option<String>)> {
        match Self::load(source) {
            Err(e @ Error::HubDataset { .. }) => {
                let note = format!("{e} - using the bundled sample of 283 jokes instead");
                Ok((Self::load(&JokesSource::Bundled)?, Some(note)))
            }
            other => other.map(|j| (j, None)),
        }
    }

    /// Reads the `Joke` column of `files`, in order; `origin` names them for output.
    pub fn from_files(files: &[PathBuf], origin: String) -> Result<Self> {
        let mut columns = read_columns_of(files, &[(JOKE_COLUMN, ColumnKind::Text)])?;
        let jokes = columns.take_text(JOKE_COLUMN)?;
        if jokes.is_empty() {
            let reason = if columns.rows_read == 0 {
                "it has no rows".to_string()
            } else {
                format!(
                    "all {} rows of `{JOKE_COLUMN}` are null or empty",
                    columns.rows_read
                )
            };
            return Err(Error::EmptyDataset { origin, reason });
        }
        Ok(Self {
            origin,
            files: columns.files,
            jokes,
            skipped: columns.skipped,
        })
    }

    /// The number of jokes.
    pub fn len(&self) -> usize {
        self.jokes.len()
    }

    /// Whether there are none (loaded jokes never are).
    pub fn is_empty(&self) -> bool {
        self.jokes.is_empty()
    }

    /// The token ids of every joke's text ([`joke_text`]), in file order.
    pub fn tokenize(&self, tokenizer: &Gpt2Tokenizer) -> Result<Vec<Vec<u32>>> {
        tokenize_jokes(tokenizer, &self.jokes)
    }
}

// ANCHOR: joke_text
/// The text the model trains on: the tutorial's `JokesDataset` item.
pub fn joke_text(joke: &str) -> String {
    format!("JOKE: {joke}{END_OF_TEXT}")
}
// ANCHOR_END: joke_text

/// Token ids of [`joke_text`] for each joke. The tokenizer must know `<|endoftext|>` as the
/// special token 50256 (GPT-2's does); otherwise the jokes would not end where the model
/// learns to stop, so that is an error.
pub fn tokenize_jokes(tokenizer: &Gpt2Tokenizer, jokes: &[String]) -> Result<Vec<Vec<u32>>> {
    if tokenizer.token_to_id(END_OF_TEXT) != Some(EOS_TOKEN_ID) {
        return Err(Error::Tokenizer(format!(
            "this tokenizer maps {END_OF_TEXT} to {:?}, not {EOS_TOKEN_ID}: use GPT-2's tokenizer (the bundled one, or the model's tokenizer.json)",
            tokenizer.token_to_id(END_OF_TEXT)
        )));
    }
    let texts: Vec<String> = jokes.iter().map(|j| joke_text(j)).collect();
    let encodings = tokenizer
        .inner()
        .encode_batch(texts, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
    if let Some(i) = ids.iter().position(|t| t.last() != Some(&EOS_TOKEN_ID)) {
        return Err(Error::Tokenizer(format!(
            "joke {i}'s text does not end with token {EOS_TOKEN_ID}: the tokenizer does not treat {END_OF_TEXT} as a special token; use GPT-2's tokenizer.json"
        )));
    }
    Ok(ids)
}

/// The parquet files of Hub dataset `repo` (every one: the jokes dataset has one split).
fn hub_jokes_files(repo: &str) -> Result<Vec<PathBuf>> {
    let files = HubFiles {
        wanted: &|_| true,
        complete: &|_| true,
        instead: "a .parquet file",
    };
    hub_parquet_files(repo, &files)
}
