//! Where a model comes from: the Hugging Face Hub, a local directory, or the bundled tiny model.
//!
//! A Hub id goes through `hf-hub`, which shares the Python library's cache (`HF_HOME`, default
//! `~/.cache/huggingface`), so a model downloaded by transformers is found here too.
//! `HF_HUB_OFFLINE=1` forbids the network, as it does in Python.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use candle_core::{DType, Device};

use crate::{Error, Gpt2Config, Gpt2Tokenizer, Result, Weights};

/// The model the examples use unless told otherwise, as in the tutorial.
pub const DEFAULT_MODEL: &str = "openai-community/gpt2";
/// The four GPT-2 sizes OpenAI released, as named on the Hub.
pub const HUB_MODELS: [&str; 4] = [
    "openai-community/gpt2",
    "openai-community/gpt2-medium",
    "openai-community/gpt2-large",
    "openai-community/gpt2-xl",
];
/// The seed the bundled tiny model was initialised with.
pub const TINY_SEED: u64 = 1337;
/// How long we wait to learn whether the Hub is reachable before falling back.
const HUB_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The directory of the tiny GPT-2 shipped with the crate.
pub fn bundled_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/tiny-gpt2")
}

/// A model location as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `bundled`: the tiny random-weight GPT-2 in `data/tiny-gpt2`.
    Bundled,
    /// A directory with `config.json` and `model.safetensors`.
    Local(PathBuf),
    /// A Hub repository id such as `openai-community/gpt2` (`gpt2`, `gpt2-xl`, ... are accepted
    /// as short names for OpenAI's models).
    Hub(String),
}

impl FromStr for ModelSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::InvalidArgument(
                "--model is empty: give a Hub id, a directory or `bundled`".into(),
            ));
        }
        if s == "bundled" {
            return Ok(Self::Bundled);
        }
        let path = Path::new(s);
        let looks_like_path =
            s.starts_with('.') || s.starts_with('/') || s.starts_with('~') || s.contains('\\');
        if path.exists() || looks_like_path {
            return Ok(Self::Local(path.to_path_buf()));
        }
        if let Some(full) = HUB_MODELS.iter().find(|m| m.rsplit('/').next() == Some(s)) {
            return Ok(Self::Hub(full.to_string()));
        }
        if s.split('/').count() == 2 {
            return Ok(Self::Hub(s.to_string()));
        }
        Err(Error::MissingModelDir(path.to_path_buf()))
    }
}

/// The files of a resolved model.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// A name for output: the Hub id, the directory, or `bundled`.
    pub name: String,
    pub config: PathBuf,
    pub weights: PathBuf,
    /// `tokenizer.json` when the model has one; GPT-2's sizes share one vocabulary, so the
    /// bundled tokenizer serves otherwise.
    pub tokenizer: Option<PathBuf>,
}

impl ModelSource {
    /// Finds (and, for the Hub, downloads if needed) the model's files.
    pub fn resolve(&self) -> Result<ModelFiles> {
        match self {
            Self::Bundled => {
                let mut files = local_files(&bundled_model_dir())?;
                files.name = "bundled".into();
                Ok(files)
            }
            Self::Local(dir) => local_files(dir),
            Self::Hub(repo) => hub_files(repo),
        }
    }
}

fn local_files(dir: &Path) -> Result<ModelFiles> {
    if !dir.is_dir() {
        return Err(Error::MissingModelDir(dir.to_path_buf()));
    }
    let need = |f: &str| {
        let p = dir.join(f);
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::MissingFile { path: p })
        }
    };
    let tokenizer = dir.join("tokenizer.json");
    Ok(ModelFiles {
        name: dir.display().to_string(),
        config: need("config.json")?,
        weights: need("model.safetensors")?,
        tokenizer: tokenizer.exists().then_some(tokenizer),
    })
}

pub(crate) fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// Can we open a TCP connection to the Hub within a few seconds? Name resolution can hang on a
/// closed network, so the whole probe runs on a thread we stop waiting for.
pub(crate) fn hub_reachable() -> bool {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let rest = endpoint.split("://").nth(1).unwrap_or(&endpoint);
    let host = rest.split('/').next().unwrap_or(rest).to_string();
    let addr = if host.contains(':') {
        host
    } else if endpoint.starts_with("http://") {
        format!("{host}:80")
    } else {
        format!("{host}:443")
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ok = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, HUB_PROBE_TIMEOUT).is_ok());
        let _ = tx.send(ok);
    });
    rx.recv_timeout(HUB_PROBE_TIMEOUT).unwrap_or(false)
}

fn hub_files(repo: &str) -> Result<ModelFiles> {
    let hub_err = |reason: String| Error::Hub {
        repo: repo.to_string(),
        reason,
    };
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(repo.to_string());
    if let (Some(config), Some(weights)) =
        (cached.get("config.json"), cached.get("model.safetensors"))
    {
        return Ok(ModelFiles {
            name: repo.to_string(),
            config,
            weights,
            tokenizer: cached.get("tokenizer.json"),
        });
    }
    let cache_dir = cache.path().display().to_string();
    if offline() {
        return Err(hub_err(format!(
            "it is not in the Hugging Face cache ({cache_dir}) and HF_HUB_OFFLINE is set: download it once while online, or pass a local directory"
        )));
    }
    if !hub_reachable() {
        return Err(hub_err(format!(
            "it is not in the Hugging Face cache ({cache_dir}) and the Hub is not reachable: connect to the internet, set HF_HOME to a cache that has it, or pass a local directory"
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| hub_err(e.to_string()))?;
    let remote = api.model(repo.to_string());
    let get = |f: &str| {
        remote.get(f).map_err(|e| {
            hub_err(format!(
                "cannot download {f} ({e}); is the id right? OpenAI's models are {}",
                HUB_MODELS.join(", ")
            ))
        })
    };
    Ok(ModelFiles {
        name: repo.to_string(),
        config: get("config.json")?,
        weights: get("model.safetensors")?,
        tokenizer: remote.get("tokenizer.json").ok(),
    })
}

/// A model ready to use: its name, config, weights and tokenizer.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub name: String,
    pub config: Gpt2Config,
    pub weights: Weights,
    pub tokenizer: Gpt2Tokenizer,
}

impl LoadedModel {
    /// Loads the model at `source` onto `device` in `dtype`.
    pub fn load(source: &ModelSource, device: &Device, dtype: DType) -> Result<Self> {
        let files = source.resolve()?;
        Self::load_files(&files, device, dtype)
    }

    pub fn load_files(files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        let config = Gpt2Config::from_file(&files.config)?;
        let weights = Weights::load(&files.weights, &config, device, dtype)?;
        let tokenizer = match &files.tokenizer {
            Some(p) => Gpt2Tokenizer::from_file(p)?,
            None => Gpt2Tokenizer::bundled()?,
        };
        Ok(Self {
            name: files.name.clone(),
            config,
            weights,
            tokenizer,
        })
    }

    // ANCHOR: fallback
    /// Loads `source`; if it is a Hub model that cannot be had (not cached, no network), loads
    /// the bundled model instead and returns a one-line note saying so.
    pub fn load_or_bundled(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
    ) -> Result<(Self, Option<String>)> {
        match Self::load(source, device, dtype) {
            Err(e @ Error::Hub { .. }) => {
                let note = format!("{e} - running on the bundled tiny GPT-2 instead (random weights, so its text is gibberish)");
                Ok((
                    Self::load(&ModelSource::Bundled, device, dtype)?,
                    Some(note),
                ))
            }
            other => other.map(|m| (m, None)),
        }
    }
    // ANCHOR_END: fallback
}
