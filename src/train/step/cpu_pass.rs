//! The step's way into the written-out micro-step (`written_out::micro_step`): where it
//! applies, the batch checked as the graph's loss
//! checks it, the dropout masks the model's layers would draw, and their gradient sums joined
//! to the graph's at the update.

use candle_core::{DType, Tensor};

use super::{TaskHead, TrainStep, UpdateReport};
use crate::kernels::{self, DrawMask, Mask};
use crate::loss::{check_label_shape, IGNORE_INDEX, PER_SEQUENCE};
use crate::train::clip::{clip_grad_norm_of_slices, grad_norm_of_slices};
use crate::train::precision::TrainPrecision;
use crate::written_out::{self, Gpt2Params, LabelledBatch, MicroStep, Tokens};
use crate::{heads, Error, Result};

/// A micro-step's input: ids for the LM loss (a `(B, T)` tensor, or one sequence on the host),
/// or ids, attention mask and labels.
pub(super) enum Batch<'a> {
    Lm(&'a Tensor),
    Sequence(&'a [u32]),
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
        let on_cpu = self
            .params
            .vars
            .first()
            .is_some_and(|v| v.device().is_cpu());
        self.written_out && precision_fits && on_cpu
    }

    /// A classifier's logits `(B, num_labels)` for an evaluation, by the written-out forward
    /// pass (`written_out::classifier_logits`, which skips the padding after each row's last real
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
        let (names, params) = self.params.named();
        let positions = heads::last_non_pad_positions(ids, self.cfg.pad_token_id)?;
        let b = positions.len();
        let model = Gpt2Params {
            cfg: &self.cfg,
            names: &names,
            params: &params,
        };
        let logits = written_out::classifier_logits(model, ids, attention_mask, positions)?;
        Ok(logits
            .map(|z| {
                let classes = z.len() / b.max(1);
                Tensor::from_vec(z, (b, classes), ids.device())
            })
            .transpose()?)
    }

    /// A micro-step by `written_out::micro_step` where it applies: f32 or pure bf16 weights on
    /// the CPU, the batch of the step's task. `None` where it does not, with nothing done.
    pub(super) fn accumulate_written_out(
        &mut self,
        batch: Batch,
        loss_weight: f64,
    ) -> Result<Option<f32>> {
        let task_fits = matches!(
            (self.task, &batch),
            (TaskHead::LanguageModel, Batch::Lm(_) | Batch::Sequence(_))
                | (TaskHead::SequenceClassification { .. }, Batch::Labelled(_))
        );
        // Checked before the batch is read back to the host, which a GPU step would not need.
        if !task_fits || !self.takes_written_out_pass() {
            return Ok(None);
        }
        let (names, params) = self.params.named();
        let (dropout, on) = (&self.dropout, self.dropout_on);
        // A layer of probability p made from the step's generator, as the model's are.
        let draw = |p: f32| -> Option<Mask> {
            let mut layer = dropout.with_p(p);
            layer.set_training(on);
            layer.next_mask()
        };
        let halt = self.halt_on_non_finite;
        let micro = MicroStep {
            loss_weight: loss_weight as f32,
            draw: &draw,
            proceed: |loss: f32| Ok(loss.is_finite() || !halt),
        };
        let cfg = &self.cfg;
        let model = Gpt2Params {
            cfg,
            names: &names,
            params: &params,
        };
        let host_ids: Vec<u32>;
        let batch = match batch {
            Batch::Lm(ids) => {
                let (b, t) = ids.dims2()?;
                host_ids = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
                written_out::Batch::Lm(Tokens {
                    ids: &host_ids,
                    b,
                    t,
                })
            }
            Batch::Sequence(ids) => written_out::Batch::Lm(Tokens::one(ids)),
            Batch::Labelled((ids, attention_mask, labels)) => {
                check_label_shape(labels, &[ids.dim(0)?], PER_SEQUENCE)?;
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
                written_out::Batch::Labelled(LabelledBatch {
                    ids,
                    attention_mask,
                    positions: heads::last_non_pad_positions(ids, cfg.pad_token_id)?,
                    labels,
                })
            }
        };
        let loss = written_out::micro_step(model, batch, micro, &mut self.accumulated.written)?;
        let Some(loss) = loss else {
            return Ok(None);
        };
        if !loss.is_finite() && halt {
            self.zero_grad();
            return Err(self.non_finite("loss", f64::from(loss)));
        }
        self.accumulated.micro_steps += 1;
        Ok(Some(loss))
    }

    /// The gradients accumulated since the last update, by checkpoint name (a parameter that
    /// got none is left out), as the next update will read them.
    pub fn accumulated_gradients(&mut self) -> Result<Vec<(String, Tensor)>> {
        self.join_written_out()?;
        Ok(self
            .params
            .names
            .iter()
            .zip(&self.params.vars)
            .filter_map(|(name, var)| {
                self.accumulated
                    .graph
                    .get(var)
                    .map(|g| (name.clone(), g.clone()))
            })
            .collect())
    }

    /// The update from the written-out micro-steps' sums alone (no loss scaling, nothing from
    /// the graph): clipped and handed to AdamW's in-place update as the host buffers they are,
    /// with the arithmetic of the tensors' way ([`TrainStep::apply`]). `None`, with nothing
    /// done, where the graph added to the gradients too, or the loss is scaled.
    pub(super) fn apply_written_out(
        &mut self,
        lr: Option<f64>,
        max_grad_norm: Option<f64>,
    ) -> Result<Option<UpdateReport>> {
        let graph_empty = self.accumulated.graph.get_ids().next().is_none();
        if self.scaler.is_some() || !graph_empty || self.accumulated.written.is_empty() {
            return Ok(None);
        }
        let mut sums = self.accumulated.written.take();
        self.accumulated.micro_steps = 0;
        for (var, sum) in self.params.vars.iter().zip(&mut sums) {
            // Summed in f32; a bf16 model's gradients are rounded to bf16 once, here, and kept
            // in f32 (the update reads either).
            if var.dtype() == DType::BF16 {
                kernels::round_to_bf16_in_place(sum);
            }
        }
        let norm = match max_grad_norm {
            Some(max) => clip_grad_norm_of_slices(&mut sums, max),
            None => grad_norm_of_slices(&sums),
        };
        let report = self.update_with(norm, lr, None, |opt| opt.step_from_slices(&sums))?;
        Ok(Some(report))
    }

    /// Joins the written-out micro-steps' sums to the graph's.
    pub(super) fn join_written_out(&mut self) -> Result<()> {
        if self.accumulated.written.is_empty() {
            return Ok(());
        }
        for (var, sum) in self.params.vars.iter().zip(self.accumulated.written.take()) {
            // Summed in f32; a bf16 model's gradients are rounded to bf16 once, here, and kept
            // in f32 (the update reads either; no second buffer is made).
            let mut sum = sum;
            if var.dtype() == DType::BF16 {
                kernels::round_to_bf16_in_place(&mut sum);
            }
            let g = Tensor::from_vec(sum, var.shape(), var.device())?;
            let total = match self.accumulated.graph.remove(var) {
                Some(acc) => (acc.to_dtype(DType::F32)? + g)?,
                None => g,
            };
            self.accumulated.graph.insert(var, total);
        }
        Ok(())
    }
}
