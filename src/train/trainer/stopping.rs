//! Where the Trainer writes and how it stops: checkpoints that only ever hold finite weights,
//! a stop between two steps that saves where the last one left the run, the divergence guard's
//! errors, and the schedule changes a resumed run may make.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{Trainer, TrainerState};
use crate::train::args::Interval;
use crate::train::checkpoint::{save_finite_checkpoint, with_last_checkpoint};
use crate::train::resume::ResumeChanges;
use crate::train::run_dir::RunDir;
use crate::train::step::TrainStepState;
use crate::{Error, Result};

impl Trainer<'_> {
    /// Changes the schedule of a resumed run - `learning_rate`, `warmup_steps`, `max_steps` or
    /// `num_train_epochs` - from the next optimizer step on, and records the change in the
    /// state. The model, the data and the batches stay the checkpoint's.
    pub fn change_schedule(&mut self, changes: ResumeChanges) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let steps = self.train_step.step_count();
        changes.check(steps, self.state.epoch)?;
        let mut args = self.state.args.clone();
        args.learning_rate = changes.lr.unwrap_or(args.learning_rate);
        args.warmup_steps = changes.warmup.unwrap_or(args.warmup_steps);
        args.max_steps = changes.max_steps.or(args.max_steps);
        args.num_train_epochs = changes.epochs.unwrap_or(args.num_train_epochs);
        args.validate()?;
        let max_steps = args.total_steps(self.train_data.len());
        let change = changes.applied(steps, max_steps)?;
        self.schedule = args.schedule(max_steps);
        self.state.args = args;
        self.state.max_steps = max_steps;
        self.state.schedule_changes.push(change);
        Ok(())
    }

    /// Stops training when `stop` becomes true (a Ctrl-C handler sets it): at the next batch,
    /// with a checkpoint of where the run stood after its last optimizer step (the batches of
    /// the unfinished step are trained again on resume); [`Trainer::interrupted`] says so.
    pub fn stop_when(&mut self, stop: Arc<AtomicBool>) {
        self.stop = Some(stop);
    }

    /// Whether the last [`Trainer::train`] was stopped before its end.
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// The last checkpoint written or resumed from.
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_deref()
    }

    /// Where the run stands now, kept when it may have to stop (after each optimizer step).
    pub(super) fn at_step(&self) -> Result<Option<(TrainerState, TrainStepState)>> {
        match self.stop {
            Some(_) => Ok(Some((self.state.clone(), self.train_step.state()?))),
            None => Ok(None),
        }
    }

    /// The end of a stopped run: back to where its last optimizer step left it, saved there.
    pub(super) fn stopped(
        &mut self,
        at_step: Option<(TrainerState, TrainStepState)>,
    ) -> Result<()> {
        let (state, step_state) = at_step.expect("a stoppable run keeps where it stood");
        self.state = state;
        self.train_step.zero_grad();
        let step = self.train_step.step_count();
        let saves = self.state.args.save_strategy != Interval::No;
        if saves && self.last_checkpoint.as_deref() != Some(&self.checkpoint_dir(step)) {
            self.save_as(&step_state)?;
        }
        Ok(())
    }

    pub(super) fn save(&mut self) -> Result<PathBuf> {
        let now = self.train_step.state()?;
        self.save_as(&now)
    }

    /// Saves a checkpoint with the training step's own state `step_state`.
    pub(super) fn save_as(&mut self, step_state: &TrainStepState) -> Result<PathBuf> {
        if self.out.is_none() {
            let args = &self.state.args;
            let (path, overwrite) = (args.output_dir.clone(), args.overwrite_output_dir);
            self.out = Some(match &self.resumed_from {
                Some(from) => RunDir::resumed(path, from, overwrite)?,
                None => RunDir::fresh(path, overwrite)?,
            });
        }
        let dir = self.checkpoint_dir(self.train_step.step_count());
        let (train, last) = (&self.train_step, &self.last_checkpoint);
        save_finite_checkpoint(&dir, train, step_state, &self.tokenizer, &self.state, last)?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// A training step's error with the last checkpoint added.
    pub(super) fn explain(&self, e: Error) -> Error {
        with_last_checkpoint(e, &self.last_checkpoint)
    }
}
