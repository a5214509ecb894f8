//! CPU fast paths: the same arithmetic as the plain candle code in [`crate::model`] and
//! `candle_nn::AdamW`, arranged to use every core and to make fewer passes over memory.
//!
//! **Decoding, one token at a time.** Generating with the KV cache feeds the model one token
//! per step, so every linear layer is a vector-matrix product (`(1, in) @ (in, out)`). candle
//! hands that to the `gemm` crate, whose matrix-vector kernel runs on a single thread: decoding
//! then uses one core of two, and is bound by how fast one core streams the weights from
//! memory. Here the product is split over the rayon pool (the one candle's own matmuls use): the
//! Conv1D weights by blocks of rows, each streamed front to back into a partial sum, the tied
//! head by blocks of vocabulary rows. The sums are the plain path's, in another order: they agree
//! to float rounding, which `tests/perf_paths.rs` checks.
//!
//! **Attention scores.** Scaling, masking and the softmax are three passes over the
//! `(B, nh, T, S)` scores in the plain code, and in training each pass is a node whose gradient
//! candle allocates and accumulates separately. [`scaled_masked_softmax`] does them in one pass,
//! with its own backward pass (also one pass).
//!
//! **AdamW.** `candle_nn::AdamW` updates each parameter with a dozen tensor operations, each
//! allocating a parameter-sized result; [`FusedAdamW`] makes one parallel pass per parameter and
//! updates weights and moments in place, with the same formula in the same order.
//!
//! These paths run on the CPU (the matrix-vector products of decoding only when no gradient is
//! needed), for f32 tensors and for f16 and bf16 ones, which they read into f32, compute on in
//! f32 and round once on the way out, as PyTorch's half-precision CPU kernels do; everything
//! else takes the plain path, which is what the book shows.
//!
//! One file per operation, each with the function the model calls (it returns `None` where the
//! fast path does not apply) and the candle custom operations behind it:
//!
//! - [`linear`] and [`tied_head`] (`linear.rs`): Conv1D and the tied LM head, over `gemm.rs`'s
//!   call into the `gemm` crate;
//! - [`gelu_tanh`] (`gelu.rs`) and [`layer_norm`] (`layer_norm.rs`);
//! - [`scaled_masked_softmax`] (`softmax.rs`): the attention scores' scale, mask and softmax;
//! - attention head by head, straight out of `c_attn`'s output: [`causal_attention`] for
//!   inference without a cache (`attention_inference.rs`) and [`attention`] with a backward pass
//!   for training (`attention_train.rs`), both walking `attention_geometry.rs`'s blocks of rows;
//! - [`cross_entropy`] (`cross_entropy.rs`) and [`FusedAdamW`] (`adamw.rs`);
//! - [`lm_micro_step`] and [`classifier_micro_step`] (`lm_step.rs`, `lm_pass.rs`): the training
//!   micro-step of chapters 6 and 7 written out, forward and backward over the kernels above
//!   without candle's graph, and [`classifier_logits`], its forward pass alone for an
//!   evaluation; `rows.rs`: the rows they compute (a classifier's, not the padding after each
//!   row's last real token);
//! - `amx.rs`: bf16 matrix products in Intel's AMX tiles, for the written-out micro-step in
//!   pure bf16 ([`amx_products_available`] says whether the CPU has them; elsewhere
//!   `widened.rs` widens the bf16 operands to f32, a block at a time, for gemm's products);
//! - [`add_in_place`] (`accumulate.rs`): gradients summed over micro-steps without a new buffer;
//!   [`update_in_place`] (`adamw_in_place.rs`): the chapters' AdamW in one pass, in place;
//!   [`sum_of_squares`] and [`scale_in_place`] (`norm.rs`): gradient clipping's two passes;
//! - [`Mask`] (`dropout.rs`): the dropout mask, made again from its seed when needed;
//! - `simd.rs`: the exponential and the reductions the element-wise loops share;
//! - `op.rs`: how a kernel of one to three inputs becomes a candle custom operation.

use candle_core::{DType, Tensor};

use op::contiguous;

mod simd;

mod accumulate;
mod adamw;
mod adamw_in_place;
mod amx;
mod attention_geometry;
mod attention_inference;
mod attention_train;
mod cross_entropy;
mod dropout;
mod gelu;
mod gemm;
mod layer_norm;
mod linear;
mod lm_pass;
mod lm_step;
mod norm;
mod op;
mod rows;
mod softmax;
mod widened;

pub use accumulate::add_in_place;
pub use adamw::FusedAdamW;
pub use adamw_in_place::update_in_place;
pub use attention_inference::causal_attention;
pub use attention_train::attention;
pub use cross_entropy::cross_entropy;
pub use dropout::{DrawMask, Mask};
pub use gelu::gelu_tanh;
pub use layer_norm::layer_norm;
pub use linear::{linear, tied_head};
pub use lm_step::{
    classifier_logits, classifier_micro_step, lm_micro_step, GradSums, LabelledBatch,
};
pub use norm::{scale_in_place, sum_of_squares};
pub use softmax::scaled_masked_softmax;

/// Whether this CPU multiplies bf16 in AMX tiles (and Linux lets this process use them): where
/// it does, the written-out pure-bf16 micro-step's products run in the tiles; elsewhere gemm's
/// f32 products multiply the same bf16 values widened to f32.
pub fn amx_products_available() -> bool {
    gemm::Products::amx()
}

/// `x` rounded to the nearest bf16, ties to even (a NaN stays a quiet NaN): the bits
/// `half::bf16::from_f32` gives, bit for bit, computed without branches so that loops over it
/// vectorise.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    let bits = if x.is_nan() { b | 0x0040_0000 } else { rounded };
    (bits >> 16) as u16
}

/// `x` rounded to bf16 ([`bf16_bits`]) and widened back: the value a bf16 of it holds.
#[inline(always)]
pub(crate) fn round_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(x)) << 16)
}

/// Each element of `v` rounded to bf16 in place, over the rayon pool: the values a bf16 tensor
/// of them would hold, kept in f32.
pub fn round_to_bf16_in_place(v: &mut [f32]) {
    use rayon::prelude::*;
    v.par_chunks_mut(1 << 16).for_each(|chunk| {
        for x in chunk {
            *x = round_bf16(*x);
        }
    });
}

/// Whether tensors are on the CPU and of one float type, where the fast paths apply: f32, or
/// f16 / bf16, which a kernel widens to f32 as it reads them and rounds its output back to
/// (`op.rs`), so that its gradients come out in the dtype of its inputs.
fn cpu_float(ts: &[&Tensor]) -> bool {
    let Some(first) = ts.first() else {
        return false;
    };
    let dtype = first.dtype();
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && ts.iter().all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// Whether `mask` is a u8 mask on the CPU of shape `(B or 1, 1, T or 1, S)`, as the scores
/// `(B, nh, T, S)` it applies to need.
fn mask_fits(mask: &Tensor, (b, t, s): (usize, usize, usize)) -> bool {
    mask.dtype() == DType::U8
        && mask.device().is_cpu()
        && matches!(mask.dims(), &[mb, 1, mt, ms] if (mb == 1 || mb == b) && (mt == 1 || mt == t) && ms == s)
}
