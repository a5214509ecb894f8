//! What an optimiser update does to whole gradients and weights, each in one pass over their own
//! buffers: gradients summed over micro-steps, the sum of squares and the scaling of gradient
//! clipping, and the element-wise update of weight, gradient and moments together - which
//! `train::AdamW` calls with its own arithmetic.

mod accumulate;
mod adamw_in_place;
mod norm;

pub use accumulate::add_in_place;
pub use adamw_in_place::{update_in_place, Gradient};
pub use norm::{scale_in_place, scale_slice, sum_of_squares, sum_of_squares_of_slice};
