//! GPT-2's `gelu_new` on every core, with a one-pass backward.

use candle_core::{CpuStorage, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::cpu_float;
use super::custom_op::{apply, apply_no_bwd, CpuInputs, CpuKernel, Grads};
use crate::kernels::simd::{sigmoid_fast, simd_fn};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF: f32 = 0.044_715;
/// Elements per parallel task of the element-wise kernels.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// GPT-2's `gelu_new`, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, vectorised, on every
/// core and with a one-pass backward (candle's `gelu` calls libm's tanh on one thread, and its
/// gradient is a dozen tensor operations). Returns `None` for other devices and dtypes.
pub fn gelu_tanh(x: &Tensor) -> Result<Option<Tensor>> {
    if !cpu_float(&[x]) {
        return Ok(None);
    }
    Ok(Some(apply(GeluTanh, &[x])?))
}

struct GeluTanh;

simd_fn! {
    /// `gelu(x) = 0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, written as
    /// `x * sigmoid(2u)` (the same function: `1 + tanh(u) = 2 sigmoid(2u)`), which needs one
    /// exponential and loses nothing to cancellation where tanh(u) is close to -1.
    fn gelu_slice(y: &mut [f32], x: &[f32]) {
        for (y, &v) in y.iter_mut().zip(x) {
            let u = SQRT_TWO_OVER_PI * v * (1.0 + GELU_COEF * v * v);
            *y = v * sigmoid_fast(2.0 * u);
        }
    }
}

simd_fn! {
    /// `dx = g * gelu'(x)`: with `s = sigmoid(2u)`, `1 + tanh(u) = 2s` and
    /// `1 - tanh(u)^2 = 4 s (1 - s)`, so `gelu'(x) = s + 2 x s (1 - s) u'(x)`.
    fn gelu_grad_slice(dx: &mut [f32], x: &[f32], g: &[f32]) {
        for (dx, (&v, &g)) in dx.iter_mut().zip(x.iter().zip(g)) {
            let u = SQRT_TWO_OVER_PI * v * (1.0 + GELU_COEF * v * v);
            let du = SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_COEF * v * v);
            let s = sigmoid_fast(2.0 * u);
            *dx = g * (s + 2.0 * v * s * (1.0 - s) * du);
        }
    }
}

impl CpuKernel for GeluTanh {
    const NAME: &'static str = "gelu-tanh";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = &*inputs.f32(0)?;
        let mut y = zeros_on_huge_pages(x.len());
        gelu_into(&mut y, x);
        Ok((inputs.output(y), inputs.layout(0).shape().clone()))
    }

    fn bwd(&self, inputs: &[&Tensor], _y: &Tensor, g: &Tensor) -> Grads {
        Ok(vec![Some(apply_no_bwd(GeluTanhGrad, &[inputs[0], g])?)])
    }
}

/// The backward pass of [`GeluTanh`], from its input.
struct GeluTanhGrad;

impl CpuKernel for GeluTanhGrad {
    const NAME: &'static str = "gelu-tanh-grad";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (&*inputs.f32(0)?, &*inputs.f32(1)?);
        let mut dx = zeros_on_huge_pages(x.len());
        gelu_grad_into(&mut dx, x, g);
        Ok((inputs.output(dx), inputs.layout(0).shape().clone()))
    }
}

/// `y = gelu(x)` element by element, on every core.
pub(crate) fn gelu_into(y: &mut [f32], x: &[f32]) {
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(y, x)| gelu_slice(y, x));
}

/// `dx = g * gelu'(x)` element by element, on every core.
pub(crate) fn gelu_grad_into(dx: &mut [f32], x: &[f32], g: &[f32]) {
    dx.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(
            x.par_chunks(ELEMENTWISE_CHUNK)
                .zip(g.par_chunks(ELEMENTWISE_CHUNK)),
        )
        .for_each(|(dx, (x, g))| gelu_grad_slice(dx, x, g));
}
