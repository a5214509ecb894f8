//! What the tutorial's loop does not have, kept beside it: the progress bars, where the run
//! stood after its last optimizer step (what a Ctrl-C saves), the checkpoints every
//! `save_steps`, and the end at `max_steps`.

use std::time::Instant;

use super::{AtStep, LmFineTuner};
use crate::train::history::StepRecord;
use crate::train::progress::EpochBar;
use crate::Result;

/// The plumbing of one call of [`LmFineTuner::run`].
pub(super) struct Watch {
    started: Instant,
    /// Texts read before this call (a resumed run's rate counts only its own).
    pub(super) texts_at_start: usize,
    /// Where the run stood after its last optimizer step, when it may have to stop.
    pub(super) at_step: Option<AtStep>,
    /// With `max_steps`, one bar over the steps (an epoch's would jump to its end there).
    steps_bar: Option<EpochBar>,
    epoch_bar: Option<EpochBar>,
}

impl Watch {
    pub(super) fn new(tuner: &LmFineTuner) -> Result<Self> {
        let steps = tuner.train.step_count();
        let max_steps = tuner.state.settings.max_steps;
        Ok(Self {
            started: Instant::now(),
            texts_at_start: tuner.state.texts_seen,
            at_step: tuner.at_step()?,
            steps_bar: max_steps.map(|max| EpochBar::steps(max, steps, tuner.progress)),
            epoch_bar: None,
        })
    }

    /// Seconds since the run started.
    pub(super) fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn bar(&mut self) -> Option<&mut EpochBar> {
        self.epoch_bar.as_mut().or(self.steps_bar.as_mut())
    }

    /// An epoch begins (or resumes where the checkpoint left it).
    pub(super) fn epoch_starts(&mut self, tuner: &LmFineTuner) {
        if self.steps_bar.is_some() {
            return;
        }
        let (state, n) = (&tuner.state, tuner.tokenized.len() as u64);
        let epochs = state.settings.epochs;
        let mut bar = EpochBar::new(state.epoch, epochs, n, "texts", tuner.progress);
        bar.resume_at(state.position as u64);
        self.epoch_bar = Some(bar);
    }

    /// A text was read: the epoch's bar moves.
    pub(super) fn text_read(&mut self, tuner: &LmFineTuner) {
        if let Some(bar) = &mut self.epoch_bar {
            bar.set_position(tuner.state.position as u64);
        }
    }

    /// After an optimizer step (or one that mixed f16 skipped, `None`): the bars, where the
    /// run stands, a checkpoint if one is due. True when `max_steps` is reached.
    pub(super) fn stepped(
        &mut self,
        tuner: &mut LmFineTuner,
        record: Option<StepRecord>,
    ) -> Result<bool> {
        self.at_step = tuner.at_step()?;
        let Some(record) = record else {
            return Ok(false);
        };
        let by_steps = self.steps_bar.is_some();
        if let Some(bar) = self.bar() {
            if by_steps {
                bar.set_position(record.step as u64);
            }
            bar.show(record.loss, record.lr);
        }
        let step = tuner.train.step_count();
        if let Some(every) = tuner.state.settings.save_steps {
            if step.is_multiple_of(every) {
                tuner.save()?;
            }
        }
        Ok(tuner.done())
    }

    /// The epoch's bar is done.
    pub(super) fn epoch_ends(&mut self) {
        if let Some(bar) = self.epoch_bar.take() {
            bar.finish();
        }
    }

    /// Every bar is done.
    pub(super) fn finish_bars(&mut self) {
        self.epoch_ends();
        if let Some(bar) = self.steps_bar.take() {
            bar.finish();
        }
    }
}
