//! Parquet files of a Hugging Face Hub dataset, through `hf-hub` and its cache, as the models
//! come (`src/source.rs`): a cached snapshot is used offline; otherwise the repo's file list is
//! read and the files wanted are downloaded into `HF_HOME`. `HF_HUB_OFFLINE=1` forbids the
//! network.

use std::path::{Path, PathBuf};

use hf_hub::{Repo, RepoType};

use super::parquet::parquet_files;
use crate::source::{hub_reachable, offline};
use crate::{Error, Result};

/// Which files of a dataset a caller wants, and what a cached snapshot must hold to be used.
pub struct HubFiles<'a> {
    /// Whether to take the file at this path in the repo (e.g. `plain_text/train-0000.parquet`).
    pub wanted: &'a dyn Fn(&str) -> bool,
    /// Whether the cached snapshot's wanted files are all the caller needs.
    pub complete: &'a dyn Fn(&[PathBuf]) -> bool,
    /// What else the user can pass, for the error messages ("a .parquet file").
    pub instead: &'a str,
}

/// The wanted parquet files of Hub dataset `repo` at `main`: from the Hugging Face cache if its
/// snapshot is complete, else listed from the repo and downloaded into the cache, sorted.
pub fn hub_parquet_files(repo: &str, files: &HubFiles) -> Result<Vec<PathBuf>> {
    let hub_err = |reason: String| Error::HubDataset {
        repo: repo.to_string(),
        reason,
    };
    let cache = hf_hub::Cache::from_env();
    let dataset = Repo::with_revision(repo.to_string(), RepoType::Dataset, "main".into());
    if let Some(cached) = cached_parquet_files(cache.path(), &dataset) {
        let cached: Vec<PathBuf> = cached
            .into_iter()
            .filter(|f| (files.wanted)(&f.to_string_lossy()))
            .collect();
        if !cached.is_empty() && (files.complete)(&cached) {
            return Ok(cached);
        }
    }
    let cache_dir = cache.path().display().to_string();
    let instead = files.instead;
    if offline() {
        return Err(hub_err(format!(
            "it is not in the Hugging Face cache ({cache_dir}) and HF_HUB_OFFLINE is set: download it once while online, or pass {instead}"
        )));
    }
    if !hub_reachable() {
        return Err(hub_err(format!(
            "it is not in the Hugging Face cache ({cache_dir}) and the Hub is not reachable: connect to the internet, set HF_HOME to a cache that has it, or pass {instead}"
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| hub_err(e.to_string()))?;
    let remote = api.repo(dataset);
    let info = remote
        .info()
        .map_err(|e| hub_err(format!("cannot list its files ({e}); is the id right?")))?;
    let mut names: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| f.ends_with(".parquet") && (files.wanted)(f))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(hub_err(format!(
            "it has none of the .parquet files needed: pass {instead}"
        )));
    }
    names
        .iter()
        .map(|f| {
            remote
                .get(f)
                .map_err(|e| hub_err(format!("cannot download {f} ({e})")))
        })
        .collect()
}

/// The `.parquet` files of the cached snapshot `refs/main` points to, if there are any
/// (hf-hub and Python's `huggingface_hub` share this layout).
fn cached_parquet_files(cache_dir: &Path, repo: &Repo) -> Option<Vec<PathBuf>> {
    let dir = cache_dir.join(repo.folder_name());
    let commit = std::fs::read_to_string(dir.join("refs").join(repo.revision())).ok()?;
    let snapshot = dir.join("snapshots").join(commit.trim());
    parquet_files(&snapshot).ok()
}
