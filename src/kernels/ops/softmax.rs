//! The attention scores' scale, mask and softmax in one pass, and its backward pass in one;
//! the row functions are the attention kernels' too.

use candle_core::{CpuStorage, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::{apply, apply_no_bwd, CpuInputs, CpuKernel, Grads};
use super::custom_op::{cpu_float, mask_fits};
use crate::kernels::simd::{exp_fast, lane_max, lane_sum, simd_fn};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

/// `softmax(where(mask, att * scale, lowest))` over the last dimension, as the plain attention
/// computes it: `att` is `(B, nh, T, S)` on the CPU, `mask` (if any) `(B or 1, 1, T or 1, S)`
/// u8 with 1 where attention is allowed. A masked score gets f32's lowest value, so a row with
/// nothing allowed (a padding query) comes out uniform, as in transformers. Differentiable.
/// Returns `None` for other devices, dtypes or shapes; the caller then takes the plain path.
pub fn scaled_masked_softmax(
    att: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !cpu_float(&[att]) || att.rank() != 4 {
        return Ok(None);
    }
    let (b, _, t, s) = att.dims4()?;
    let op = MaskedSoftmax {
        scale: scale as f32,
    };
    match mask {
        None => Ok(Some(apply(op, &[att])?)),
        Some(m) if mask_fits(m, (b, t, s)) => Ok(Some(apply(op, &[att, m])?)),
        Some(_) => Ok(None),
    }
}

/// Where row `r` of the `(B, nh, T, S)` scores finds its mask row, for a mask of
/// `(mb, 1, mt, S)`.
#[derive(Clone, Copy)]
pub(crate) struct MaskIndex {
    nh: usize,
    t: usize,
    mb: usize,
    mt: usize,
}

impl MaskIndex {
    /// The mask at input `i` of `inputs`, if the call has one, and its index for scores
    /// `(B, nh, T, S)` given as `(B, nh, T)`.
    pub(crate) fn of_input<'a>(
        inputs: &CpuInputs<'a>,
        i: usize,
        (_, nh, t): (usize, usize, usize),
    ) -> candle_core::Result<Option<(&'a [u8], Self)>> {
        if inputs.len() <= i {
            return Ok(None);
        }
        let (mb, _, mt, _) = inputs.layout(i).shape().dims4()?;
        Ok(Some((inputs.data(i)?, Self { nh, t, mb, mt })))
    }

    /// A mask `(mb, 1, mt, S)` (`mb` 1 or B, `mt` 1 or T) for scores `(B, nh, T, S)`.
    pub(crate) fn new((nh, t): (usize, usize), mb: usize, mt: usize) -> Self {
        Self { nh, t, mb, mt }
    }

    /// Index of the mask row (of length S) for score row `r`.
    pub(crate) fn row(&self, r: usize) -> usize {
        let (bi, ti) = (r / (self.nh * self.t), r % self.t);
        let bi = if self.mb == 1 { 0 } else { bi };
        let ti = if self.mt == 1 { 0 } else { ti };
        bi * self.mt + ti
    }
}

simd_fn! {
    /// One row of the forward pass: `y = softmax(where(m, x * scale, lowest))`.
    pub(crate) fn masked_softmax_row(y: &mut [f32], x: &[f32], m: Option<&[u8]>, scale: f32) {
        match m {
            Some(m) => {
                for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
                    *y = if m != 0 { x * scale } else { f32::MIN };
                }
            }
            None => {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * scale;
                }
            }
        }
        // exp(lowest - max) is 0 whenever anything in the row is allowed (exp_fast gives 0
        // below -87, as expf does); a fully masked row has max == lowest and comes out uniform,
        // as on the plain path.
        let max = lane_max(y);
        for y in y.iter_mut() {
            *y = exp_fast(*y - max);
        }
        let inv = 1.0 / lane_sum(y);
        for y in y.iter_mut() {
            *y *= inv;
        }
    }
}

simd_fn! {
    /// One row of the backward pass: `dx = m ? scale * y * (g - sum(g * y)) : 0` (the where
    /// picks no gradient for masked scores, the softmax's Jacobian gives `y * (g - <g, y>)`).
    pub(crate) fn masked_softmax_grad_row(dx: &mut [f32], y: &[f32], g: &[f32], m: Option<&[u8]>, scale: f32) {
        let mut acc = [0f32; 8];
        for (y, g) in y.chunks(8).zip(g.chunks(8)) {
            for ((a, y), g) in acc.iter_mut().zip(y).zip(g) {
                *a += y * g;
            }
        }
        let dot = lane_sum(&acc);
        match m {
            Some(m) => {
                for (((dx, y), g), &m) in dx.iter_mut().zip(y).zip(g).zip(m) {
                    *dx = if m != 0 { scale * (y * (g - dot)) } else { 0.0 };
                }
            }
            None => {
                for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = scale * (y * (g - dot));
                }
            }
        }
    }
}

struct MaskedSoftmax {
    scale: f32,
}

/// With one input, the scores; with two, the scores and the mask.
impl CpuKernel for MaskedSoftmax {
    const NAME: &'static str = "scaled-masked-softmax";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, xl) = (&*inputs.f32(0)?, inputs.layout(0));
        let (b, nh, t, s) = xl.shape().dims4()?;
        let mask = MaskIndex::of_input(inputs, 1, (b, nh, t))?;
        let mut y = zeros_on_huge_pages(x.len());
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let m = mask.map(|(m, idx)| &m[idx.row(r) * s..][..s]);
                masked_softmax_row(y, x, m, self.scale);
            });
        Ok((inputs.output(y), xl.shape().clone()))
    }

    /// The gradient of the scores (the mask has none), from the output.
    fn bwd(&self, inputs: &[&Tensor], y: &Tensor, g: &Tensor) -> Grads {
        let grad = MaskedSoftmaxGrad { scale: self.scale };
        let mut args = vec![y, g];
        args.extend(inputs.get(1).copied()); // the mask
        let dx = apply_no_bwd(grad, &args)?;
        Ok(vec![Some(dx), None])
    }
}

/// The backward pass of [`MaskedSoftmax`]: from its output `y` and the gradient `g` of `y`.
struct MaskedSoftmaxGrad {
    scale: f32,
}

/// With two inputs, the output and its gradient; with three, the mask as well.
impl CpuKernel for MaskedSoftmaxGrad {
    const NAME: &'static str = "scaled-masked-softmax-grad";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g, yl) = (&*inputs.f32(0)?, &*inputs.f32(1)?, inputs.layout(0));
        let (b, nh, t, s) = yl.shape().dims4()?;
        let mask = MaskIndex::of_input(inputs, 2, (b, nh, t))?;
        let mut dx = zeros_on_huge_pages(y.len());
        dx.par_chunks_mut(s)
            .zip(y.par_chunks(s).zip(g.par_chunks(s)))
            .enumerate()
            .for_each(|(r, (dx, (y, g)))| {
                let m = mask.map(|(m, idx)| &m[idx.row(r) * s..][..s]);
                masked_softmax_grad_row(dx, y, g, m, self.scale);
            });
        Ok((inputs.output(dx), yl.shape().clone()))
    }
}
