//! Packing jokes into training sequences, as the tutorial's loop does, and the epoch order.
//!
//! A joke is ~20 tokens and the model reads up to 1,024, so the tutorial packs jokes into
//! sequences of at most `MAX_SEQ_LEN` = 500 tokens before each forward pass. Its loop, for each
//! joke's token ids:
//!
//! ```python
//! if joke_tens.size()[1] > MAX_SEQ_LEN:          # too long: skip it
//!     continue
//! if not torch.is_tensor(tmp_jokes_tens):        # first joke: start the buffer
//!     tmp_jokes_tens = joke_tens
//!     continue
//! if tmp_jokes_tens.size()[1] + joke_tens.size()[1] > MAX_SEQ_LEN:
//!     work_jokes_tens = tmp_jokes_tens           # full: train on the buffer ...
//!     tmp_jokes_tens = joke_tens                 # ... and start the next with this joke
//! else:
//!     tmp_jokes_tens = torch.cat([tmp_jokes_tens, joke_tens[:,1:]], dim=1)
//!     continue
//! ```
//!
//! Three details matter. The appended joke loses its first token (`joke_tens[:,1:]`, the
//! `"JOKE"` of `"JOKE: ..."`) while the fit test counts it. `tmp_jokes_tens` is set once,
//! before the epoch loop, so the buffer carries over from one epoch into the next. And after
//! the last epoch the buffer is never trained. [`PackingMode::Tutorial`] does exactly that;
//! [`PackingMode::Full`], the fixed recipe's, keeps every token and emits the last buffer.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How jokes are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum PackingMode {
    /// The tutorial's: an appended joke loses its first token, the last buffer is dropped.
    Tutorial,
    /// Nothing dropped: appended jokes keep every token, [`Packer::finish`] emits the last
    /// buffer.
    Full,
}

/// The packing buffer and its counters. Its state serializes, so a checkpoint can hold it and
/// a resumed run packs exactly as an uninterrupted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packer {
    mode: PackingMode,
    max_seq_len: usize,
    /// The sequence being filled (the tutorial's `tmp_jokes_tens`).
    buffer: Vec<u32>,
    /// Jokes in `buffer`.
    buffered_jokes: usize,
    /// Sequences emitted so far.
    sequences: usize,
    /// Jokes that went into a sequence (or are in the buffer).
    jokes_packed: usize,
    /// Jokes skipped for being longer than `max_seq_len`.
    jokes_skipped: usize,
}

impl Packer {
    /// An empty packer for sequences of at most `max_seq_len` tokens.
    pub fn new(mode: PackingMode, max_seq_len: usize) -> Result<Self> {
        if max_seq_len == 0 {
            return Err(Error::InvalidArgument(
                "max_seq_len is 0: a sequence needs at least one token (the tutorial uses 500)"
                    .into(),
            ));
        }
        Ok(Self {
            mode,
            max_seq_len,
            buffer: Vec::new(),
            buffered_jokes: 0,
            sequences: 0,
            jokes_packed: 0,
            jokes_skipped: 0,
        })
    }

    // ANCHOR: push
    /// Adds one joke's token ids; returns a sequence when the joke did not fit in the buffer
    /// (the buffer is emitted and the joke starts the next one). An empty `ids` changes nothing.
    pub fn push(&mut self, ids: &[u32]) -> Option<Vec<u32>> {
        if ids.is_empty() {
            return None;
        }
        if ids.len() > self.max_seq_len {
            self.jokes_skipped += 1;
            return None;
        }
        self.jokes_packed += 1;
        if self.buffer.is_empty() {
            self.buffer = ids.to_vec();
            self.buffered_jokes = 1;
            return None;
        }
        // The fit test counts the whole joke, in both modes.
        if self.buffer.len() + ids.len() > self.max_seq_len {
            let sequence = std::mem::replace(&mut self.buffer, ids.to_vec());
            self.buffered_jokes = 1;
            self.sequences += 1;
            return Some(sequence);
        }
        match self.mode {
            PackingMode::Tutorial => self.buffer.extend_from_slice(&ids[1..]), // joke_tens[:,1:]
            PackingMode::Full => self.buffer.extend_from_slice(ids),
        }
        self.buffered_jokes += 1;
        None
    }
    // ANCHOR_END: push

    /// Ends packing: [`PackingMode::Full`] returns the last, partial sequence;
    /// [`PackingMode::Tutorial`] drops it, as the tutorial's loop does. The buffer is empty
    /// afterwards.
    pub fn finish(&mut self) -> Option<Vec<u32>> {
        let buffer = std::mem::take(&mut self.buffer);
        self.buffered_jokes = 0;
        match self.mode {
            PackingMode::Full if !buffer.is_empty() => {
                self.sequences += 1;
                Some(buffer)
            }
            _ => None,
        }
    }

    /// Packs the jokes `tokenized[i]` for each `i` of `order` (one epoch), returning the
    /// sequences emitted; the buffer carries over to the next call.
    pub fn pack_epoch(&mut self, tokenized: &[Vec<u32>], order: &[usize]) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::new();
        for &i in order {
            let ids = tokenized.get(i).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the epoch order names joke {i} but there are {} jokes: build the order with epoch_order(n_jokes, ..)",
                    tokenized.len()
                ))
            })?;
            out.extend(self.push(ids));
        }
        Ok(out)
    }

    /// How jokes are joined: the tutorial's way or the fixed recipe's.
    pub fn mode(&self) -> PackingMode {
        self.mode
    }

    /// The most tokens a packed sequence may hold (the tutorial's `MAX_SEQ_LEN`, 500).
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// The sequence being filled.
    pub fn buffer(&self) -> &[u32] {
        &self.buffer
    }

    /// Jokes in the buffer (what the tutorial never trains if training ends now).
    pub fn buffered_jokes(&self) -> usize {
        self.buffered_jokes
    }

    /// Sequences emitted so far.
    pub fn sequences(&self) -> usize {
        self.sequences
    }

    /// Jokes packed so far (emitted or in the buffer).
    pub fn jokes_packed(&self) -> usize {
        self.jokes_packed
    }

    /// Jokes skipped for being longer than `max_seq_len`.
    pub fn jokes_skipped(&self) -> usize {
        self.jokes_skipped
    }
}

/// Checks up front that `max_seq_len` lets at least one joke in, and returns how many fit.
/// An empty dataset and a `max_seq_len` below every joke's length are errors, the latter naming
/// the shortest joke's length.
pub fn check_max_seq_len(tokenized: &[Vec<u32>], max_seq_len: usize) -> Result<usize> {
    let Some(shortest) = tokenized.iter().map(Vec::len).min() else {
        return Err(Error::EmptyDataset {
            origin: "to pack".into(),
            reason: "no tokenized texts".into(),
        });
    };
    let fit = tokenized.iter().filter(|t| t.len() <= max_seq_len).count();
    if fit == 0 {
        return Err(Error::SeqLenTooShort {
            max_seq_len,
            shortest,
        });
    }
    Ok(fit)
}

/// The order in which epoch `epoch` visits `n` jokes: a permutation drawn from ChaCha8 seeded
/// with `seed` on stream `epoch`, so each epoch has its own order and a run resumed mid-epoch
/// draws the same one; with `shuffle` false, file order (the tutorial's `DataLoader` shuffles).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
    }
    order
}
