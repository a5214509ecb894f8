//! The learning-rate schedule of both fine-tuning chapters: transformers'
//! `get_linear_schedule_with_warmup` (`optimization.py`), as a value.
//!
//! transformers wraps a function of the step in PyTorch's `LambdaLR`, which multiplies the
//! optimizer's base learning rate by it. The scheduler is stepped *after* each optimizer step,
//! so the optimizer step with 0-based index `k` runs at `base_lr · factor(k)` - and the very
//! first one, with warm-up, at factor 0: the tutorial's first update does nothing.

use serde::{Deserialize, Serialize};

// ANCHOR: schedule
/// Linear warm-up from 0 to `base_lr` over `warmup_steps`, then linear decay to 0 at
/// `total_steps`.
///
/// `total_steps: None` is transformers' `num_training_steps=-1`, the tutorial's choice. Its
/// formula then gives `max(0, (-1 - k) / max(1, -1 - W))`, a negative number clamped to 0: the
/// learning rate warms up and, once warm-up is over, drops to 0 for good. The tutorial never
/// got there - its last printed rate, 1.16e-6, puts 5 epochs of the jokes at about 1,933
/// optimizer steps (inferred from the rounded rate), far short of its 5,000 warm-up steps - so
/// its learning rate only ever rose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearSchedule {
    /// The peak learning rate, reached at the end of warm-up: the optimizer's `lr` that
    /// `LambdaLR` multiplies.
    pub base_lr: f64,
    /// Optimizer steps of linear warm-up from 0 (`num_warmup_steps`); 0 starts at `base_lr`.
    pub warmup_steps: usize,
    /// The optimizer step at which the decay reaches 0 (`num_training_steps`); `None` is
    /// transformers' `-1` (see above).
    pub total_steps: Option<usize>,
}

impl LinearSchedule {
    /// The schedule `get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)`
    /// gives an optimizer whose learning rate is `base_lr`.
    pub fn new(base_lr: f64, warmup_steps: usize, total_steps: Option<usize>) -> Self {
        Self {
            base_lr,
            warmup_steps,
            total_steps,
        }
    }

    /// transformers' `_get_linear_schedule_with_warmup_lr_lambda(step)`, term for term
    /// (integer differences, then one division in f64).
    pub fn factor(&self, step: usize) -> f64 {
        let (k, w) = (step as i64, self.warmup_steps as i64);
        if k < w {
            return k as f64 / w.max(1) as f64;
        }
        let n = self.total_steps.map_or(-1, |n| n as i64);
        ((n - k) as f64 / (n - w).max(1) as f64).max(0.0)
    }

    /// The learning rate of the optimizer step with 0-based index `step` - equally, what
    /// `scheduler.get_last_lr()` prints after `step` optimizer steps, which is what a run's
    /// history records for the step before (the tutorial appends it after `scheduler.step()`).
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }
}
// ANCHOR_END: schedule
