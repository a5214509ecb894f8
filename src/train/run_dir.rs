//! The output folder of a training run, held by that run alone.
//!
//! Two runs writing `checkpoint-N/` into one folder replace each other's checkpoints, and a
//! fresh run into a used folder leaves the old run's later checkpoints beside its own, where
//! "resume the latest" finds the wrong one. So a run takes its folder: it holds an exclusive
//! lock on [`LOCK_FILE`] inside it for as long as it lives (the operating system drops the
//! lock when the process ends, however it ends, so a killed run never blocks the next), and a
//! fresh run refuses a folder that holds another run's files unless told to overwrite them
//! (transformers' `overwrite_output_dir`).
//!
//! Taking the folder also creates it and writes a probe file, so a folder that cannot be
//! written fails at once, before a model is loaded or a step is trained.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The lock file a run holds in its output folder; it holds the run's process id.
pub const LOCK_FILE: &str = ".run.lock";

/// An output folder taken by this run (see the module's docs). Dropping it releases the folder.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Held open for the lock; never read after it is taken.
    _lock: File,
}

/// Whether `name` is a file a training run writes into its output folder: its checkpoints
/// (with the `.tmp`/`.old` of an interrupted save), its history and its figure.
fn is_run_file(name: &str) -> bool {
    name.starts_with("checkpoint-")
        || name.starts_with("history.")
        || matches!(name, "loss_lr.svg" | "loss_accuracy.svg" | "tokenizer.json")
}

impl RunDir {
    /// The folder for a fresh run. A folder holding another run's checkpoints or history is
    /// [`Error::OutputHoldsAnotherRun`], unless `overwrite`, which removes those files (and
    /// nothing else) first.
    pub fn fresh(path: impl Into<PathBuf>, overwrite: bool) -> Result<Self> {
        let dir = Self::take(path.into())?;
        dir.clear_other_run(overwrite)?;
        Ok(dir)
    }

    /// The folder for a run resumed from checkpoint `from`. The resumed run's own folder (the
    /// one `from` is in) may hold its files; any other folder is taken as by
    /// [`RunDir::fresh`].
    pub fn resumed(path: impl Into<PathBuf>, from: &Path, overwrite: bool) -> Result<Self> {
        let dir = Self::take(path.into())?;
        let own = |p: &Path| std::fs::canonicalize(p).ok();
        let home = from.parent().and_then(own);
        if home.is_none() || home != own(&dir.path) {
            dir.clear_other_run(overwrite)?;
        }
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the folder, checks it can be written, and takes its lock.
    fn take(path: PathBuf) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "{} is a file, not a folder: give a folder for the run's checkpoints",
                path.display()
            )));
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let probe = path.join(".write-probe");
        std::fs::write(&probe, b"").map_err(|e| Error::io(&probe, e))?;
        std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = lock.read_to_string(&mut text); // only for the message
                return Err(Error::OutputInUse {
                    dir: path,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        // Ours now: say who holds it, for the next run's message.
        let written = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()));
        written.map_err(|e| Error::io(&lock_path, e))?;
        Ok(Self { path, _lock: lock })
    }

    /// Refuses (or, with `overwrite`, removes) another run's files in the folder.
    fn clear_other_run(&self, overwrite: bool) -> Result<()> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut found: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_run_file(&name) {
                found.push(name);
            }
        }
        found.sort();
        if found.is_empty() {
            return Ok(());
        }
        if !overwrite {
            return Err(Error::OutputHoldsAnotherRun {
                dir: self.path.clone(),
                found,
            });
        }
        for name in found {
            let p = self.path.join(name);
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(|e| Error::io(&p, e))?;
        }
        Ok(())
    }
}
