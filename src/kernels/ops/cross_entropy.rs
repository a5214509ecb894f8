//! The mean cross-entropy of the LM loss in one pass over the logits, which gives their
//! gradient in the same pass.

use std::borrow::Cow;
use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::cpu_float;
use super::custom_op::{apply, apply_no_bwd, CpuInputs, CpuKernel, Grads};
use crate::kernels::simd::{exp_fast, lane_max, lane_sum, simd_fn};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

/// `-sum_i weights[i] * log_softmax(logits[i])[targets[i]]` for `logits` `(N, V)` f32, `targets`
/// `(N)` u32 and `weights` `(N)` f32: the mean cross-entropy of [`crate::loss::cross_entropy`]
/// with the ignored rows weighted 0 and the others `1 / counted`. Differentiable in `logits`.
///
/// The plain path is a log-softmax, a gather, a product and a sum, and its backward pass
/// another five passes over the `(N, V)` logits (100 MB for a 500-token step of GPT-2), each
/// into a fresh buffer. Here one pass over the logits gives the loss and, when the logits are
/// tracked for a gradient, their gradient `w_i * (softmax - onehot)` too, which the backward
/// pass hands on. Returns `None` for other devices and dtypes.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Option<Tensor>> {
    if !cpu_float(&[logits]) || !cpu_float(&[weights]) || logits.rank() != 2 {
        return Ok(None);
    }
    let n = logits.dim(0)?;
    if targets.dtype() != DType::U32 || targets.dims() != [n] || weights.dims() != [n] {
        return Ok(None);
    }
    let op = CrossEntropy {
        keep_grad: logits.track_op(),
        grad: Mutex::new(None),
    };
    Ok(Some(apply(op, &[logits, targets, weights])?))
}

simd_fn! {
    /// One row: `e_j = w * e^(x_j - lse)` for the logits `x` (`None`: `e` holds them, and is
    /// overwritten in place), then `e_t -= w` (the gradient of `-w * log_softmax(x)_t` with
    /// respect to `x`); returns the row's loss `w * (lse - x_t)`. `e` is scratch when only the
    /// loss is wanted.
    pub(crate) fn cross_entropy_row(e: &mut [f32], x: Option<&[f32]>, t: usize, w: f32) -> f64 {
        let (max, xt) = match x {
            Some(x) => (lane_max(x), x[t]),
            None => (lane_max(e), e[t]),
        };
        match x {
            Some(x) => e.iter_mut().zip(x).for_each(|(e, &v)| *e = exp_fast(v - max)),
            None => e.iter_mut().for_each(|v| *v = exp_fast(*v - max)),
        }
        let sum = lane_sum(e);
        let lse = max + sum.ln();
        let scale = w / sum;
        for v in e.iter_mut() {
            *v *= scale;
        }
        e[t] -= w;
        f64::from(w) * f64::from(lse - xt)
    }
}

/// The mean cross-entropy of each row's logits `(B, classes)` against its label (`None`:
/// ignored), summed in row order in f64 as the loss kernel sums it; the logits become their
/// gradient.
pub(crate) fn classify_cross_entropy(
    logits: &mut [f32],
    labels: &[Option<usize>],
    classes: usize,
) -> f32 {
    let counted = labels.iter().flatten().count();
    let w = 1.0 / counted as f32;
    let rows = logits.chunks_exact_mut(classes);
    let mut loss = 0f64;
    for (e, label) in rows.zip(labels) {
        match label {
            None => e.fill(0.0),
            Some(label) => loss += cross_entropy_row(e, None, *label, w),
        }
    }
    loss as f32
}

/// Logits, targets, weights and the number of classes.
type CrossEntropyInputs<'a> = (Cow<'a, [f32]>, &'a [u32], Cow<'a, [f32]>, usize);

/// The rows' data of the three inputs, checked: logits `(N, V)`, targets in `[0, V)`.
fn cross_entropy_inputs<'a>(inputs: &CpuInputs<'a>) -> candle_core::Result<CrossEntropyInputs<'a>> {
    let (x, t, w) = (inputs.f32(0)?, inputs.data::<u32>(1)?, inputs.f32(2)?);
    let (_, v) = inputs.layout(0).shape().dims2()?;
    if let Some(bad) = t.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!(
            "{}: target {bad} is not below the {v} classes",
            CrossEntropy::NAME
        );
    }
    Ok((x, t, w, v))
}

/// The loss, and with `keep_grad` the gradient of the logits for an upstream gradient of 1,
/// computed in the same pass and kept for [`CpuKernel::bwd`].
struct CrossEntropy {
    keep_grad: bool,
    grad: Mutex<Option<Vec<f32>>>,
}

impl CpuKernel for CrossEntropy {
    const NAME: &'static str = "cross-entropy";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, t, w, v) = cross_entropy_inputs(inputs)?;
        let (x, w) = (&*x, &*w);
        let row = |e: &mut [f32], x: &[f32], t: u32, w: f32| {
            // Ignored rows (weight 0) add nothing and keep a zero gradient.
            if w == 0.0 {
                0.0
            } else {
                cross_entropy_row(e, Some(x), t as usize, w)
            }
        };
        let losses: Vec<f64> = if self.keep_grad {
            let mut grad = zeros_on_huge_pages(x.len());
            let losses = grad
                .par_chunks_mut(v)
                .zip(x.par_chunks(v))
                .zip(t.par_iter().zip(w.par_iter()))
                .map(|((e, x), (&t, &w))| row(e, x, t, w))
                .collect();
            *self
                .grad
                .lock()
                .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned".into()))? =
                Some(grad);
            losses
        } else {
            x.par_chunks(v)
                .zip(t.par_iter().zip(w.par_iter()))
                .map_init(|| vec![0f32; v], |e, (x, (&t, &w))| row(e, x, t, w))
                .collect()
        };
        // Summed in row order, in f64: the same bits whatever the number of threads.
        let loss = losses.iter().sum::<f64>() as f32;
        Ok((inputs.output(vec![loss]), Shape::from(())))
    }

    fn bwd(&self, inputs: &[&Tensor], _loss: &Tensor, g: &Tensor) -> Grads {
        let x = inputs[0]; // and the targets and weights
        let kept = self
            .grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned".into()))?
            .take();
        let dx = match kept {
            Some(grad) => Tensor::from_vec(grad, x.shape(), x.device())?,
            // Not kept (the logits were not tracked when the loss was computed), or already
            // handed out by an earlier backward pass: compute it again.
            None => {
                let mut op = CrossEntropy {
                    keep_grad: true,
                    grad: Mutex::new(None),
                };
                apply_no_bwd(&op, inputs)?;
                let grad = op.grad.get_mut().ok().and_then(Option::take);
                let grad = grad
                    .ok_or_else(|| candle_core::Error::Msg("cross-entropy: no gradient".into()))?;
                Tensor::from_vec(grad, x.shape(), x.device())?
            }
        };
        // Computed in f32; a half-precision loss wants its gradient in its own dtype.
        let dx = dx.to_dtype(x.dtype())?;
        let scale = g.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let dx = if scale == 1.0 {
            dx
        } else {
            (dx * f64::from(scale))?
        };
        Ok(vec![Some(dx), None, None])
    }
}
