//! Where a model comes from: the Hugging Face Hub, a local directory, or the bundled tiny model.
//!
//! A Hub id goes through `hf-hub`, which shares the Python library's cache (`HF_HOME`, default
//! `~/.cache/huggingface`), so a model downloaded by transformers is found here too.
//! `HF_HUB_OFFLINE=1` forbids the network, as it does in Python.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::{Error, Gpt2Config, Gpt2Tokenizer, Result, Weights};

pub use crate::tokenizer::{bundled_data_dir, DATA_DIR_ENV};

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
#[cfg(feature = "hub")]
const HUB_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The directory of the tiny GPT-2 shipped with the crate, under [`bundled_data_dir`] (whose
/// error this returns when the bundled files cannot be found).
pub fn bundled_model_dir() -> Result<PathBuf> {
    Ok(bundled_data_dir()?.join("tiny-gpt2"))
}

/// Where a model comes from; `"...".parse()` reads the spellings the examples' `--model` takes.
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

/// Whether `s` (trimmed, not `bundled`) names a local path rather than a Hub id. Hub ids are
/// `owner/name` or a bare name; anything else that looks like a path - absolute, relative with
/// `./` or `../`, from the home directory, with a backslash, with two or more `/` or a trailing
/// one, or whose first component is a local directory (`ft-out/checkpoint-99` when `ft-out/`
/// exists) - is a path, so that a mistyped one is reported as a missing directory rather than
/// as a Hub model that cannot be had.
fn looks_like_path(s: &str) -> bool {
    let first = s.split('/').next().unwrap_or(s);
    s.starts_with('.')
        || s.starts_with('/')
        || s.starts_with('~')
        || s.contains('\\')
        || s.ends_with('/')
        || s.matches('/').count() >= 2
        || (s.contains('/') && Path::new(first).is_dir())
}

impl FromStr for ModelSource {
    type Err = Error;

    /// `bundled`; a local directory (anything that exists or looks like a path, see
    /// `looks_like_path`); a short name of OpenAI's models (`gpt2`, `gpt2-xl`, ...); a Hub id
    /// `owner/name`. Anything else is [`Error::MissingModelDir`].
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::InvalidArgument(
                "the model source is empty: give a Hub id, a directory or `bundled`".into(),
            ));
        }
        if s == "bundled" {
            return Ok(Self::Bundled);
        }
        let path = Path::new(s);
        if path.exists() || looks_like_path(s) {
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
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
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
                let mut files = local_files(&bundled_model_dir()?)?;
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

#[cfg(feature = "hub")]
pub(crate) fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// Can we open a TCP connection to the Hub within a few seconds? Name resolution can hang on a
/// closed network, so the whole probe runs on a thread we stop waiting for.
#[cfg(feature = "hub")]
pub(crate) fn hub_reachable() -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::mpsc;
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

/// Without the `hub` feature there is no Hub client: say how to get one, or what else to pass.
#[cfg(not(feature = "hub"))]
fn hub_files(repo: &str) -> Result<ModelFiles> {
    Err(Error::Hub {
        repo: repo.to_string(),
        reason: "this build has no Hub support: enable the crate's `hub` feature (on by default), or pass a local directory".into(),
    })
}

#[cfg(feature = "hub")]
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
    /// A name for output: the Hub id, the directory, or `bundled`.
    pub name: String,
    /// The model's `config.json`.
    pub config: Gpt2Config,
    /// Its tensors by checkpoint name, ready for `from_weights` of any class.
    pub weights: Weights,
    /// The model's own `tokenizer.json`, else the bundled GPT-2 tokenizer (every GPT-2 size
    /// shares one vocabulary).
    pub tokenizer: Gpt2Tokenizer,
}

impl LoadedModel {
    /// Loads the model at `source` onto `device` in `dtype`.
    pub fn load(source: &ModelSource, device: &Device, dtype: DType) -> Result<Self> {
        let files = source.resolve()?;
        Self::load_files(&files, device, dtype)
    }

    /// Loads files already resolved (see [`ModelSource::resolve`]).
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

    /// Writes the model to `dir` - `config.json`, `model.safetensors`, `tokenizer.json` - as
    /// transformers' `save_pretrained` does for a model and its tokenizer (see
    /// [`save_pretrained`]).
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        save_pretrained(dir.as_ref(), &self.weights, &self.config, &self.tokenizer)
    }

    // ANCHOR: fallback
    /// Loads `source`; if it is a Hub model that cannot be had (not cached, no network), loads
    /// the bundled model instead and returns a one-line note saying so. Meant for a default
    /// model only: a model the user named is loaded with [`LoadedModel::load`], or is an error.
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

/// Writes a model directory - `config.json`, `model.safetensors`, `tokenizer.json` - that this
/// crate ([`LoadedModel::load`] with the directory as source) and transformers
/// (`from_pretrained(dir)`) both open: transformers' `save_pretrained` for the model and the
/// tokenizer at once. Creates `dir` if needed; files already there are replaced.
pub fn save_pretrained(
    dir: &Path,
    weights: &Weights,
    config: &Gpt2Config,
    tokenizer: &Gpt2Tokenizer,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_model_files(dir, weights, config)?;
    tokenizer.save(&dir.join("tokenizer.json"))
}

/// `model.safetensors` and `config.json`, with `torch_dtype` naming the weights' dtype as
/// transformers writes it (`float32`, `float16`, `bfloat16`), so that `from_pretrained` loads
/// them as they are.
pub(crate) fn write_model_files(dir: &Path, weights: &Weights, config: &Gpt2Config) -> Result<()> {
    weights.save(&dir.join("model.safetensors"))?;
    let mut json =
        serde_json::to_value(config).map_err(|e| Error::InvalidArgument(format!("config: {e}")))?;
    if let Some(obj) = json.as_object_mut() {
        let torch_dtype = match weights.dtype() {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            _ => "float32",
        };
        obj.insert("torch_dtype".into(), torch_dtype.into());
        obj.entry("model_type").or_insert_with(|| "gpt2".into());
    }
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| Error::InvalidArgument(format!("cannot write {}: {e}", path.display())))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}
