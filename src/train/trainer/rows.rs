//! What the Trainer trains on: tokenized rows with their classes, and how they become padded
//! batches.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::data::{collate, Batch, Padding};
use crate::Result;

/// A tokenized split: each row's token ids (already truncated) and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRows {
    /// Each row's token ids, unpadded and at most the collator's `max_length` long.
    pub ids: Vec<Vec<u32>>,
    /// Each row's class, in `0..num_labels`.
    pub labels: Vec<i64>,
}

impl LabelledRows {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Rows, tokens and the sum of the labels: what a resumed run checks it is given the same
    /// data as before.
    pub(super) fn fingerprint(&self) -> [u64; 3] {
        [
            self.len() as u64,
            self.ids.iter().map(|r| r.len() as u64).sum(),
            self.labels.iter().map(|&l| l as u64).sum(),
        ]
    }
}

/// How rows become batches (transformers' `data_collator` and the tokenizer's padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collator {
    /// Pad every row to `max_length`, or each batch to its longest row.
    pub padding: Padding,
    /// The longest a row may be, in tokens (rows were truncated to it when tokenized).
    pub max_length: usize,
    /// The token padding fills with, on the right; the model's `pad_token_id` must be the
    /// same (the tutorial's is `<|endoftext|>`, 50256).
    pub pad_token_id: u32,
}

impl Collator {
    /// The rows `picked` of `data` as one padded batch.
    pub fn batch(&self, data: &LabelledRows, picked: &[usize], device: &Device) -> Result<Batch> {
        let rows: Vec<&[u32]> = picked.iter().map(|&i| data.ids[i].as_slice()).collect();
        let labels: Vec<i64> = picked.iter().map(|&i| data.labels[i]).collect();
        collate(
            &rows,
            &labels,
            self.padding,
            self.max_length,
            self.pad_token_id,
            device,
        )
    }
}
