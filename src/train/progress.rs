//! Progress bars for long training runs, as tqdm draws them in the tutorial's notebooks: one
//! bar per epoch with the loss, the learning rate and the throughput. Drawn with indicatif
//! under the `progress` feature; without it the bars are hidden and cost nothing.

use std::io::IsTerminal;
use std::time::Instant;

#[cfg(feature = "progress")]
use indicatif::{ProgressBar, ProgressStyle};

/// Without the `progress` feature: a bar that draws nothing.
#[cfg(not(feature = "progress"))]
struct ProgressBar;

#[cfg(not(feature = "progress"))]
impl ProgressBar {
    fn set_position(&self, _pos: u64) {}
    fn set_message(&self, _message: String) {}
    fn finish(&self) {}
    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Whether to draw bars: not when `quiet`, not when standard output goes to a file or a pipe
/// (a log full of redraws helps no one), and never in a build without the `progress` feature.
pub fn bars_wanted(quiet: bool) -> bool {
    cfg!(feature = "progress") && !quiet && std::io::stdout().is_terminal()
}

/// One epoch's bar, counting `unit`s (jokes, samples).
pub(crate) struct EpochBar {
    bar: ProgressBar,
    unit: &'static str,
    started: Instant,
    /// Where the bar started (after a resume, part of the epoch was done before).
    start: u64,
    done: u64,
}

impl EpochBar {
    /// A bar over `len` units, drawn on standard error, or a hidden one when `visible` is false.
    pub fn new(epoch: usize, epochs: usize, len: u64, unit: &'static str, visible: bool) -> Self {
        Self::with_prefix(format!("epoch {}/{epochs}", epoch + 1), len, unit, visible)
    }

    /// One bar over a run's optimizer steps, for a run that stops at `max_steps` (an epoch's
    /// bar would jump to its end there), starting at the `done` steps a resumed run has.
    pub fn steps(max_steps: usize, done: usize, visible: bool) -> Self {
        let mut bar = Self::with_prefix("steps".into(), max_steps as u64, "steps", visible);
        bar.resume_at(done as u64);
        bar
    }

    fn with_prefix(prefix: String, len: u64, unit: &'static str, visible: bool) -> Self {
        #[cfg(feature = "progress")]
        let bar = {
            let bar = if visible {
                ProgressBar::new(len)
            } else {
                ProgressBar::hidden()
            };
            let style = ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(prefix);
            bar
        };
        #[cfg(not(feature = "progress"))]
        let bar = {
            let _ = (prefix, len, visible);
            ProgressBar
        };
        Self {
            bar,
            unit,
            started: Instant::now(),
            start: 0,
            done: 0,
        }
    }

    /// Starts the bar at `pos` units already done (a resumed epoch); the rate counts from here.
    pub fn resume_at(&mut self, pos: u64) {
        self.start = pos;
        self.set_position(pos);
    }

    /// Moves the bar to `pos` units done this epoch.
    pub fn set_position(&mut self, pos: u64) {
        self.done = pos;
        self.bar.set_position(pos);
    }

    /// Shows the latest loss and learning rate, and units per second so far.
    pub fn show(&self, loss: f64, lr: f64) {
        self.bar.set_message(format!(
            "loss {loss:.4}, lr {lr:.3e}, {:.1} {}/s",
            self.rate(),
            self.unit
        ));
    }

    /// Units per second since the bar started.
    pub fn rate(&self) -> f64 {
        self.done.saturating_sub(self.start) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Runs `f` (which prints) with the bar cleared, then draws the bar again: lines printed
    /// while a bar is drawn would otherwise be overwritten by its next redraw.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Leaves the finished bar on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }
}
