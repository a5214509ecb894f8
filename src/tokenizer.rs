//! GPT-2's byte-level BPE tokenizer, through Hugging Face's `tokenizers` crate.
//!
//! Byte-level means every string can be encoded (unknown characters fall back to their UTF-8
//! bytes) and a single character may span several tokens, which matters when streaming text.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// The environment variable that says where the bundled files are: the crate's `data/` folder
/// (the one holding `tiny-gpt2/` and `gpt2-tokenizer/`).
pub const DATA_DIR_ENV: &str = "GPT2_TUTORIAL_DATA";

/// The crate's `data/` folder - the tiny model, GPT-2's tokenizer, the datasets' samples - found
/// at run time, so that a binary copied away from the source tree can still be pointed at it.
/// Looked for, in order:
///
/// 1. [`DATA_DIR_ENV`] (`GPT2_TUTORIAL_DATA`) if it is set: then it must be a directory, since
///    whoever set it meant that one and a silent fallback would hide a typo;
/// 2. the source tree the crate was built from (`<crate>/data`), where `cargo run` finds it;
/// 3. `data/` beside the running executable, for a program shipped with its files.
///
/// None of them is [`Error::BundledDataMissing`], which lists the places looked at. It lives
/// here, at the bottom of the layers, because the tokenizer is the lowest module that needs it;
/// [`crate::source`] re-exports it.
pub fn bundled_data_dir() -> Result<PathBuf> {
    locate_data_dir(
        std::env::var_os(DATA_DIR_ENV),
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data")),
        std::env::current_exe().ok(),
    )
}

/// [`bundled_data_dir`] with its three inputs passed in, so each rule can be tested alone.
fn locate_data_dir(
    env: Option<OsString>,
    built_from: &Path,
    exe: Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::BundledDataMissing { tried: vec![dir] })
        };
    }
    let beside_exe = exe.and_then(|e| e.parent().map(|d| d.join("data")));
    let tried: Vec<PathBuf> = std::iter::once(built_from.to_path_buf())
        .chain(beside_exe)
        .collect();
    match tried.iter().find(|d| d.is_dir()) {
        Some(dir) => Ok(dir.clone()),
        None => Err(Error::BundledDataMissing { tried }),
    }
}

/// Where the crate keeps its copy of GPT-2's `tokenizer.json`, under [`bundled_data_dir`]
/// (whose error this returns when the bundled files cannot be found).
pub fn bundled_tokenizer_path() -> Result<PathBuf> {
    Ok(bundled_data_dir()?.join("gpt2-tokenizer/tokenizer.json"))
}

/// Several token sequences padded into one `(B, T)` rectangle, what a batched forward pass
/// takes: [`Gpt2Tokenizer::encode_batch`] makes one from texts, and chapter 7's
/// [`collate`](crate::data::collate::collate) from token ids, with labels added.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// `(B, T)` u32 token ids, each row followed by the pad token up to `T`.
    pub input_ids: Tensor,
    /// `(B, T)` u32, 1 for a real token and 0 for padding: the model's `attention_mask`, so
    /// that no real token attends to the padding.
    pub attention_mask: Tensor,
    /// Each row's real tokens (before padding).
    pub lengths: Vec<usize>,
}

impl EncodedBatch {
    /// Pads `rows` on the right with `pad_token_id` to `len` tokens each, as transformers' GPT-2
    /// tokenizer does (`padding_side="right"`). This is the one place padding is written; a row
    /// longer than `len` is an error, since cutting it is the caller's decision (truncation).
    pub fn pad(rows: &[&[u32]], len: usize, pad_token_id: u32, device: &Device) -> Result<Self> {
        if rows.is_empty() {
            return Err(Error::InvalidArgument(
                "the batch has no rows: give at least one sequence".into(),
            ));
        }
        if let Some(i) = rows.iter().position(|r| r.len() > len) {
            return Err(Error::InvalidArgument(format!(
                "row {i} has {} tokens, more than the padded length {len}: truncate it first",
                rows[i].len()
            )));
        }
        let b = rows.len();
        let mut ids = Vec::with_capacity(b * len);
        let mut mask = Vec::with_capacity(b * len);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad_token_id, len - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, len - row.len()));
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, len), device)?, // (B, T)
            attention_mask: Tensor::from_vec(mask, (b, len), device)?, // (B, T)
            lengths: rows.iter().map(|r| r.len()).collect(),
        })
    }
}

