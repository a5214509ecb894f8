//! The key/value cache for incremental decoding.
//!
//! Attention at step `t` needs the keys and values of every earlier token. Without a cache the
//! model recomputes them for the whole sequence each step (the tutorial's naive loop); with one,
//! each step feeds only the new token and appends its keys and values here. The cache is a plain
//! value the caller owns and passes in, as in candle's llama example.

use candle_core::Tensor;

/// Past keys and values of every layer, each `(B, nh, S, hs)`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<(Option<Tensor>, Option<Tensor>)>,
    seq_len: usize,
}

impl KvCache {
    /// An empty cache for a model with `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![(None, None); n_layer],
            seq_len: 0,
        }
    }

    /// Number of tokens already cached (the position of the next token).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Forgets everything, ready for a new sequence.
    pub fn clear(&mut self) {
        for layer in &mut self.layers {
            *layer = (None, None);
        }
        self.seq_len = 0;
    }

    pub(crate) fn layer_mut(&mut self, i: usize) -> &mut (Option<Tensor>, Option<Tensor>) {
        &mut self.layers[i]
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.seq_len += t;
    }
}
