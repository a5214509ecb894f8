//! The model's operations as candle custom operations: each computes on the CPU in one pass what
//! the plain code does in several tensor operations, with a backward pass of its own where
//! training needs one. Their row-level functions (`linear_into`, `layer_norm_backward`, ...) are
//! also what the written-out training pass (`crate::written_out`) calls directly.

mod attention_geometry;
mod attention_inference;
mod attention_train;
mod cross_entropy;
mod custom_op;
mod dropout_mask;
mod gelu;
mod layer_norm;
mod linear;
mod softmax;

pub use attention_inference::causal_attention;
pub use attention_train::attention;
pub use cross_entropy::cross_entropy;
pub use dropout_mask::{DrawMask, Mask};
pub use gelu::gelu_tanh;
pub use layer_norm::layer_norm;
pub use linear::{linear, tied_head};
pub use softmax::scaled_masked_softmax;

pub(crate) use attention_geometry::AttentionGeometry;
pub(crate) use attention_train::AttentionWithGrad;
pub(crate) use cross_entropy::{classify_cross_entropy, cross_entropy_row};
pub(crate) use custom_op::contiguous;
pub(crate) use gelu::{gelu_grad_into, gelu_into, ELEMENTWISE_CHUNK};
pub(crate) use layer_norm::{layer_norm_backward, layer_norm_into};
pub(crate) use linear::{linear_backward, linear_into, tied_head_backward, tied_head_into};
