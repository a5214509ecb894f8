//! The reviews of chapter 7: the Hub dataset `stanfordnlp/imdb` (25,000 training and 25,000
//! test reviews, labelled 0 = negative, 1 = positive), a local directory of its parquet files,
//! or the 320-sentence sample bundled with the crate (`data/imdb-sample/`, written for it).
//!
//! Every split is a parquet file (or several) with the columns `text` and `label`. The Hub
//! names them `plain_text/train-00000-of-00001.parquet`, `plain_text/test-...` and
//! `plain_text/unsupervised-...` (unlabelled, label -1, which we never read); a split's files are
//! those whose name starts with the split's name. The number of classes comes from the data, as
//! the tutorial's `num_clases`: the distinct labels of the training split.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::hub::{hub_parquet_files, HubFiles};
use super::packing::epoch_order;
use super::parquet::{parquet_files, read_columns_of, ColumnKind};
use crate::tokenizer::bundled_data_dir;
use crate::{Error, Result};

/// The tutorial's dataset on the Hub.
pub const IMDB_DATASET: &str = "stanfordnlp/imdb";
/// The column holding the reviews.
pub const TEXT_COLUMN: &str = "text";
/// The column holding the classes: 0 = negative, 1 = positive.
pub const LABEL_COLUMN: &str = "label";
/// The names of IMDB's two classes, by label.
pub const IMDB_LABEL_NAMES: [&str; 2] = ["negative", "positive"];

/// The sample shipped with the crate (240 + 80 sentences, see `data/imdb-sample/PROVENANCE.md`),
/// under [`bundled_data_dir`] (whose error this returns when the bundled files cannot be found).
pub fn bundled_imdb_dir() -> Result<PathBuf> {
    Ok(bundled_data_dir()?.join("imdb-sample"))
}

/// Where the reviews come from; `"...".parse()` reads the spellings the example's `--data` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImdbSource {
    /// `hub`: [`IMDB_DATASET`] through `hf-hub` (or `hub:owner/name` for another dataset with
    /// `text` and `label` columns and `train-*`/`test-*` files).
    Hub(String),
    /// `bundled`: the sample in `data/imdb-sample/`.
    Bundled,
    /// A directory holding `train-*.parquet` and `test-*.parquet` (the Hub's names).
    Local(PathBuf),
}

impl FromStr for ImdbSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "" => Err(Error::InvalidArgument(
                "the dataset source is empty: give `hub`, `bundled`, or a directory with train-*.parquet and test-*.parquet".into(),
            )),
            "hub" => Ok(Self::Hub(IMDB_DATASET.into())),
            "bundled" => Ok(Self::Bundled),
            _ => match s.strip_prefix("hub:") {
                Some(id) if id.split('/').count() == 2 && !id.contains(' ') => {
                    Ok(Self::Hub(id.to_string()))
                }
                Some(id) => Err(Error::InvalidArgument(format!(
                    "`hub:{id}` is not a Hub dataset id: write hub:owner/name, or just `hub` for {IMDB_DATASET}"
                ))),
                None => Ok(Self::Local(PathBuf::from(s))),
            },
        }
    }
}

/// One split: texts and their labels, row for row.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `train` or `test`.
    pub name: String,
    /// The parquet files read.
    pub files: Vec<PathBuf>,
    /// The reviews, in file order.
    pub texts: Vec<String>,
    /// Each review's class, row for row with `texts`.
    pub labels: Vec<i64>,
    /// Rows skipped because their text was null or empty, or their label null.
    pub skipped: usize,
}

impl Split {
    /// Reads the `text` and `label` columns of `files`; `origin` names them in errors.
    pub fn from_files(name: &str, files: &[PathBuf], origin: &str) -> Result<Self> {
        let wanted = [
            (TEXT_COLUMN, ColumnKind::Text),
            (LABEL_COLUMN, ColumnKind::Int),
        ];
        let mut columns = read_columns_of(files, &wanted)?;
        let labels = columns.ints(LABEL_COLUMN)?.to_vec();
        let texts = columns.take_text(TEXT_COLUMN)?;
        if texts.is_empty() {
            let reason = if columns.rows_read == 0 {
                format!("its {name} split has no rows")
            } else {
                format!(
                    "all {} rows of its {name} split lack a text or a label",
                    columns.rows_read
                )
            };
            return Err(Error::EmptyDataset {
                origin: origin.to_string(),
                reason,
            });
        }
        Ok(Self {
            name: name.to_string(),
            files: columns.files,
            texts,
            labels,
            skipped: columns.skipped,
        })
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are no rows (a loaded split never is).
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// At most `n` rows, drawn at random with `seed` - not the first `n`: the Hub's IMDB files
    /// hold all negative reviews first, so their first rows are one class only. `n` 0 is
    /// [`Error::ZeroSize`], named as chapter 7's limit on this split (`train_limit`, `eval_limit`).
    pub fn subset(&self, n: usize, seed: u64) -> Result<Self> {
        if n == 0 {
            return Err(self.zero_limit());
        }
        if n >= self.len() {
            return Ok(self.clone());
        }
        let order = epoch_order(self.len(), seed, 0, true);
        let mut picked = order[..n].to_vec();
        picked.sort_unstable(); // keep the file's order among the rows drawn
        Ok(Self {
            texts: picked.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: picked.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone()
        })
    }

    /// The error of a subset of 0 rows. Left to itself, the empty split would be refused later
    /// as an empty dataset, which names neither the limit nor the fix.
    fn zero_limit(&self) -> Error {
        Error::ZeroSize {
            what: if self.name == "train" {
                "train_limit"
            } else {
                "eval_limit"
            },
            why: "a limit of 0 rows leaves nothing to train or evaluate on: give at least 1 (--train-limit and --eval-limit), or leave the limit out to use the whole split",
        }
    }

    /// Checks every label is a class of a `num_labels`-way classifier: `0..num_labels`.
    pub fn check_labels(&self, num_labels: usize) -> Result<()> {
        check_labels(&self.name, &self.labels, num_labels)
    }
}

pub use super::collate::check_labels;

/// IMDB's two labelled splits, and the number of classes.
#[derive(Debug, Clone)]
pub struct Imdb {
    /// Where the splits came from: the Hub id, `bundled sample (...)` or the path.
    pub origin: String,
    /// The reviews to train on.
    pub train: Split,
    /// The reviews to evaluate on.
    pub test: Split,
    /// The number of distinct labels in the training split (the tutorial's `num_clases`).
    pub num_labels: usize,
}

impl std::fmt::Display for Imdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} training and {} test reviews, {} classes, from {}",
            self.train.len(),
            self.test.len(),
            self.num_labels,
            self.origin
        )?;
        let skipped = self.train.skipped + self.test.skipped;
        if skipped > 0 {
            write!(f, " ({skipped} rows without text or label skipped)")?;
        }
        Ok(())
    }
}

