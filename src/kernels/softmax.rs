//! The attention scores' scale, mask and softmax in one pass, and its backward pass in one;
//! the row functions are the attention kernels' too.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::simd::{exp_fast, lane_max, lane_sum, simd_fn};
use super::{contiguous_f32, contiguous_u8, cpu_f32, mask_fits};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

/// `softmax(where(mask, att * scale, lowest))` over the last dimension, as the plain attention
/// computes it: `att` is `(B, nh, T, S)` f32 on the CPU, `mask` (if any) `(B or 1, 1, T or 1, S)`
/// u8 with 1 where attention is allowed. A masked score gets f32's lowest value, so a row with
/// nothing allowed (a padding query) comes out uniform, as in transformers. Differentiable.
/// Returns `None` for other devices, dtypes or shapes; the caller then takes the plain path.
pub fn scaled_masked_softmax(
    att: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !cpu_f32(att) || att.rank() != 4 {
        return Ok(None);
    }
    let (b, _, t, s) = att.dims4()?;
    let op = MaskedSoftmax {
        scale: scale as f32,
    };
    let att = att.contiguous()?;
    match mask {
        None => Ok(Some(att.apply_op1(op)?)),
        Some(m) if mask_fits(m, (b, t, s)) => Ok(Some(att.apply_op2(&m.contiguous()?, op)?)),
        Some(_) => Ok(None),
    }
}

/// Where row `r` of the `(B, nh, T, S)` scores finds its mask row, for a mask of
/// `(mb, 1, mt, S)`.
#[derive(Clone, Copy)]
pub(super) struct MaskIndex {
    nh: usize,
    t: usize,
    mb: usize,
    mt: usize,
}

impl MaskIndex {
    fn new(att: &Layout, mask: &Layout) -> candle_core::Result<Self> {
        let (b, nh, t, _) = att.shape().dims4()?;
        Self::for_scores((b, nh, t), mask)
    }

    /// For scores `(B, nh, T, S)` given as `(B, nh, T)`.
    pub(super) fn for_scores(
        (_, nh, t): (usize, usize, usize),
        mask: &Layout,
    ) -> candle_core::Result<Self> {
        let (mb, _, mt, _) = mask.shape().dims4()?;
        Ok(Self { nh, t, mb, mt })
    }

    /// Index of the mask row (of length S) for score row `r`.
    pub(super) fn row(&self, r: usize) -> usize {
        let (bi, ti) = (r / (self.nh * self.t), r % self.t);
        let bi = if self.mb == 1 { 0 } else { bi };
        let ti = if self.mt == 1 { 0 } else { ti };
        bi * self.mt + ti
    }
}

simd_fn! {
    /// One row of the forward pass: `y = softmax(where(m, x * scale, lowest))`.
    pub(super) fn masked_softmax_row(y: &mut [f32], x: &[f32], m: Option<&[u8]>, scale: f32) {
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
    pub(super) fn masked_softmax_grad_row(dx: &mut [f32], y: &[f32], g: &[f32], m: Option<&[u8]>, scale: f32) {
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

impl MaskedSoftmax {
    fn run(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        mask: Option<(&[u8], MaskIndex)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("scaled-masked-softmax", xs, xl)?;
        let s = xl.dims()[3];
        let mut y = zeros_on_huge_pages(x.len());
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let m = mask.map(|(m, idx)| &m[idx.row(r) * s..][..s]);
                masked_softmax_row(y, x, m, self.scale);
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(xs, xl, None)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = MaskedSoftmaxGrad { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &grad)?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = contiguous_u8(CustomOp2::name(self), ms, ml)?;
        self.run(xs, xl, Some((m, MaskIndex::new(xl, ml)?)))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        mask: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = MaskedSoftmaxGrad { scale: self.scale };
        let dx = y.apply_op3_no_bwd(&g.contiguous()?, mask, &grad)?;
        Ok((Some(dx), None))
    }
}

/// The backward pass of [`MaskedSoftmax`]: from its output `y` and the gradient `g` of `y`.
struct MaskedSoftmaxGrad {
    scale: f32,
}

impl MaskedSoftmaxGrad {
    fn run(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        mask: Option<(&[u8], MaskIndex)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = contiguous_f32("scaled-masked-softmax-grad", ys, yl)?;
        let g = contiguous_f32("scaled-masked-softmax-grad", gs, gl)?;
        let s = yl.dims()[3];
        let mut dx = zeros_on_huge_pages(y.len());
        dx.par_chunks_mut(s)
            .zip(y.par_chunks(s).zip(g.par_chunks(s)))
            .enumerate()
            .for_each(|(r, (dx, (y, g)))| {
                let m = mask.map(|(m, idx)| &m[idx.row(r) * s..][..s]);
                masked_softmax_grad_row(dx, y, g, m, self.scale);
            });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

impl CustomOp2 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(ys, yl, gs, gl, None)
    }
}

impl CustomOp3 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = contiguous_u8(CustomOp3::name(self), ms, ml)?;
        self.run(ys, yl, gs, gl, Some((m, MaskIndex::new(yl, ml)?)))
    }
}
