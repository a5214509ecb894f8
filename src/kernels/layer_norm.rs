//! LayerNorm over the last dimension with a one-pass backward, for training.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, cpu_f32};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

/// LayerNorm over the last dimension with a one-pass backward, for training: candle's fused
/// kernel has no backward, and the composed one is ten tensor operations each way. Mean and
/// variance are taken in two passes, like the composed version. Returns `None` for other
/// devices and dtypes.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(weight) || !cpu_f32(bias) {
        return Ok(None);
    }
    let op = LayerNormOp { eps: eps as f32 };
    Ok(Some(x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        op,
    )?))
}

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/std of one row, in two passes.
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let w = contiguous_f32(self.name(), ws, wl)?;
        let b = contiguous_f32(self.name(), bs, bl)?;
        let c = w.len();
        if b.len() != c || xl.dims().last() != Some(&c) {
            candle_core::bail!(
                "{}: input {:?}, weight {:?}",
                self.name(),
                xl.dims(),
                wl.dims()
            );
        }
        let mut y = zeros_on_huge_pages(x.len());
        y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| {
            let (mean, rstd) = row_stats(x, self.eps);
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let (x2, g2) = (x.reshape(((), c))?, g.contiguous()?.reshape(((), c))?); // (N, C)
        let dx = x2.apply_op3_no_bwd(&g2, w, &LayerNormGrad { eps: self.eps })?;
        // dw = sum over rows of g * xhat, db = sum over rows of g.
        let xhat = x2.apply_op3_no_bwd(
            &w.ones_like()?,
            &w.zeros_like()?,
            &LayerNormOp { eps: self.eps },
        )?;
        let dw = (&g2 * xhat)?.sum(0)?;
        let db = g2.sum(0)?;
        Ok((Some(dx.reshape(x.shape())?), Some(dw), Some(db)))
    }
}

/// `dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))` with `dxhat = g * w`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let g = contiguous_f32(self.name(), gs, gl)?;
        let w = contiguous_f32(self.name(), ws, wl)?;
        let c = w.len();
        let mut dx = zeros_on_huge_pages(x.len());
        dx.par_chunks_mut(c)
            .zip(x.par_chunks(c).zip(g.par_chunks(c)))
            .for_each(|(dx, (x, g))| {
                let (mean, rstd) = row_stats(x, self.eps);
                let n = c as f32;
                let (mut mean_d, mut mean_dx) = (0f32, 0f32);
                for ((x, g), w) in x.iter().zip(g).zip(w) {
                    let d = g * w;
                    mean_d += d;
                    mean_dx += d * (x - mean) * rstd;
                }
                let (mean_d, mean_dx) = (mean_d / n, mean_dx / n);
                for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    let xhat = (x - mean) * rstd;
                    *dx = rstd * (g * w - mean_d - xhat * mean_dx);
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}
