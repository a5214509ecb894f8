//! GPT-2's byte-level BPE tokenizer, through Hugging Face's `tokenizers` crate.
//!
//! Byte-level means every string can be encoded (unknown characters fall back to their UTF-8
//! bytes) and a single character may span several tokens, which matters when streaming text.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where the crate keeps its copy of GPT-2's `tokenizer.json`.
pub fn bundled_tokenizer_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/gpt2-tokenizer/tokenizer.json")
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

    /// The tokenizer shipped in `data/gpt2-tokenizer/` (GPT-2's own vocabulary and merges).
    pub fn bundled() -> Result<Self> {
        Self::from_file(&bundled_tokenizer_path())
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
