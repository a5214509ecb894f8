//! What a training run records at every optimizer step, and the files it is written to: a CSV
//! to plot or read in a spreadsheet, and the same in JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::resume::ScheduleChange;
#[cfg(feature = "plot")]
use crate::plot::{loss_lr_chart, StepPoint};
use crate::{Error, Result};

/// One optimizer step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based optimizer step.
    pub step: usize,
    /// 0-based epoch the step finished in.
    pub epoch: usize,
    /// The loss of the step's last sequence: what the tutorial's `losses.append(loss.item())`
    /// keeps.
    pub loss: f64,
    /// The mean loss of all the sequences the step's gradients came from.
    pub mean_loss: f64,
    /// The learning rate recorded after the step, as the tutorial records it:
    /// `scheduler.get_last_lr()[0]` after `scheduler.step()`, the rate the *next* step runs at
    /// (so a run warming up from 0 records `lr/warmup` first). The step itself ran at the
    /// schedule's value one step earlier ([`LinearSchedule::lr`](super::LinearSchedule::lr)`(step - 1)`).
    pub lr: f64,
}

/// Where a run stood at the end of an epoch: what the tutorial prints there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochEnd {
    /// 0-based epoch.
    pub epoch: usize,
    /// Optimizer steps made by the end of the epoch.
    pub optimizer_steps: usize,
    /// Sequences trained by the end of the epoch.
    pub sequences: usize,
    /// The learning rate the next step would run at: the tutorial's
    /// `scheduler.get_last_lr()`.
    pub lr: f64,
}

/// Every optimizer step of a run, in order, and every epoch's end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Every optimizer step, in order.
    pub steps: Vec<StepRecord>,
    /// Every finished epoch, in order (a JSON file without it reads as none).
    #[serde(default)]
    pub epochs: Vec<EpochEnd>,
    /// Every resume that changed the schedule, in order.
    #[serde(default)]
    pub schedule_changes: Vec<ScheduleChange>,
}

const CSV_HEADER: &str = "step,epoch,loss,mean_loss,lr";

impl History {
    /// Records one more optimizer step.
    pub fn push(&mut self, record: StepRecord) {
        self.steps.push(record);
    }

    /// The last step of each epoch that had one (where the chart draws its epoch lines).
    pub fn epoch_ends(&self) -> Vec<usize> {
        let mut ends: Vec<usize> = Vec::new();
        for pair in self.steps.windows(2) {
            if pair[1].epoch != pair[0].epoch {
                ends.push(pair[0].step);
            }
        }
        ends.extend(self.steps.last().map(|r| r.step));
        ends
    }

    /// The points a loss-and-lr chart draws.
    #[cfg(feature = "plot")]
    pub fn points(&self) -> Vec<StepPoint> {
        self.steps
            .iter()
            .map(|r| StepPoint {
                step: r.step,
                loss: r.loss,
                lr: r.lr,
            })
            .collect()
    }

    /// The tutorial's figure of this run: loss and learning rate per optimizer step on one log
    /// axis, a dashed line at each epoch's end (SVG text). With the `plot` feature.
    #[cfg(feature = "plot")]
    pub fn chart(&self) -> Result<String> {
        loss_lr_chart(
            "Loss and learning rate per optimizer step",
            &self.points(),
            &self.epoch_ends(),
        )
    }

    /// The CSV text: a header, then one line per step (floats in Rust's shortest round-trip
    /// form, so reading the file back gives the same numbers).
    pub fn to_csv(&self) -> String {
        let mut csv = format!("{CSV_HEADER}\n");
        for r in &self.steps {
            csv.push_str(&format!(
                "{},{},{:?},{:?},{:?}\n",
                r.step, r.epoch, r.loss, r.mean_loss, r.lr
            ));
        }
        csv
    }

    /// Reads what [`History::to_csv`] wrote.
    pub fn from_csv(text: &str, origin: &Path) -> Result<Self> {
        let bad = |line: usize, why: &str| {
            Error::InvalidArgument(format!(
                "{}:{line}: {why}; a training history CSV has the columns {CSV_HEADER}",
                origin.display()
            ))
        };
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(CSV_HEADER) {
            return Err(bad(1, "unexpected header"));
        }
        let mut steps = Vec::new();
        for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            let [step, epoch, loss, mean_loss, lr] = fields[..] else {
                return Err(bad(i + 2, "expected 5 fields"));
            };
            let int = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|e| bad(i + 2, &e.to_string()))
            };
            let float = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .map_err(|e| bad(i + 2, &e.to_string()))
            };
            steps.push(StepRecord {
                step: int(step)?,
                epoch: int(epoch)?,
                loss: float(loss)?,
                mean_loss: float(mean_loss)?,
                lr: float(lr)?,
            });
        }
        Ok(Self {
            steps,
            ..Self::default()
        })
    }

    /// Writes `history.csv` (the steps) and `history.json` (steps, epochs and schedule
    /// changes) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let csv = dir.join("history.csv");
        std::fs::write(&csv, self.to_csv()).map_err(|e| Error::io(&csv, e))?;
        let json = dir.join("history.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::InvalidArgument(format!("history as JSON: {e}")))?;
        std::fs::write(&json, text).map_err(|e| Error::io(&json, e))
    }
}
