//! What a resumed run may change: the optimizer's schedule, never the model, the data or the
//! packing. So the divergence guard's advice - resume from the last good checkpoint with a
//! lower learning rate - can be followed, and a finished run can be extended by more epochs
//! or steps. Each change is recorded in the run's history with the step it took effect at.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Changes a resumed run makes to its schedule; `None` keeps the checkpoint's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumeChanges {
    /// The peak learning rate (the schedule is recomputed from it).
    pub lr: Option<f64>,
    /// Warm-up steps.
    pub warmup: Option<usize>,
    /// Stop after this many optimizer steps in all (more than the checkpoint has made).
    pub max_steps: Option<usize>,
    /// Train this many epochs in all (at least the epoch under way).
    pub epochs: Option<usize>,
}

/// One resume that changed the schedule, as the history records it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleChange {
    /// The optimizer steps made before the change: it applies from step `after_step + 1`.
    pub after_step: usize,
    /// What changed.
    pub changes: ResumeChanges,
}

impl ResumeChanges {
    /// Whether anything changes.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the changes make sense for a run that has made `steps` optimizer steps and is in
    /// epoch `epoch` (0-based); the error names the field.
    pub fn check(&self, steps: usize, epoch: usize) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if let Some(lr) = self.lr {
            if !(lr.is_finite() && lr >= 0.0) {
                return bad(format!(
                    "lr is {lr}: a learning rate is a finite number >= 0"
                ));
            }
        }
        if let Some(max) = self.max_steps {
            if max <= steps {
                return bad(format!(
                    "max_steps is {max} but the checkpoint has made {steps} optimizer steps: give more to train on"
                ));
            }
        }
        if let Some(epochs) = self.epochs {
            if epochs <= epoch {
                return bad(format!(
                    "epochs is {epochs} but the checkpoint is in epoch {} already: give at least {}",
                    epoch + 1,
                    epoch + 1
                ));
            }
        }
        Ok(())
    }

    /// The record of these changes, once the run re-planned with them makes `total_steps`
    /// optimizer steps and has made `steps`; an error when no step would be left to train.
    pub fn applied(self, steps: usize, total_steps: usize) -> Result<ScheduleChange> {
        if total_steps <= steps {
            return Err(Error::InvalidArgument(format!(
                "with these changes the run makes {total_steps} optimizer steps, and the checkpoint has made {steps}: give more epochs or a larger max_steps"
            )));
        }
        Ok(ScheduleChange {
            after_step: steps,
            changes: self,
        })
    }
}
