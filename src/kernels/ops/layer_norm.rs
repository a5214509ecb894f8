//! LayerNorm over the last dimension with a one-pass backward, for training.

use candle_core::{CpuStorage, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::cpu_float;
use super::custom_op::{apply, apply_no_bwd, CpuInputs, CpuKernel, Grads};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

/// LayerNorm over the last dimension with a one-pass backward, for training: candle's fused
/// kernel has no backward, and the composed one is ten tensor operations each way. Mean and
/// variance are taken in two passes, like the composed version. Returns `None` for other
/// devices and dtypes.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !cpu_float(&[x, weight, bias]) {
        return Ok(None);
    }
    let op = LayerNormOp { eps: eps as f32 };
    Ok(Some(apply(op, &[x, weight, bias])?))
}

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/std of one row, in two passes.
pub(crate) fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CpuKernel for LayerNormOp {
    const NAME: &'static str = "layer-norm-train";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (&*inputs.f32(0)?, &*inputs.f32(1)?, &*inputs.f32(2)?);
        let (xl, c) = (inputs.layout(0), w.len());
        if b.len() != c || xl.dims().last() != Some(&c) {
            candle_core::bail!(
                "{}: input {:?}, weight {:?}",
                Self::NAME,
                xl.dims(),
                inputs.layout(1).dims()
            );
        }
        let mut y = zeros_on_huge_pages(x.len());
        layer_norm_into(&mut y, x, w, b, self.eps);
        Ok((inputs.output(y), xl.shape().clone()))
    }

    fn bwd(&self, inputs: &[&Tensor], _y: &Tensor, g: &Tensor) -> Grads {
        let (x, w) = (inputs[0], inputs[1]); // and the bias
        let c = w.elem_count();
        let (x2, g2) = (x.reshape(((), c))?, g.contiguous()?.reshape(((), c))?); // (N, C)
        let dx = apply_no_bwd(LayerNormGrad { eps: self.eps }, &[&x2, &g2, w])?;
        // dw = sum over rows of g * xhat, db = sum over rows of g.
        let (ones, zeros) = (w.ones_like()?, w.zeros_like()?);
        let xhat = apply_no_bwd(LayerNormOp { eps: self.eps }, &[&x2, &ones, &zeros])?;
        let dw = (&g2 * xhat)?.sum(0)?;
        let db = g2.sum(0)?;
        Ok(vec![Some(dx.reshape(x.shape())?), Some(dw), Some(db)])
    }
}

/// `dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))` with `dxhat = g * w`.
struct LayerNormGrad {
    eps: f32,
}

impl CpuKernel for LayerNormGrad {
    const NAME: &'static str = "layer-norm-train-grad";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g, w) = (&*inputs.f32(0)?, &*inputs.f32(1)?, &*inputs.f32(2)?);
        let c = w.len();
        let mut dx = zeros_on_huge_pages(x.len());
        dx.par_chunks_mut(c)
            .zip(x.par_chunks(c).zip(g.par_chunks(c)))
            .for_each(|(dx, (x, g))| {
                input_grad_row(dx, x, g, w, self.eps, |dx, d| *dx = d);
            });
        Ok((inputs.output(dx), inputs.layout(0).shape().clone()))
    }
}

/// `y = (x - mean) * rstd * w + b`, row by row, for rows of `w.len()` elements.
pub(crate) fn layer_norm_into(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let c = w.len();
    y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| {
        let (mean, rstd) = row_stats(x, eps);
        for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = (x - mean) * rstd * w + b;
        }
    });
}

/// The gradient of one row's input from the gradient `g` of its output, each element handed to
/// `put` (which writes it, or adds it to a residual gradient).
fn input_grad_row(
    dx: &mut [f32],
    x: &[f32],
    g: &[f32],
    w: &[f32],
    eps: f32,
    put: impl Fn(&mut f32, f32),
) {
    let (mean, rstd) = row_stats(x, eps);
    let n = w.len() as f32;
    let (mut mean_d, mut mean_dx) = (0f32, 0f32);
    for ((x, g), w) in x.iter().zip(g).zip(w) {
        let d = g * w;
        mean_d += d;
        mean_dx += d * (x - mean) * rstd;
    }
    let (mean_d, mean_dx) = (mean_d / n, mean_dx / n);
    for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
        let xhat = (x - mean) * rstd;
        put(dx, rstd * (g * w - mean_d - xhat * mean_dx));
    }
}

/// The backward pass of [`layer_norm_into`] from `g`, the gradient of `y`: the input's gradient
/// added into `dx` (the residual stream's gradient, which the layer's input also flows into),
/// and the weight's and bias's added into the sums being accumulated.
pub(crate) fn layer_norm_backward(
    (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    x: &[f32],
    g: &[f32],
    w: &[f32],
    eps: f32,
) {
    let c = w.len();
    dx.par_chunks_mut(c)
        .zip(x.par_chunks(c).zip(g.par_chunks(c)))
        .for_each(|(dx, (x, g))| input_grad_row(dx, x, g, w, eps, |dx, d| *dx += d));
    // The parameters' gradients sum over the rows: in row order, whole rows at a time.
    let stats: Vec<(f32, f32)> = x.par_chunks(c).map(|x| row_stats(x, eps)).collect();
    for ((x, g), (mean, rstd)) in x.chunks_exact(c).zip(g.chunks_exact(c)).zip(stats) {
        for (((dw, db), x), g) in dw.iter_mut().zip(db.iter_mut()).zip(x).zip(g) {
            *dw += g * ((x - mean) * rstd);
            *db += g;
        }
    }
}
