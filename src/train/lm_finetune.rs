//! Fine-tuning a causal language model on texts: the texts packed into sequences, one sequence
//! at a time, an optimizer step every `accumulate` sequences - chapter 6's loop, the tutorial's
//! on jokes, whichever [`Recipe`](super::Recipe) sets its numbers, and the loop for any texts
//! of your own ([`LmFineTuner::on_texts`]).
//!
//! The loop's whole position is data: the epoch, the index into that epoch's order, the packing
//! buffer, the history. A checkpoint saves it beside the weights and the optimizer after an
//! optimizer step, so a resumed run continues bit for bit.

mod state;
mod stopping;
mod watch;

use state::plan;
pub use state::{DataFingerprint, FineTuneReport, LoopState};
use watch::Watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::Device;

use super::checkpoint::load_checkpoint;
use super::history::{EpochEnd, History, StepRecord};
use super::recipe::FineTuneSettings;
use super::run_dir::RunDir;
use super::schedule::LinearSchedule;
use super::step::{TrainSettings, TrainStep, TrainStepState};
use crate::data::{epoch_order, Packer};
use crate::generation::{generate, GenerationConfig};
use crate::source::save_pretrained;
use crate::{Error, Gpt2Config, Gpt2LmHeadModel, Gpt2Tokenizer, LoadedModel, Result, Weights};

/// Where checkpoints go, and the tokenizer each one holds.
struct Checkpoints {
    out: RunDir,
    tokenizer: Gpt2Tokenizer,
}

/// A causal-LM fine-tune: the training step, the tokenized texts and where the run is.
///
/// ```no_run
/// use gpt2_tutorial::prelude::*;
///
/// # fn main() -> gpt2_tutorial::Result<()> {
/// let m = LoadedModel::load(&ModelSource::Bundled, &Device::Cpu, DType::F32)?;
/// let texts = ["The cat sat on the mat.", "The dog sat on the log."];
/// let settings = FineTuneSettings { epochs: 3, ..FineTuneSettings::fixed() };
/// let out = RunDir::fresh("out", false)?; // this run's folder, refused if another run's
/// let mut tuner = LmFineTuner::on_texts(&m, &texts, settings)?
///     .save_checkpoints(out, &m.tokenizer); // optional: checkpoints that resume
/// let report = tuner.run()?;
/// tuner.save_pretrained("out/final", &m.tokenizer)?; // transformers opens it too
/// let lm = tuner.into_model()?; // ready for inference: dropout off
/// # Ok(())
/// # }
/// ```
pub struct LmFineTuner {
    train: TrainStep,
    tokenized: Vec<Vec<u32>>,
    state: LoopState,
    schedule: LinearSchedule,
    checkpoints: Option<Checkpoints>,
    /// The last checkpoint written or resumed from: the one a divergence leaves intact.
    last_checkpoint: Option<PathBuf>,
    progress: bool,
    /// Set (by a Ctrl-C handler, say) to stop the run at the next sequence.
    stop: Option<Arc<AtomicBool>>,
    /// A test hook: the optimizer step whose gradients are made NaN.
    nan_at_step: Option<usize>,
}

/// Where the run stood after its last optimizer step: what a run stopped between two steps
/// saves, so that its checkpoint resumes exactly (the sequences of the unfinished step are
/// trained again).
struct AtStep {
    state: LoopState,
    step: TrainStepState,
}

impl LmFineTuner {
    /// A fresh run of `settings` on `weights`, over `tokenized` texts (token ids, one list per
    /// text). It saves nothing unless [`LmFineTuner::save_checkpoints`] says where.
    pub fn new(
        weights: &Weights,
        cfg: &Gpt2Config,
        tokenized: Vec<Vec<u32>>,
        settings: FineTuneSettings,
    ) -> Result<Self> {
        settings.validate()?;
        if settings.max_seq_len > cfg.n_positions {
            return Err(Error::InvalidArgument(format!(
                "max_seq_len {} is longer than the model's context of {} positions: pick at most {}",
                settings.max_seq_len, cfg.n_positions, cfg.n_positions
            )));
        }
        crate::data::check_max_seq_len(&tokenized, settings.max_seq_len)?;
        let (sequences, total_steps) = plan(&settings, &tokenized)?;
        let mut adamw = settings.adamw;
        adamw.lr = settings.lr;
        let step = TrainSettings::new(settings.precision, adamw).seed(settings.seed);
        let mut train = TrainStep::new(weights, cfg, step)?;
        train.set_dropout(settings.dropout);
        let state = LoopState {
            data: DataFingerprint::of(&tokenized),
            total_steps,
            total_sequences: sequences,
            epoch: 0,
            position: 0,
            packer: Packer::new(settings.packing, settings.max_seq_len)?,
            sequences: 0,
            texts_seen: 0,
            history: History::default(),
            settings,
        };
        Ok(Self::assemble(train, tokenized, state, None))
    }

