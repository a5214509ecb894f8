//! Where a fine-tune writes and how it stops: checkpoints that only ever hold finite weights,
//! a stop between two steps that saves where the last one left the run, the divergence guard's
//! errors, and the schedule changes a resumed run may make.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{plan, AtStep, FineTuneReport, LmFineTuner};
use crate::train::checkpoint::{save_finite_checkpoint, with_last_checkpoint};
use crate::train::resume::ResumeChanges;
use crate::train::step::TrainStepState;
use crate::{Error, Result};

impl LmFineTuner {
    /// Changes the schedule of a resumed run - the learning rate, warm-up, `max_steps` or
    /// epochs - from the next optimizer step on, and records the change in the history. The
    /// model, the data and the packing stay the checkpoint's.
    pub fn change_schedule(&mut self, changes: ResumeChanges) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let steps = self.train.step_count();
        changes.check(steps, self.state.epoch)?;
        let mut settings = self.state.settings.clone();
        settings.lr = changes.lr.unwrap_or(settings.lr);
        settings.warmup = changes.warmup.or(settings.warmup);
        settings.max_steps = changes.max_steps.or(settings.max_steps);
        settings.epochs = changes.epochs.unwrap_or(settings.epochs);
        settings.validate()?;
        let (sequences, total_steps) = plan(&settings, &self.tokenized)?;
        let change = changes.applied(steps, total_steps)?;
        self.schedule = settings.schedule(total_steps);
        self.state.settings = settings;
        self.state.total_steps = total_steps;
        self.state.total_sequences = sequences;
        self.state.history.schedule_changes.push(change);
        Ok(())
    }

    /// Stops the run when `stop` becomes true (a Ctrl-C handler sets it): at the next
    /// sequence, with a checkpoint of where the run stood after its last optimizer step (the
    /// sequences of the unfinished step are trained again on resume), and a report that says
    /// it was interrupted.
    pub fn stop_when(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The directory of the checkpoint after optimizer step `step` (`None` when the run saves
    /// no checkpoints).
    pub fn checkpoint_dir(&self, step: usize) -> Option<PathBuf> {
        let checkpoints = self.checkpoints.as_ref()?;
        Some(checkpoints.out.path().join(format!("checkpoint-{step}")))
    }

    /// The last checkpoint written or resumed from.
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_deref()
    }

    pub(super) fn save(&mut self) -> Result<()> {
        let now = self.train.state()?;
        self.save_as(&now)
    }

    /// Saves a checkpoint with the training step's own state `step_state`.
    pub(super) fn save_as(&mut self, step_state: &TrainStepState) -> Result<()> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let step = self.train.step_count();
        let dir = checkpoints.out.path().join(format!("checkpoint-{step}"));
        let (tokenizer, last) = (&checkpoints.tokenizer, &self.last_checkpoint);
        save_finite_checkpoint(&dir, &self.train, step_state, tokenizer, &self.state, last)?;
        self.last_checkpoint = Some(dir);
        Ok(())
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// Where the run stands now, kept when it may have to stop (after each optimizer step).
    pub(super) fn at_step(&self) -> Result<Option<AtStep>> {
        if self.stop.is_none() {
            return Ok(None);
        }
        Ok(Some(AtStep {
            state: self.state.clone(),
            step: self.train.state()?,
        }))
    }

    /// The end of a stopped run: back to where its last optimizer step left it, saved there.
    pub(super) fn stopped(
        &mut self,
        at_step: Option<AtStep>,
        seconds: f64,
        texts_at_start: usize,
    ) -> Result<FineTuneReport> {
        let at = at_step.expect("a stoppable run keeps where it stood");
        self.state = at.state;
        self.train.zero_grad(); // the unfinished step's gradients are trained again on resume
        let step = self.train.step_count();
        if self.checkpoints.is_some() && self.last_checkpoint != self.checkpoint_dir(step) {
            self.save_as(&at.step)?;
        }
        let mut report = self.report(seconds, texts_at_start, 0, 0);
        report.interrupted = true;
        Ok(report)
    }

    /// A training step's error with the last checkpoint added.
    pub(super) fn explain(&self, e: Error) -> Error {
        with_last_checkpoint(e, &self.last_checkpoint)
    }
}
