//! Texts of different lengths into rectangular batches, as the tutorial's tokenizer call
//! (`tokenizer(text, padding="max_length", truncation=True)`) and transformers'
//! `DataCollatorWithPadding` make them.
//!
//! A batch is a `(B, T)` tensor, so every row needs T tokens: shorter rows are filled on the
//! right with the pad token (GPT-2 has none; the tutorial uses end-of-text, 50256), longer ones
//! cut at `max_length` (truncation). Either every row is padded to `max_length` whatever the
//! batch (the tutorial's `padding="max_length"`: 1,024 tokens for a 10-word review), or each
//! batch only to its own longest row (`padding="longest"`, what `DataCollatorWithPadding` does),
//! which computes the same logits for a fraction of the work.

use std::str::FromStr;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::tokenizer::EncodedBatch;
use crate::{Error, Gpt2Tokenizer, Result};

// ANCHOR: padding
/// How far a batch's rows are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Every row to `max_length` tokens (the tutorial's `padding="max_length"`).
    #[cfg_attr(feature = "cli", value(name = "max_length"))]
    MaxLength,
    /// Each batch to its longest row (`DataCollatorWithPadding`, `padding="longest"`).
    Longest,
}
// ANCHOR_END: padding

impl std::fmt::Display for Padding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MaxLength => "max_length",
            Self::Longest => "longest",
        })
    }
}

impl FromStr for Padding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "max_length" => Ok(Self::MaxLength),
            "longest" => Ok(Self::Longest),
            other => Err(Error::InvalidArgument(format!(
                "unknown padding {other:?}: use max_length (every row padded to max_length, as the tutorial) or longest (each batch to its longest row)"
            ))),
        }
    }
}

/// Token ids of each text, cut after `max_length` tokens (the tokenizer's `truncation=True`
/// keeps the start). GPT-2's tokenizer adds no special tokens, so nothing else changes.
pub fn tokenize_truncated(
    tokenizer: &Gpt2Tokenizer,
    texts: &[String],
    max_length: usize,
) -> Result<Vec<Vec<u32>>> {
    if max_length == 0 {
        return Err(Error::ZeroSize {
            what: "max_length",
            why: "a row needs at least one token",
        });
    }
    let encodings = tokenizer
        .inner()
        .encode_batch(texts.to_vec(), false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let rows: Vec<Vec<u32>> = encodings
        .iter()
        .map(|e| e.get_ids().iter().take(max_length).copied().collect())
        .collect();
    if let Some(i) = rows.iter().position(Vec::is_empty) {
        return Err(Error::InvalidArgument(format!(
            "text {i} has no tokens: every review needs some text"
        )));
    }
    Ok(rows)
}

/// A padded batch, what the model's forward pass takes.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(B, T)` u32 token ids, padded on the right with the pad token.
    pub input_ids: Tensor,
    /// `(B, T)` u32, 1 for a real token and 0 for padding.
    pub attention_mask: Tensor,
    /// `(B)` i64, one class per row.
    pub labels: Tensor,
    /// Rows in the batch.
    pub rows: usize,
    /// `B × T`: the tokens the model computes, pads included (what `total_flos` counts).
    pub tokens: usize,
    /// Tokens that are not padding.
    pub real_tokens: usize,
}

/// Pads `rows` (token ids, each at most `max_length` long) on the right with `pad_token_id`
/// into one batch, with their `labels`.
pub fn collate(
    rows: &[&[u32]],
    labels: &[i64],
    padding: Padding,
    max_length: usize,
    pad_token_id: u32,
    device: &Device,
) -> Result<Batch> {
    if rows.is_empty() || rows.len() != labels.len() {
        return Err(Error::InvalidArgument(format!(
            "a batch needs at least one row and one label per row, got {} rows and {} labels",
            rows.len(),
            labels.len()
        )));
    }
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if longest > max_length {
        return Err(Error::InvalidArgument(format!(
            "a row has {longest} tokens, more than max_length {max_length}: truncate the texts first (tokenize_truncated)"
        )));
    }
    let t = match padding {
        Padding::MaxLength => max_length,
        Padding::Longest => longest,
    };
    // The padding and the mask are the tokenizer's batch encoding: right-padded, 1 per real token.
    let padded = EncodedBatch::pad(rows, t, pad_token_id, device)?;
    let b = rows.len();
    Ok(Batch {
        input_ids: padded.input_ids,           // (B, T)
        attention_mask: padded.attention_mask, // (B, T)
        labels: Tensor::new(labels, device)?,  // (B)
        rows: b,
        tokens: b * t,
        real_tokens: padded.lengths.iter().sum(),
    })
}

/// Checks every label of split `split` is a class of a `num_labels`-way classifier:
/// `0..num_labels`; the first that is not is an error naming its row.
pub fn check_labels(split: &str, labels: &[i64], num_labels: usize) -> Result<()> {
    let bad = labels
        .iter()
        .position(|&l| l < 0 || l as u64 >= num_labels as u64);
    match bad {
        None => Ok(()),
        Some(row) => Err(Error::LabelOutOfRange {
            split: split.to_string(),
            row,
            label: labels[row],
            num_labels,
        }),
    }
}