    /// A fresh run of `settings` on `model`'s weights over `texts`, each tokenized with
    /// `<|endoftext|>` appended, so that the model learns where a text stops (the tutorial's
    /// jokes end the same way).
    pub fn on_texts(
        model: &LoadedModel,
        texts: &[impl AsRef<str>],
        settings: FineTuneSettings,
    ) -> Result<Self> {
        let tokenized = texts
            .iter()
            .map(|t| {
                let mut ids = model.tokenizer.encode(t.as_ref())?;
                ids.push(crate::config::EOS_TOKEN_ID);
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(&model.weights, &model.config, tokenized, settings)
    }

    /// Continues the run saved in checkpoint `dir`, on the same texts, writing its next
    /// checkpoints into `out` (each with the checkpoint's tokenizer); take `out` with
    /// [`RunDir::resumed`].
    pub fn resume(
        dir: &Path,
        tokenized: Vec<Vec<u32>>,
        out: RunDir,
        device: &Device,
    ) -> Result<Self> {
        let checkpoint = load_checkpoint(dir, device)?;
        let state: LoopState = checkpoint.state()?;
        let data = DataFingerprint::of(&tokenized);
        if state.data != data {
            return Err(Error::InvalidArgument(format!(
                "checkpoint {} was trained on {} texts ({} tokens), these are {} texts ({} tokens): resume with the same data and max_seq_len",
                dir.display(),
                state.data.texts,
                state.data.tokens,
                data.texts,
                data.tokens
            )));
        }
        let train = checkpoint.train_step()?;
        let checkpoints = Checkpoints {
            out,
            tokenizer: Gpt2Tokenizer::from_file(&dir.join("tokenizer.json"))?,
        };
        let mut tuner = Self::assemble(train, tokenized, state, Some(checkpoints));
        tuner.last_checkpoint = Some(dir.to_path_buf());
        Ok(tuner)
    }

    fn assemble(
        train: TrainStep,
        tokenized: Vec<Vec<u32>>,
        state: LoopState,
        checkpoints: Option<Checkpoints>,
    ) -> Self {
        let schedule = state.settings.schedule(state.total_steps);
        Self {
            train,
            tokenized,
            state,
            schedule,
            checkpoints,
            last_checkpoint: None,
            progress: false,
            stop: None,
            nan_at_step: None,
        }
    }

    /// Saves checkpoints into `out` (`checkpoint-N/`, every `save_steps` optimizer steps and
    /// at the end), each a model directory transformers opens, with `tokenizer`, and a state
    /// that [`LmFineTuner::resume`] continues exactly. A checkpoint is written only when every
    /// weight and moment is finite, so none ever holds a diverged model.
    pub fn save_checkpoints(mut self, out: RunDir, tokenizer: &Gpt2Tokenizer) -> Self {
        self.checkpoints = Some(Checkpoints {
            out,
            tokenizer: tokenizer.clone(),
        });
        self
    }

    /// Draws a progress bar per epoch on standard error (with the `progress` feature; without
    /// it there is nothing to draw).
    pub fn show_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Testing the divergence guard: make optimizer step `step`'s gradients NaN.
    #[cfg(feature = "examples")]
    #[doc(hidden)]
    pub fn inject_nan_at_step(&mut self, step: Option<usize>) {
        self.nan_at_step = step;
    }

    /// What the run was started with.
    pub fn settings(&self) -> &FineTuneSettings {
        &self.state.settings
    }

    /// The learning rate's schedule over the run.
    pub fn schedule(&self) -> &LinearSchedule {
        &self.schedule
    }

    /// Where the run is: epoch, position, history.
    pub fn state(&self) -> &LoopState {
        &self.state
    }

    /// The training step underneath: its model is the one being trained (dropout as training
    /// has it), its optimizer, its counts.
    pub fn train_step(&self) -> &TrainStep {
        &self.train
    }

    /// The model's config.
    pub fn config(&self) -> &Gpt2Config {
        self.train.config()
    }

    /// The weights as trained so far, in the dtype they train in.
    pub fn weights(&self) -> Result<Weights> {
        self.train.weights()
    }

    /// The trained model, ready for inference: built from the weights as they are now, with
    /// dropout off (transformers' `model.eval()`), so that it generates what the saved
    /// checkpoint, loaded again, generates.
    pub fn model(&self) -> Result<Gpt2LmHeadModel> {
        Gpt2LmHeadModel::from_weights(&self.train.weights()?, self.train.config())
    }

    /// [`LmFineTuner::model`], giving up the training state (the optimizer's moments are
    /// freed).
    pub fn into_model(self) -> Result<Gpt2LmHeadModel> {
        self.model()
    }

    /// Writes the model as it is now to `dir` - `config.json`, `model.safetensors`,
    /// `tokenizer.json` - a directory this crate ([`LoadedModel::load`]) and transformers
    /// (`from_pretrained`) both open.
    pub fn save_pretrained(&self, dir: impl AsRef<Path>, tokenizer: &Gpt2Tokenizer) -> Result<()> {
        save_pretrained(
            dir.as_ref(),
            &self.train.weights()?,
            self.config(),
            tokenizer,
        )
    }

    /// Trains to the end of the last epoch (or `max_steps`), saving checkpoints as the settings
    /// say and at the end. A loss or gradient that is not finite stops the run with an error
    /// that names the step and the last checkpoint, which stays as it was.
    pub fn run(&mut self) -> Result<FineTuneReport> {
        let mut watch = Watch::new(self)?;
        let mut pending: Vec<f32> = Vec::new(); // losses of the accumulation under way
        let ending = if self.done() {
            Ending::MaxSteps
        } else {
            self.train_loop(&mut watch, &mut pending)?
        };
        watch.finish_bars();
        let texts_at_start = watch.texts_at_start;
        match ending {
            Ending::Interrupted => {
                return self.stopped(watch.at_step.take(), watch.seconds(), texts_at_start)
            }
            Ending::EndOfData => self.train_leftovers(&mut pending)?,
            Ending::MaxSteps => {}
        }
        let untrained_sequences = pending.len();
        let untrained_texts = self.state.packer.buffered_jokes();
        // The rate is the loop's: the tutorial's loop is timed without its final save too.
        let seconds = watch.seconds();
        if self.last_checkpoint != self.checkpoint_dir(self.train.step_count()) {
            self.save()?;
        }
        Ok(self.report(
            seconds,
            texts_at_start,
            untrained_sequences,
            untrained_texts,
        ))
    }

    // ANCHOR: loop
    /// The tutorial's loop: every epoch, the texts in a shuffled order, each packed into the
    /// sequence being built; a full sequence goes forward and backward, its gradients adding
    /// up; every `accumulate` sequences an optimizer step, a scheduler step and the gradients
    /// zeroed. What the tutorial does not have - progress bars, Ctrl-C, checkpoints,
    /// `max_steps` - is `watch`'s business (see `lm_finetune/watch.rs`).
    fn train_loop(&mut self, watch: &mut Watch, pending: &mut Vec<f32>) -> Result<Ending> {
        let settings = self.state.settings.clone();
        while self.state.epoch < settings.epochs {
            let epoch = self.state.epoch as u64;
            let order = epoch_order(self.tokenized.len(), settings.seed, epoch, settings.shuffle);
            watch.epoch_starts(self);
            while self.state.position < order.len() {
                if self.stop_requested() {
                    return Ok(Ending::Interrupted);
                }
                let text = &self.tokenized[order[self.state.position]];
                self.state.position += 1;
                self.state.texts_seen += 1;
                watch.text_read(self);
                // The tutorial's `torch.cat` packing: out comes a sequence once a text won't fit.
                let Some(sequence) = self.state.packer.push(text) else {
                    continue;
                };
                // `model(ids, labels=ids)`, `loss.backward()`: gradients add up until the step.
                let loss = self.train_sequence(&sequence, pending.len())?;
                pending.push(loss);
                // Every BATCH_SIZE sequences: optimizer step, scheduler step, zero_grad.
                if pending.len() == settings.accumulate {
                    let record = self.update(pending)?;
                    if watch.stepped(self, record)? {
                        return Ok(Ending::MaxSteps);
                    }
                }
            }
            watch.epoch_ends();
            self.end_epoch();
        }
        Ok(Ending::EndOfData)
    }
    // ANCHOR_END: loop

    /// An epoch's end: what the tutorial prints there recorded, the position back to the start.
    fn end_epoch(&mut self) {
        self.state.history.epochs.push(EpochEnd {
            epoch: self.state.epoch,
            optimizer_steps: self.train.step_count(),
            sequences: self.state.sequences,
            lr: self.schedule.lr(self.train.step_count()),
        });
        self.state.epoch += 1;
        self.state.position = 0;
    }

    /// The end of the data: the fixed recipe trains the last partial sequence and the last
    /// partial accumulation; the tutorial's loop drops both.
    fn train_leftovers(&mut self, pending: &mut Vec<f32>) -> Result<()> {
        if self.state.settings.packing != crate::data::PackingMode::Full {
            return Ok(());
        }
        if let Some(sequence) = self.state.packer.finish() {
            let loss = self.train_sequence(&sequence, pending.len())?;
            pending.push(loss);
            if pending.len() == self.state.settings.accumulate {
                self.update(pending)?;
            }
        }
        if !pending.is_empty() && !self.done() {
            self.update(pending)?;
        }
        Ok(())
    }

    /// The run's report.
    fn report(
        &self,
        seconds: f64,
        texts_at_start: usize,
        untrained_sequences: usize,
        untrained_texts: usize,
    ) -> FineTuneReport {
        let settings = &self.state.settings;
        let texts = self.state.texts_seen - texts_at_start;
        FineTuneReport {
            history: self.state.history.clone(),
            sequences: self.state.sequences,
            optimizer_steps: self.train.step_count(),
            texts_seen: self.state.texts_seen,
            texts_too_long: self
                .tokenized
                .iter()
                .filter(|t| t.len() > settings.max_seq_len)
                .count(),
            untrained_sequences,
            untrained_texts,
            seconds,
            texts_per_second: texts as f64 / seconds.max(1e-9),
            interrupted: false,
            checkpoint: self.last_checkpoint.clone(),
        }
    }

    /// Whether `max_steps` is reached (otherwise a run ends with its data, as the tutorial's).
    fn done(&self) -> bool {
        let max = self.state.settings.max_steps;
        max.is_some_and(|max| self.train.step_count() >= max)
    }

    /// One sequence, the tutorial's `model(ids, labels=ids)` and `loss.backward()`: its
    /// gradients are added to those of the `pending` sequences before it in this step.
    /// Returns its loss.
    fn train_sequence(&mut self, sequence: &[u32], pending: usize) -> Result<f32> {
        let weight = self.loss_weight(pending);
        // The forced fault makes every gradient of the step NaN, as an overflow would.
        let forced = self.nan_at_step == Some(self.train.step_count() + 1) && pending == 0;
        let weight = if forced { f64::NAN } else { weight };
        let loss = self.train.accumulate_ids(sequence, weight);
        let loss = loss.map_err(|e| self.explain(e))?;
        self.state.sequences += 1;
        Ok(loss)
    }

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

    /// The optimizer step of the sequences in `pending`, at the schedule's learning rate for
    /// this step; `apply` zeroes the gradients, and the step count it advances is the
    /// scheduler's step (the schedule is a function of it). `None`
    /// when mixed f16's loss scaling skipped it (an overflow: no step is counted or recorded,
    /// as PyTorch's `GradScaler`).
    fn update(&mut self, pending: &mut Vec<f32>) -> Result<Option<StepRecord>> {
        let settings = &self.state.settings;
        let lr = self.schedule.lr(self.train.step_count());
        let report = self
            .train
            .apply(lr, settings.max_grad_norm)
            .map_err(|e| self.explain(e))?;
        let losses = std::mem::take(pending);
        if !report.applied {
            return Ok(None);
        }
        let last = *losses.last().expect("a step has at least one sequence");
        let mean = losses.iter().map(|&l| f64::from(l)).sum::<f64>() / losses.len() as f64;
        let record = StepRecord {
            step: self.train.step_count(),
            // The fixed recipe's last step comes after the last epoch's texts: it is that epoch's.
            epoch: self.state.epoch.min(settings.epochs - 1),
            loss: f64::from(last),
            mean_loss: mean,
            // The tutorial's `lrs.append(scheduler.get_last_lr()[0])`, after
            // `scheduler.step()`: the rate the *next* step runs at.
            lr: self.schedule.lr(self.train.step_count()),
        };
        self.state.history.push(record);
        Ok(Some(record))
    }
}

/// How the loop ended.
enum Ending {
    /// Every epoch read to its end.
    EndOfData,
    /// `max_steps` optimizer steps made.
    MaxSteps,
    /// A stop was asked for (Ctrl-C).
    Interrupted,
}

// ANCHOR: generate
/// What the tutorial does after training: continue `prompt` with the trained weights, in the
/// dtype they were trained in (the tutorial's model stays `.half()`), dropout off, as
/// `generation` says - [`FineTuneSettings::generation`] gives each recipe's: the tutorial's
/// `model.generate(**inputs)` is greedy up to 20 tokens, prompt included.
pub fn continue_prompt(
    weights: &Weights,
    cfg: &Gpt2Config,
    tokenizer: &Gpt2Tokenizer,
    prompt: &str,
    generation: &GenerationConfig,
) -> Result<String> {
    let model = Gpt2LmHeadModel::from_weights(weights, cfg)?;
    let ids = tokenizer.encode(prompt)?;
    let out = generate(&model, &ids, generation)?;
    tokenizer.decode(&out.sequences[0])
}
// ANCHOR_END: generate
