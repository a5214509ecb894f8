//! Chapter 6's training loop: fine-tune a causal language model on jokes packed into
//! sequences, one sequence at a time, an optimizer step every `accumulate` sequences - the
//! tutorial's loop, whichever [`Recipe`](super::Recipe) sets its numbers.
//!
//! The loop's whole position is data: the epoch, the index into that epoch's order, the packing
//! buffer, the history. A checkpoint saves it beside the weights and the optimizer after an
//! optimizer step, so a resumed run continues bit for bit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::checkpoint::{load_checkpoint, save_checkpoint};
use super::history::{EpochEnd, History, StepRecord};
use super::progress::EpochBar;
use super::recipe::JokesSettings;
use super::schedule::LinearSchedule;
use super::step::{TrainSettings, TrainStep};
use crate::data::{epoch_order, Packer};
use crate::generation::{generate, GenerationConfig};
use crate::{Error, Gpt2Config, Gpt2LmHeadModel, Gpt2Tokenizer, Result, Weights};

/// What a resumed run checks it is given the same data as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub jokes: usize,
    pub tokens: usize,
}

impl DataFingerprint {
    pub fn of(tokenized: &[Vec<u32>]) -> Self {
        Self {
            jokes: tokenized.len(),
            tokens: tokenized.iter().map(Vec::len).sum(),
        }
    }
}

// ANCHOR: loop_state
/// Where a run is: everything besides the weights and the optimizer that a checkpoint must
/// hold for a resumed run to continue exactly (`trainer_state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopState {
    pub settings: JokesSettings,
    pub data: DataFingerprint,
    /// The optimizer steps the whole run will make (the schedule decays to 0 at the last).
    pub total_steps: usize,
    /// The sequences the whole run packs (the fixed recipe's last step averages over those
    /// left, which may be fewer than `accumulate`).
    pub total_sequences: usize,
    /// The epoch under way, from 0.
    pub epoch: usize,
    /// The next position in this epoch's order of jokes.
    pub position: usize,
    /// The packing buffer, carried from one epoch into the next as the tutorial's is.
    pub packer: Packer,
    /// Sequences trained so far.
    pub sequences: usize,
    /// Jokes read so far (each epoch reads every joke once).
    pub jokes_seen: usize,
    pub history: History,
}
// ANCHOR_END: loop_state

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct JokesReport {
    pub history: History,
    pub sequences: usize,
    pub optimizer_steps: usize,
    pub jokes_seen: usize,
    /// Jokes skipped for being longer than `max_seq_len` (counted once per epoch).
    pub jokes_too_long: usize,
    /// Sequences left in an unfinished accumulation at the end, never trained (tutorial recipe).
    pub untrained_sequences: usize,
    /// Jokes left in the packing buffer at the end, never trained (tutorial recipe).
    pub untrained_jokes: usize,
    /// Seconds of the loop, without the checkpoint saved at the end.
    pub seconds: f64,
    pub jokes_per_second: f64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
}

/// Options of a run that are not part of its recipe.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw progress bars.
    pub bars: bool,
    /// For testing the guard: make the loss of this optimizer step's first sequence NaN.
    pub nan_at_step: Option<usize>,
}

/// A jokes fine-tune: the training step, the tokenized jokes and where the run is.
pub struct JokesTrainer<'a> {
    pub train: TrainStep,
    tokenized: &'a [Vec<u32>],
    state: LoopState,
    schedule: LinearSchedule,
    out_dir: PathBuf,
    tokenizer_json: PathBuf,
    /// The last checkpoint written or resumed from: the one a divergence leaves intact.
    last_checkpoint: Option<PathBuf>,
}

