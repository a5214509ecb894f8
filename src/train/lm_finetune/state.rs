//! What a fine-tune keeps and reports: the data's fingerprint, the loop's position (saved in
//! every checkpoint), the report of a run, and the plan of sequences and steps.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::{epoch_order, Packer};
use crate::train::history::History;
use crate::train::recipe::FineTuneSettings;
use crate::{Error, Result};

/// What a resumed run checks it is given the same data as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// How many texts.
    #[serde(alias = "jokes")]
    pub texts: usize,
    /// How many tokens in all.
    pub tokens: usize,
}

impl DataFingerprint {
    /// The fingerprint of tokenized texts.
    pub fn of(tokenized: &[Vec<u32>]) -> Self {
        Self {
            texts: tokenized.len(),
            tokens: tokenized.iter().map(Vec::len).sum(),
        }
    }
}

/// Where a run is: everything besides the weights and the optimizer that a checkpoint must
/// hold for a resumed run to continue exactly (`trainer_state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopState {
    /// What the run was started with.
    pub settings: FineTuneSettings,
    /// The texts it trains on, to check a resume is given the same.
    pub data: DataFingerprint,
    /// The optimizer steps the whole run will make (the schedule decays to 0 at the last).
    pub total_steps: usize,
    /// The sequences the whole run packs (the fixed recipe's last step averages over those
    /// left, which may be fewer than `accumulate`).
    pub total_sequences: usize,
    /// The epoch under way, from 0.
    pub epoch: usize,
    /// The next position in this epoch's order of texts.
    pub position: usize,
    /// The packing buffer, carried from one epoch into the next as the tutorial's is.
    pub packer: Packer,
    /// Sequences trained so far.
    pub sequences: usize,
    /// Texts read so far (each epoch reads every text once).
    #[serde(alias = "jokes_seen")]
    pub texts_seen: usize,
    /// Every optimizer step's loss and learning rate, and the epochs' ends.
    pub history: History,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct FineTuneReport {
    /// Every optimizer step's loss and learning rate, and the epochs' ends.
    pub history: History,
    /// Sequences trained.
    pub sequences: usize,
    /// Optimizer steps made, in all (a resumed run counts those before it too).
    pub optimizer_steps: usize,
    /// Texts read, in all.
    pub texts_seen: usize,
    /// Texts skipped for being longer than `max_seq_len` (counted once, not per epoch).
    pub texts_too_long: usize,
    /// Sequences left in an unfinished accumulation at the end, never trained (tutorial recipe).
    pub untrained_sequences: usize,
    /// Texts left in the packing buffer at the end, never trained (tutorial recipe).
    pub untrained_texts: usize,
    /// Seconds of the loop, without the checkpoint saved at the end.
    pub seconds: f64,
    /// Texts read per second of this run.
    pub texts_per_second: f64,
    /// Whether the run was stopped (see [`LmFineTuner::stop_when`](super::LmFineTuner::stop_when)) before its end.
    pub interrupted: bool,
    /// The last checkpoint written (`None` without [`LmFineTuner::save_checkpoints`](super::LmFineTuner::save_checkpoints)).
    pub checkpoint: Option<PathBuf>,
}

/// How many sequences each epoch packs, the whole run through (the fixed recipe's schedule
/// needs its number of steps before the first one).
pub(super) fn count_sequences(
    settings: &FineTuneSettings,
    tokenized: &[Vec<u32>],
) -> Result<usize> {
    let mut packer = Packer::new(settings.packing, settings.max_seq_len)?;
    for epoch in 0..settings.epochs {
        let order = epoch_order(
            tokenized.len(),
            settings.seed,
            epoch as u64,
            settings.shuffle,
        );
        for &i in &order {
            packer.push(&tokenized[i]); // counted, not kept
        }
    }
    packer.finish();
    Ok(packer.sequences())
}

/// The sequences the whole run packs and the optimizer steps it makes.
pub(super) fn plan(settings: &FineTuneSettings, tokenized: &[Vec<u32>]) -> Result<(usize, usize)> {
    let sequences = count_sequences(settings, tokenized)?;
    // The tutorial's loop steps only on full accumulations; the fixed one also on the last,
    // partial one.
    let mut total_steps = if settings.packing == crate::data::PackingMode::Full {
        sequences.div_ceil(settings.accumulate)
    } else {
        sequences / settings.accumulate
    };
    if let Some(max) = settings.max_steps {
        total_steps = total_steps.min(max);
    }
    if total_steps == 0 {
        return Err(Error::InvalidArgument(format!(
            "{sequences} sequences make no optimizer step of {} sequences: lower accumulate or max_seq_len, or train more epochs",
            settings.accumulate
        )));
    }
    Ok((sequences, total_steps))
}