/// The GPT-2 tokenizer.
#[derive(Clone)]
pub struct Gpt2Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpt2Tokenizer(vocab {})", self.vocab_size())
    }
}

impl Gpt2Tokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner })
    }

    /// The tokenizer shipped in `data/gpt2-tokenizer/` (GPT-2's own vocabulary and merges),
    /// found through [`bundled_data_dir`].
    pub fn bundled() -> Result<Self> {
        Self::from_file(&bundled_tokenizer_path()?)
    }

    /// Token ids of `text`; an empty text is an error, since a model needs at least one token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        self.encode_allow_empty(text)
    }

    /// Token ids of `text`, which may be empty.
    pub fn encode_allow_empty(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of several texts at once, right-padded with `pad_token_id` to the longest into
    /// `(B, T)` tensors on `device`, with the attention mask: transformers'
    /// `tokenizer(texts, padding=True, return_tensors="pt")` for GPT-2. GPT-2 has no pad token of
    /// its own; the usual choice is its end-of-text token,
    /// [`EOS_TOKEN_ID`](crate::config::EOS_TOKEN_ID) (50256), and the mask is what keeps it
    /// from being read. Nothing is truncated: a row longer than the model's context fails in
    /// the forward pass. An empty text becomes a row of padding, as in transformers; a batch
    /// with no token at all is [`Error::EmptyPrompt`].
    pub fn encode_batch(
        &self,
        texts: &[&str],
        pad_token_id: u32,
        device: &Device,
    ) -> Result<EncodedBatch> {
        if texts.is_empty() {
            return Err(Error::InvalidArgument(
                "texts is empty: a batch needs at least one text".into(),
            ));
        }
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let rows: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if longest == 0 {
            return Err(Error::EmptyPrompt);
        }
        EncodedBatch::pad(&rows, longest, pad_token_id, device)
    }

    /// Text of `ids` (special tokens kept, as transformers' `decode` does by default).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The id of a token string such as `<|endoftext|>`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The number of tokens the tokenizer knows, special tokens included (50257 for GPT-2).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Writes the tokenizer as `tokenizer.json` (what a checkpoint directory holds).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, named for the test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gpt2-tutorial-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_source_tree_comes_before_the_executables_folder() {
        let root = scratch("data-order");
        let (built, exe_dir) = (root.join("crate/data"), root.join("bin"));
        std::fs::create_dir_all(&built).unwrap();
        std::fs::create_dir_all(exe_dir.join("data")).unwrap();
        let exe = Some(exe_dir.join("prog"));
        assert_eq!(locate_data_dir(None, &built, exe.clone()).unwrap(), built);
        // Moved away from its source tree, a binary finds the data/ shipped beside it.
        std::fs::remove_dir_all(&built).unwrap();
        assert_eq!(
            locate_data_dir(None, &built, exe).unwrap(),
            exe_dir.join("data")
        );
        std::fs::remove_dir_all(root).ok();
    }

    #[test]
    fn nowhere_is_an_error_naming_every_place_and_the_variable() {
        let root = scratch("data-nowhere");
        let (built, exe) = (root.join("crate/data"), root.join("bin/prog"));
        let e = locate_data_dir(Some(OsString::new()), &built, Some(exe)).unwrap_err();
        let Error::BundledDataMissing { tried } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(tried, &[built, root.join("bin/data")]);
        let text = e.to_string();
        assert!(
            text.contains(DATA_DIR_ENV) && text.contains("crate/data"),
            "{text}"
        );
        std::fs::remove_dir_all(root).ok();
    }
}
