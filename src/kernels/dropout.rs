//! The dropout mask: which elements a dropout layer keeps, made from a seed on every core, and
//! `x * mask` as one operation whose backward pass makes the same mask again. The layer that
//! draws the seeds is `Dropout` (`src/dropout.rs`); the training attention applies a mask inside
//! itself ([`super::attention`]).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::op::{as_f32, rounded_like};

/// Mask elements per block of random numbers (one ChaCha stream each).
const MASK_BLOCK: usize = 1 << 16;

/// Where an operation that applies dropout inside itself gets its mask: the next mask a dropout
/// layer would apply, drawn from its stream as its own forward pass would draw it; `None` when
/// the layer would not drop anything.
pub trait DrawMask {
    fn next_mask(&self) -> Option<Mask>;
}

/// A dropout mask: element `j` is `1 / keep` with probability `keep`, else 0. It is made in
/// blocks, block `i` from its own ChaCha stream `i` of `seed`, on every core; a block's numbers
/// depend only on the seed and `i`, so the mask is the same whatever the number of threads, and
/// the same again when the backward pass needs it.
#[derive(Debug, Clone, Copy)]
pub struct Mask {
    seed: u64,
    keep: f32,
}

impl Mask {
    /// The mask of `seed` that keeps an element with probability `keep`.
    pub(crate) fn new(seed: u64, keep: f32) -> Self {
        Self { seed, keep }
    }

    /// The generator of the block holding element `j`, positioned at `j`.
    fn rng_at(&self, j: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream((j / MASK_BLOCK) as u64);
        // One 32-bit word per element (an f32 draw takes one).
        rng.set_word_pos((j % MASK_BLOCK) as u128);
        rng
    }

    fn next(&self, rng: &mut ChaCha8Rng) -> f32 {
        if rng.random::<f32>() < self.keep {
            1.0 / self.keep
        } else {
            0.0
        }
    }

    /// `f(j, m_j)` for every element of a mask of `n` elements, block by block in parallel.
    fn apply(&self, out: &mut [f32], f: impl Fn(usize, f32) -> f32 + Sync) {
        out.par_chunks_mut(MASK_BLOCK)
            .enumerate()
            .for_each(|(i, block)| {
                let mut rng = self.rng_at(i * MASK_BLOCK);
                for (j, o) in block.iter_mut().enumerate() {
                    *o = f(i * MASK_BLOCK + j, self.next(&mut rng));
                }
            });
    }

    /// `x *= mask` in place, block by block on every core: the product the dropout layer's
    /// forward pass computes (and its backward pass, for a gradient).
    pub(crate) fn apply_in_place(&self, x: &mut [f32]) {
        x.par_chunks_mut(MASK_BLOCK)
            .enumerate()
            .for_each(|(i, block)| {
                let mut rng = self.rng_at(i * MASK_BLOCK);
                for x in block {
                    *x *= self.next(&mut rng);
                }
            });
    }

    /// Elements `start..start + out.len()` of the mask, on this thread.
    pub(crate) fn fill(&self, start: usize, out: &mut [f32]) {
        let mut done = 0;
        while done < out.len() {
            let j = start + done;
            let n = (MASK_BLOCK - j % MASK_BLOCK).min(out.len() - done);
            let mut rng = self.rng_at(j);
            for o in &mut out[done..done + n] {
                *o = self.next(&mut rng);
            }
            done += n;
        }
    }

    /// The mask as a tensor of `shape` drawn on `device` (a GPU) by the device's own generator,
    /// which `reseed` first seeds with this mask's seed. Drawn on the host and copied over, the
    /// masks cost more than the rest of a GPU training step
    /// (`benchmarks/gpu-2026-11-26-h200/dropout.md`: 3.12 samples/s with attention dropout,
    /// 21.01 without). It is not the host's mask: the generator is another.
    pub(crate) fn on_device(
        &self,
        shape: &Shape,
        dtype: DType,
        device: &Device,
        reseed: bool,
    ) -> candle_core::Result<Tensor> {
        if reseed {
            device.set_seed(self.seed)?;
        }
        // candle draws uniform numbers on a GPU in f32 only.
        let kept = Tensor::rand(0f32, 1f32, shape, device)?.lt(f64::from(self.keep))?;
        kept.to_dtype(dtype)?
            .affine(1.0 / f64::from(self.keep), 0.0)
    }

    /// The first `n` elements of the mask.
    pub(crate) fn values(&self, n: usize) -> Vec<f32> {
        let mut mask = vec![0f32; n];
        self.apply(&mut mask, |_, m| m);
        mask
    }
}

/// `x * mask` as one operation, whose gradient is `g * mask` (the same operation).
impl CustomOp1 for Mask {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        // f16 and bf16 are widened and the product rounded once, as the kernels of `op.rs` do.
        let x = as_f32(self.name(), s, l)?;
        let mut y = vec![0f32; x.len()];
        self.apply(&mut y, |j, m| x[j] * m);
        let y = rounded_like(s, y);
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(self)?))
    }
}
