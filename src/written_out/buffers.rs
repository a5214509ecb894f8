//! What the written-out pass keeps from micro-step to micro-step: the gradient sums it adds
//! into, and its activations and scratch, whose buffers are reused rather than allocated again.

use std::mem;

/// One micro-step's activations and its backward pass's scratch.
#[derive(Default)]
pub(super) struct Buffers {
    /// The residual stream into block `l`, and out of the last one at `n_layer`.
    pub(super) xs: Vec<Vec<f32>>,
    pub(super) ln_1: Vec<Vec<f32>>,
    pub(super) qkv: Vec<Vec<f32>>,
    pub(super) att: Vec<Vec<f32>>,
    pub(super) mid: Vec<Vec<f32>>,
    pub(super) ln_2: Vec<Vec<f32>>,
    pub(super) fc: Vec<Vec<f32>>,
    pub(super) gelu: Vec<Vec<f32>>,
    pub(super) ln_f: Vec<f32>,
    /// The head's logits, then (the loss computed) their gradient in their place.
    pub(super) logits: Vec<f32>,
    /// The residual stream's gradient, added to as the backward pass goes down.
    pub(super) dres: Vec<f32>,
    /// A branch's output gradient (after its dropout), and an input's gradient, `(N, C)`.
    pub(super) dout: Vec<f32>,
    pub(super) din: Vec<f32>,
    /// `(N, 4C)`: the gradient of the GELU's output, then of its input.
    pub(super) dgelu: Vec<f32>,
    pub(super) dfc: Vec<f32>,
    /// The last block's attention output and input at the kept rows, and the gradient of the
    /// former (see `Pass::kept` in pass.rs).
    pub(super) att_kept: Vec<f32>,
    pub(super) x_kept: Vec<f32>,
    pub(super) datt_kept: Vec<f32>,
}

/// `v` holding `len` elements: grown with zeros or cut, its allocation kept.
pub(super) fn sized(v: &mut Vec<f32>, len: usize) -> &mut Vec<f32> {
    v.resize(len, 0.0);
    v
}

/// `n` buffers of `len` elements.
pub(super) fn sized_all(vs: &mut Vec<Vec<f32>>, n: usize, len: usize) {
    vs.resize_with(n, Vec::new);
    for v in vs.iter_mut() {
        sized(v, len);
    }
}

/// The gradients summed over micro-steps, one f32 buffer per parameter in the caller's order:
/// made zero at the first micro-step after [`GradSums::take`], added to by each.
#[derive(Default)]
pub struct GradSums {
    pub(super) sums: Vec<Vec<f32>>,
    /// The activations and scratch of the last micro-step, kept for the next one: buffers of
    /// the same size again are neither allocated nor zeroed.
    pub(super) buffers: Buffers,
}

impl GradSums {
    /// Whether any micro-step has added to the sums since the last [`GradSums::take`].
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The sums, in the order of the parameters the micro-steps were given; the next
    /// micro-step starts from zeros.
    pub fn take(&mut self) -> Vec<Vec<f32>> {
        mem::take(&mut self.sums)
    }

    /// Drops the sums (the buffers stay for the next micro-step).
    pub fn clear(&mut self) {
        self.sums.clear();
    }
}