/// How many sequences each epoch packs, the whole run through (the fixed recipe's schedule
/// needs its number of steps before the first one).
fn count_sequences(settings: &JokesSettings, tokenized: &[Vec<u32>]) -> Result<usize> {
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

impl<'a> JokesTrainer<'a> {
    /// A fresh run of `settings` on `weights`, writing checkpoints and the history under
    /// `out_dir`; `tokenizer_json` is copied into each checkpoint.
    pub fn new(
        weights: &Weights,
        cfg: &Gpt2Config,
        tokenized: &'a [Vec<u32>],
        settings: JokesSettings,
        out_dir: &Path,
        tokenizer_json: &Path,
    ) -> Result<Self> {
        settings.validate()?;
        if settings.max_seq_len > cfg.n_positions {
            return Err(Error::InvalidArgument(format!(
                "--max-seq-len {} is longer than the model's context of {} positions: pick at most {}",
                settings.max_seq_len, cfg.n_positions, cfg.n_positions
            )));
        }
        crate::data::check_max_seq_len(tokenized, settings.max_seq_len)?;
        let sequences = count_sequences(&settings, tokenized)?;
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
                "{sequences} sequences make no optimizer step of {} sequences: lower --accumulate or --max-seq-len, or add --epochs",
                settings.accumulate
            )));
        }
        let mut adamw = settings.adamw;
        adamw.lr = settings.lr;
        let step = TrainSettings::new(settings.train_precision()?, adamw).seed(settings.seed);
        let train = TrainStep::new(weights, cfg, step)?;
        let state = LoopState {
            data: DataFingerprint::of(tokenized),
            total_steps,
            total_sequences: sequences,
            epoch: 0,
            position: 0,
            packer: Packer::new(settings.packing, settings.max_seq_len)?,
            sequences: 0,
            jokes_seen: 0,
            history: History::default(),
            settings,
        };
        Ok(Self::assemble(
            train,
            tokenized,
            state,
            out_dir,
            tokenizer_json,
        ))
    }

    /// Continues the run saved in checkpoint `dir`, on the same jokes.
    pub fn resume(
        dir: &Path,
        tokenized: &'a [Vec<u32>],
        out_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        let checkpoint = load_checkpoint(dir, device)?;
        let state: LoopState = checkpoint.state()?;
        let data = DataFingerprint::of(tokenized);
        if state.data != data {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} was trained on {} jokes ({} tokens), these are {} jokes ({} tokens): resume with the same --data and --max-seq-len",
                dir.display(),
                state.data.jokes,
                state.data.tokens,
                data.jokes,
                data.tokens
            )));
        }
        let train = checkpoint.train_step()?;
        let tokenizer_json = dir.join("tokenizer.json");
        let mut trainer = Self::assemble(train, tokenized, state, out_dir, &tokenizer_json);
        trainer.last_checkpoint = Some(dir.to_path_buf());
        Ok(trainer)
    }

    fn assemble(
        train: TrainStep,
        tokenized: &'a [Vec<u32>],
        state: LoopState,
        out_dir: &Path,
        tokenizer_json: &Path,
    ) -> Self {
        let schedule = state.settings.schedule(state.total_steps);
        Self {
            train,
            tokenized,
            state,
            schedule,
            out_dir: out_dir.to_path_buf(),
            tokenizer_json: tokenizer_json.to_path_buf(),
            last_checkpoint: None,
        }
    }

    pub fn settings(&self) -> &JokesSettings {
        &self.state.settings
    }

    pub fn schedule(&self) -> &LinearSchedule {
        &self.schedule
    }

    pub fn state(&self) -> &LoopState {
        &self.state
    }

    /// The directory of the checkpoint after optimizer step `step`.
    pub fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.out_dir.join(format!("checkpoint-{step}"))
    }

    fn save(&mut self) -> Result<()> {
        let dir = self.checkpoint_dir(self.train.step_count());
        save_checkpoint(&dir, &self.train, &self.tokenizer_json, &self.state)?;
        self.last_checkpoint = Some(dir);
        Ok(())
    }

    // ANCHOR: run
    /// Trains to the end of the last epoch (or `max_steps`), saving checkpoints as the settings
    /// say and at the end. A loss or gradient that is not finite stops the run with an error
    /// that names the step and the last checkpoint, which stays as it was.
    pub fn run(&mut self, options: &RunOptions) -> Result<JokesReport> {
        let started = Instant::now();
        let jokes_at_start = self.state.jokes_seen;
        let settings = self.state.settings.clone();
        let n = self.tokenized.len();
        let mut pending: Vec<f32> = Vec::new(); // losses of the accumulation under way
        let mut done = self.done();
        while !done && self.state.epoch < settings.epochs {
            let epoch = self.state.epoch;
            let order = epoch_order(n, settings.seed, epoch as u64, settings.shuffle);
            let mut bar = EpochBar::new(epoch, settings.epochs, n as u64, "jokes", options.bars);
            bar.resume_at(self.state.position as u64);
            while self.state.position < n {
                let joke = &self.tokenized[order[self.state.position]];
                self.state.position += 1;
                self.state.jokes_seen += 1;
                bar.set_position(self.state.position as u64);
                let Some(sequence) = self.state.packer.push(joke) else {
                    continue;
                };
                if let Some(step) = self.train_sequence(&sequence, &mut pending, options)? {
                    bar.show(step.loss, step.lr);
                    self.maybe_save()?;
                    if self.done() {
                        done = true;
                        break;
                    }
                }
            }
            bar.finish();
            if !done {
                self.state.history.epochs.push(EpochEnd {
                    epoch,
                    optimizer_steps: self.train.step_count(),
                    sequences: self.state.sequences,
                    lr: self.schedule.lr(self.train.step_count()),
                });
                self.state.epoch += 1;
                self.state.position = 0;
            }
        }
        // The end of the data: the fixed recipe trains the last partial sequence and the last
        // partial accumulation; the tutorial's loop drops both.
        if !done && settings.packing == crate::data::PackingMode::Full {
            if let Some(sequence) = self.state.packer.finish() {
                self.train_sequence(&sequence, &mut pending, options)?;
            }
            if !pending.is_empty() && !self.done() {
                self.update(&mut pending)?;
            }
        }
        let untrained_sequences = pending.len();
        let untrained_jokes = self.state.packer.buffered_jokes();
        // The rate is the loop's: the tutorial's loop is timed without its final save too.
        let seconds = started.elapsed().as_secs_f64();
        if self.last_checkpoint.as_ref() != Some(&self.checkpoint_dir(self.train.step_count())) {
            self.save()?;
        }
        let jokes = self.state.jokes_seen - jokes_at_start;
        Ok(JokesReport {
            history: self.state.history.clone(),
            sequences: self.state.sequences,
            optimizer_steps: self.train.step_count(),
            jokes_seen: self.state.jokes_seen,
            jokes_too_long: self
                .tokenized
                .iter()
                .filter(|t| t.len() > settings.max_seq_len)
                .count(),
            untrained_sequences,
            untrained_jokes,
            seconds,
            jokes_per_second: jokes as f64 / seconds.max(1e-9),
            checkpoint: self.last_checkpoint.clone(),
        })
    }
    // ANCHOR_END: run

    /// Whether `max_steps` is reached (otherwise a run ends with its data, as the tutorial's).
    fn done(&self) -> bool {
        let max = self.state.settings.max_steps;
        max.is_some_and(|max| self.train.step_count() >= max)
    }

    // ANCHOR: train_sequence
    /// One sequence: forward, loss, backward, gradients added up; an optimizer step once
    /// `accumulate` sequences are in. Returns the step's record when it made one.
    fn train_sequence(
        &mut self,
        sequence: &[u32],
        pending: &mut Vec<f32>,
        options: &RunOptions,
    ) -> Result<Option<StepRecord>> {
        let settings = &self.state.settings;
        let weight = self.loss_weight(pending.len());
        let step = self.train.step_count() + 1;
        // The forced fault makes every gradient of the step NaN, as an overflow would.
        let forced = options.nan_at_step == Some(step) && pending.is_empty();
        let loss = self
            .train
            .accumulate_ids(sequence, if forced { f64::NAN } else { weight });
        let loss = loss.map_err(|e| self.explain(e))?;
        pending.push(loss);
        self.state.sequences += 1;
        if pending.len() < settings.accumulate {
            return Ok(None);
        }
        self.update(pending)
    }
    // ANCHOR_END: train_sequence

    /// The weight of a sequence's loss: 1 (summed, the tutorial) or 1/N over the N sequences
    /// of its step - N is `accumulate` except for the fixed recipe's last, partial step.
    fn loss_weight(&self, pending: usize) -> f64 {
        let settings = &self.state.settings;
        if !settings.average_gradients {
            return 1.0;
        }
        let trained = self.state.sequences - pending;
        let total = (self.state.total_steps * settings.accumulate).min(self.state.total_sequences);
        let left = total.saturating_sub(trained).max(1);
        1.0 / left.min(settings.accumulate) as f64
    }

    /// The optimizer step of the sequences in `pending`; `None` when mixed f16's loss scaling
    /// skipped it (an overflow: no step is counted or recorded, as PyTorch's `GradScaler`).
    fn update(&mut self, pending: &mut Vec<f32>) -> Result<Option<StepRecord>> {
        let settings = &self.state.settings;
        let lr = self.schedule.lr(self.train.step_count());
        let report = self
            .train
            .apply(lr, settings.max_grad_norm)
            .map_err(|e| self.explain(e))?;
        if !report.applied {
            pending.clear();
            return Ok(None);
        }
        let last = *pending.last().expect("a step has at least one sequence");
        let mean = pending.iter().map(|&l| f64::from(l)).sum::<f64>() / pending.len() as f64;
        pending.clear();
        let record = StepRecord {
            step: self.train.step_count(),
            // The fixed recipe's last step comes after the last epoch's jokes: it is that epoch's.
            epoch: self.state.epoch.min(settings.epochs - 1),
            loss: f64::from(last),
            mean_loss: mean,
            lr,
        };
        self.state.history.push(record);
        Ok(Some(record))
    }

    fn maybe_save(&mut self) -> Result<()> {
        let step = self.train.step_count();
        match self.state.settings.save_steps {
            Some(every) if step.is_multiple_of(every) => self.save(),
            _ => Ok(()),
        }
    }

    /// A non-finite loss or gradient, with the last checkpoint and the usual causes added.
    fn explain(&self, e: Error) -> Error {
        match e {
            Error::NonFiniteLoss { what, value, step } => Error::TrainingDiverged {
                what,
                value,
                step,
                checkpoint: self.last_checkpoint.clone(),
            },
            other => other,
        }
    }
}

// ANCHOR: generate
/// What the tutorial does after training: continue `prompt` with the trained weights, in the
/// dtype they were trained in (the tutorial's model stays `.half()`), dropout off, sampling
/// with top-p 0.8 from a seeded generator, up to `max_new_tokens` or `<|endoftext|>`.
pub fn continue_prompt(
    weights: &Weights,
    cfg: &Gpt2Config,
    tokenizer: &Gpt2Tokenizer,
    prompt: &str,
    max_new_tokens: usize,
    seed: u64,
) -> Result<String> {
    let model = Gpt2LmHeadModel::from_weights(weights, cfg)?;
    let ids = tokenizer.encode(prompt)?;
    let config = GenerationConfig {
        max_new_tokens: Some(max_new_tokens),
        top_p: 0.8,
        seed,
        ..GenerationConfig::sampling()
    };
    let out = generate(&model, &ids, &config)?;
    tokenizer.decode(&out.sequences[0])
}
// ANCHOR_END: generate
