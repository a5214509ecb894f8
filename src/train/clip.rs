//! Gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_` (what transformers' `Trainer`
//! does with `max_grad_norm`, 1.0 by default).
//!
//! One bad batch can make a gradient hundreds of times larger than usual, and AdamW, which
//! divides by a running average of past gradients, turns it into a large step. Clipping
//! rescales all gradients together when their joint norm is above `max_norm`, keeping their
//! direction.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::{kernels, Result};

/// The L2 norm of all gradients of `vars` together, in f32 as PyTorch computes it: the norm of
/// the per-tensor norms. Inf or NaN when any gradient holds one.
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut squares = Vec::with_capacity(vars.len());
    for var in vars {
        let Some(g) = grads.get(var) else { continue };
        // One pass over the gradient on the CPU; the same sum by tensor operations elsewhere.
        squares.push(match kernels::sum_of_squares(g)? {
            Some(squares) => squares,
            None => g
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()?,
        });
    }
    Ok(joint_norm(squares))
}

/// The norm of the per-tensor norms, from each tensor's sum of squares.
fn joint_norm(squares: impl IntoIterator<Item = f32>) -> f64 {
    let mut sum = 0f32;
    for squares in squares {
        let norm = squares.sqrt();
        sum += norm * norm;
    }
    f64::from(sum.sqrt())
}

// ANCHOR: clip
/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`: scales every gradient of `vars` by
/// `min(1, max_norm / (total + 1e-6))` and returns `total`, the norm before clipping. A
/// non-finite norm is returned as it is (the gradients then hold inf or NaN whatever the
/// scaling); deciding what to do about it is the caller's job.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let total = grad_norm(grads, vars)?;
    let coef = clip_coef(total, max_norm);
    // PyTorch multiplies by the clamped factor always; multiplying by 1 changes no bit.
    if coef < 1.0 {
        for var in vars {
            let Some(g) = grads.get(var) else { continue };
            // In the gradient's own buffer on the CPU; a new tensor elsewhere.
            if !kernels::scale_in_place(g, coef)? {
                let clipped = (g.to_dtype(DType::F32)? * f64::from(coef))?.to_dtype(g.dtype())?;
                grads.insert(var, clipped);
            }
        }
    }
    Ok(total)
}
// ANCHOR_END: clip

/// The factor `clip_grad_norm_` scales by when the norm is `total`.
fn clip_coef(total: f64, max_norm: f64) -> f32 {
    max_norm as f32 / (total as f32 + 1e-6)
}

/// [`grad_norm`] of gradients held as f32 host slices (the written-out pass's sums), with the
/// same arithmetic.
pub(crate) fn grad_norm_of_slices(grads: &[Vec<f32>]) -> f64 {
    joint_norm(grads.iter().map(|g| kernels::sum_of_squares_of_slice(g)))
}

/// [`clip_grad_norm`] of gradients held as f32 host slices, scaled in place.
pub(crate) fn clip_grad_norm_of_slices(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let total = grad_norm_of_slices(grads);
    let coef = clip_coef(total, max_norm);
    if coef < 1.0 {
        grads.iter_mut().for_each(|g| kernels::scale_slice(g, coef));
    }
    total
}
