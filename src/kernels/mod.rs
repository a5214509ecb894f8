//! CPU fast paths: the same arithmetic as the plain candle code in [`crate::model`] and
//! PyTorch's AdamW, arranged to use every core and to make fewer passes over memory. Four jobs,
//! a folder or file each:
//!
//! - `ops/`: the model's operations as candle custom operations, for the graph - Conv1D and
//!   the tied head ([`linear`], [`tied_head`]), [`gelu_tanh`], [`layer_norm`], the attention
//!   scores' scale, mask and softmax in one pass ([`scaled_masked_softmax`]), attention head by
//!   head straight out of `c_attn`'s output ([`causal_attention`] for inference, [`attention`]
//!   with a backward pass for training), [`cross_entropy`] and the dropout [`Mask`], made again
//!   from its seed when needed. Their row-level functions are what the written-out training
//!   pass ([`crate::written_out`]) calls.
//! - `matmul/`: the matrix products they all make - f32 through the `gemm` crate, and bf16 with
//!   f32 sums, in AMX tiles where the CPU has them ([`amx_products_available`]) and widened to
//!   f32 a block at a time elsewhere.
//! - `optim/`: whole-gradient passes of an update - [`add_in_place`] (gradients summed over
//!   micro-steps), [`sum_of_squares`] and [`scale_in_place`] (gradient clipping) and
//!   [`update_in_place`] (an optimiser's element step over weight, gradient and moments at
//!   once, which `train::AdamW` drives).
//! - `rounding.rs`: bf16 rounding without branches ([`round_to_bf16_in_place`]); `simd.rs`: the
//!   exponential and the reductions the element-wise loops share.
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
//! These paths run on the CPU (the matrix-vector products of decoding only when no gradient is
//! needed), for f32 tensors and for f16 and bf16 ones, which they read into f32, compute on in
//! f32 and round once on the way out, as PyTorch's half-precision CPU kernels do; everything
//! else takes the plain path, which is what the book shows. Each operation's function returns
//! `None` where its fast path does not apply.

mod matmul;
mod ops;
mod optim;
mod rounding;
mod simd;

pub use ops::{
    attention, causal_attention, cross_entropy, gelu_tanh, layer_norm, linear,
    scaled_masked_softmax, tied_head, DrawMask, Mask,
};
pub use optim::{
    add_in_place, scale_in_place, scale_slice, sum_of_squares, sum_of_squares_of_slice,
    update_in_place, Gradient,
};
pub(crate) use rounding::round_bf16;
pub use rounding::round_to_bf16_in_place;

// For the written-out training pass, which calls the operations' row-level functions and the
// products directly.
pub(crate) use matmul::{Matrix, Products};
pub(crate) use ops::{
    classify_cross_entropy, cross_entropy_row, gelu_grad_into, gelu_into, layer_norm_backward,
    layer_norm_into, linear_backward, linear_into, tied_head_backward, tied_head_into,
    AttentionGeometry, AttentionWithGrad, ELEMENTWISE_CHUNK,
};

/// Whether this CPU multiplies bf16 in AMX tiles (and Linux lets this process use them): where
/// it does, the written-out pure-bf16 micro-step's products run in the tiles; elsewhere gemm's
/// f32 products multiply the same bf16 values widened to f32.
pub fn amx_products_available() -> bool {
    matmul::Products::amx()
}
