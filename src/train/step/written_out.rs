//! The step's way into the written-out micro-steps (`kernels::lm_micro_step` and
//! `kernels::classifier_micro_step`): where they apply, the batch checked as the graph's loss
//! checks it, the dropout masks the model's layers would draw, and their gradient sums joined
//! to the graph's at the update.

use candle_core::{DType, Tensor};

use super::{TaskHead, TrainStep};
use crate::kernels::{self, DrawMask, LabelledBatch, Mask};
use crate::loss::{check_labels, IGNORE_INDEX, PER_SEQUENCE};
use crate::train::TrainPrecision;
use crate::{heads, Error, Result};

/// A micro-step's input: ids for the LM loss, or ids, attention mask and labels.
pub(super) enum Batch<'a> {
    Lm(&'a Tensor),
    Labelled((&'a Tensor, Option<&'a Tensor>, &'a Tensor)),
}

impl TrainStep {
    /// Whether a micro-step may take the written-out pass where it applies (f32 and pure bf16
    /// on the CPU; on by default). Off, every micro-step goes through the model's graph and
    /// candle's backward pass - what the tests compare the written-out pass with.
    pub fn set_written_out(&mut self, on: bool) {
        self.written_out = on;
    }

    /// Whether this step's micro-steps take the written-out pass: where it is on (the default),
    /// for weights on the CPU in f32 or in pure bf16 (its products in AMX tiles where the CPU
    /// has them, elsewhere gemm's f32 products on the bf16 values).
    pub fn takes_written_out_pass(&self) -> bool {
        let precision_fits = matches!(
            self.precision,
            TrainPrecision::F32 | TrainPrecision::Pure(DType::BF16)
        );
        let on_cpu = self.vars.first().is_some_and(|v| v.device().is_cpu());
        self.written_out && precision_fits && on_cpu
    }

    /// A classifier's logits `(B, num_labels)` for an evaluation, by the written-out forward
    /// pass (`kernels::classifier_logits`, which skips the padding after each row's last real
    /// token) where it applies: a classification step taking that pass in f32. `None`
    /// elsewhere - in bf16, where the model's own bf16 forward pass is the one evaluated.
    pub fn classify_written_out(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let classifies = matches!(self.task, TaskHead::SequenceClassification { .. });
        let f32_pass = self.precision == TrainPrecision::F32 && self.takes_written_out_pass();
        if !classifies || !f32_pass || !ids.device().is_cpu() {
            return Ok(None);
        }
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let params: Vec<Tensor> = self.vars.iter().map(|v| v.as_tensor().clone()).collect();
        let positions = heads::last_non_pad_positions(ids, self.cfg.pad_token_id)?;
        let b = positions.len();
        let logits =
            kernels::classifier_logits(&self.cfg, &names, &params, ids, attention_mask, positions)?;
        Ok(logits
            .map(|z| {
                let classes = z.len() / b.max(1);
                Tensor::from_vec(z, (b, classes), ids.device())
            })
            .transpose()?)
    }

    /// A micro-step by `kernels::lm_micro_step` or `kernels::classifier_micro_step`, where
    /// they apply: f32 or pure bf16 weights on the CPU, the batch of
    /// the step's task. `None` where they do
    /// not, with nothing done.
    pub(super) fn accumulate_written_out(
        &mut self,
        batch: Batch,
        loss_weight: f64,
    ) -> Result<Option<f32>> {
        let task_fits = matches!(
            (self.task, &batch),
            (TaskHead::LanguageModel, Batch::Lm(_))
                | (TaskHead::SequenceClassification { .. }, Batch::Labelled(_))
        );
        // Checked before the batch is read back to the host, which a GPU step would not need.
        if !task_fits || !self.takes_written_out_pass() {
            return Ok(None);
        }
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let params: Vec<Tensor> = self.vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (dropout, on) = (&self.dropout, self.dropout_on);
        // A layer of probability p made from the step's generator, as the model's are.
        let draw = |p: f32| -> Option<Mask> {
            let mut layer = dropout.with_p(p);
            layer.set_training(on);
            layer.next_mask()
        };
        let halt = self.halt_on_non_finite;
        let proceed = |loss: f32| Ok(loss.is_finite() || !halt);
        let (cfg, sums, weight) = (&self.cfg, &mut self.written, loss_weight as f32);
        let loss = match batch {
            Batch::Lm(ids) => {
                kernels::lm_micro_step(cfg, &names, &params, ids, weight, &draw, sums, proceed)?
            }
            Batch::Labelled((ids, attention_mask, labels)) => {
                check_labels(labels, &[ids.dim(0)?], PER_SEQUENCE)?;
                let labels: Vec<i64> = labels.to_dtype(DType::I64)?.to_vec1()?;
                if let Some(bad) = labels.iter().find(|&&l| l < 0 && l != IGNORE_INDEX) {
                    return Err(Error::InvalidArgument(format!(
                        "labels must be a class or -100 (ignored), found {bad}"
                    )));
                }
                let labels = labels
                    .iter()
                    .map(|&l| (l != IGNORE_INDEX).then_some(l as usize))
                    .collect();
                let batch = LabelledBatch {
                    ids,
                    attention_mask,
                    positions: heads::last_non_pad_positions(ids, cfg.pad_token_id)?,
                    labels,
                };
                kernels::classifier_micro_step(
                    cfg, &names, &params, batch, weight, &draw, sums, proceed,
                )?
            }
        };
        let Some(loss) = loss else {
            return Ok(None);
        };
        if !loss.is_finite() && halt {
            self.zero_grad();
            return Err(self.non_finite("loss", f64::from(loss)));
        }
        self.micro_steps += 1;
        Ok(Some(loss))
    }

    /// The gradients accumulated since the last update, by checkpoint name (a parameter that
    /// got none is left out), as the next update will read them.
    pub fn accumulated_gradients(&mut self) -> Result<Vec<(String, Tensor)>> {
        self.join_written_out()?;
        Ok(self
            .names
            .iter()
            .zip(&self.vars)
            .filter_map(|(name, var)| self.accumulated.get(var).map(|g| (name.clone(), g.clone())))
            .collect())
    }

    /// Joins the written-out micro-steps' sums to the graph's.
    pub(super) fn join_written_out(&mut self) -> Result<()> {
        if self.written.is_empty() {
            return Ok(());
        }
        for (var, sum) in self.vars.iter().zip(self.written.take()) {
            // Summed in f32; a bf16 model's gradients are rounded to bf16 once, here, and kept
            // in f32 (the update reads either; no second buffer is made).
            let mut sum = sum;
            if var.dtype() == DType::BF16 {
                kernels::round_to_bf16_in_place(&mut sum);
            }
            let g = Tensor::from_vec(sum, var.shape(), var.device())?;
            let total = match self.accumulated.remove(var) {
                Some(acc) => (acc.to_dtype(DType::F32)? + g)?,
                None => g,
            };
            self.accumulated.insert(var, total);
        }
        Ok(())
    }
}