impl Imdb {
    /// Reads the splits at `source` (for the Hub, downloading them if they are not cached).
    pub fn load(source: &ImdbSource) -> Result<Self> {
        let (origin, files) = match source {
            ImdbSource::Bundled => {
                // Named relative to the crate, so that output is the same on every machine.
                let origin = "bundled sample (data/imdb-sample)".to_string();
                (origin, parquet_files(&bundled_imdb_dir()?)?)
            }
            ImdbSource::Local(dir) => (dir.display().to_string(), local_files(dir)?),
            ImdbSource::Hub(repo) => (repo.clone(), hub_split_files(repo)?),
        };
        let train = Split::from_files("train", &split_files(&files, "train", &origin)?, &origin)?;
        let test = Split::from_files("test", &split_files(&files, "test", &origin)?, &origin)?;
        Self::from_splits(origin, train, test)
    }

    /// Loads `source`; if it is the Hub and the dataset cannot be had (not cached, no network),
    /// loads the bundled sample instead and returns a one-line note saying so. Meant for a
    /// default source only: data a user named should be loaded with [`Imdb::load`], so that it
    /// is what runs or an error.
    pub fn load_or_bundled(source: &ImdbSource) -> Result<(Self, Option<String>)> {
        match Self::load(source) {
            Err(e @ Error::HubDataset { .. }) => {
                let note = format!("{e} - using the bundled sample of 320 sentences instead");
                Ok((Self::load(&ImdbSource::Bundled)?, Some(note)))
            }
            other => other.map(|d| (d, None)),
        }
    }

    /// Two splits as a dataset: the classes are the training split's distinct labels, which
    /// must be `0..num_labels`, and every test label must be one of them.
    pub fn from_splits(origin: String, train: Split, test: Split) -> Result<Self> {
        let mut distinct = train.labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let num_labels = distinct.len();
        train.check_labels(num_labels)?;
        test.check_labels(num_labels)?;
        Ok(Self {
            origin,
            train,
            test,
            num_labels,
        })
    }
}

/// The files among `files` whose name starts with `split` (`train.parquet`,
/// `train-00000-of-00001.parquet`).
fn split_files(files: &[PathBuf], split: &str, origin: &str) -> Result<Vec<PathBuf>> {
    let picked: Vec<PathBuf> = files
        .iter()
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(split))
        })
        .cloned()
        .collect();
    if picked.is_empty() {
        // Not `EmptyDataset`: its advice (a file with a non-empty row) is not what is missing.
        return Err(Error::Dataset(format!(
            "{origin} has no {split}-*.parquet file: {NEEDED}"
        )));
    }
    Ok(picked)
}

/// What a local IMDB source must be, for the errors that find it is not.
const NEEDED: &str = "IMDB needs a train and a test split, so pass a directory holding train-*.parquet and test-*.parquet files (the Hub's names; train.parquet and test.parquet do too), `hub` or `bundled`";

/// The parquet files of a local source. The general readers' errors advise "a .parquet file",
/// which cannot hold both splits, so a path that is not a directory of them is refused here,
/// before any file is read.
fn local_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let problem = if dir.is_file() {
        "is a single file"
    } else if !dir.is_dir() {
        "does not exist"
    } else {
        return match parquet_files(dir) {
            Err(Error::NoParquetFiles { .. }) => Err(Error::Dataset(format!(
                "{} holds no .parquet files: {NEEDED}",
                dir.display()
            ))),
            other => other,
        };
    };
    Err(Error::Dataset(format!(
        "{} {problem}: {NEEDED}",
        dir.display()
    )))
}

/// The `train-*` and `test-*` parquet files of Hub dataset `repo`: from the Hugging Face cache
/// if its snapshot has both, else downloaded into it (the unlabelled split is left alone).
fn hub_split_files(repo: &str) -> Result<Vec<PathBuf>> {
    let wanted = |name: &str| {
        let file = name.rsplit('/').next().unwrap_or(name);
        file.starts_with("train") || file.starts_with("test")
    };
    let complete = |files: &[PathBuf]| {
        let has = |s: &str| split_files(files, s, repo).is_ok();
        has("train") && has("test")
    };
    let files = HubFiles {
        wanted: &wanted,
        complete: &complete,
        instead: "a directory of its train-*.parquet and test-*.parquet files",
    };
    hub_parquet_files(repo, &files)
}
