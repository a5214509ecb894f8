//! Dropout with a seeded random generator.
//!
//! candle's CPU device cannot be seeded, so dropout masks come from our own ChaCha generator,
//! shared by every dropout layer of a model: the same seed gives the same masks, run after run.
//! Dropout is the identity unless the model is in training mode.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::Result;

/// Mask elements per block of random numbers (one ChaCha stream each).
const MASK_BLOCK: usize = 1 << 16;

/// A dropout layer: in training, zeroes each element with probability `p` and scales the rest
/// by `1 / (1 - p)`, so the expected value is unchanged.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    training: bool,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl Dropout {
    /// A dropout generator seeded with `seed`; layers made from it with [`Dropout::with_p`]
    /// share its random stream.
    pub fn seeded(seed: u64) -> Self {
        Self {
            p: 0.0,
            training: false,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
        }
    }

    /// A layer with drop probability `p` sharing this one's generator.
    pub fn with_p(&self, p: f32) -> Self {
        Self {
            p,
            training: self.training,
            rng: self.rng.clone(),
        }
    }

    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// The mask this layer's next forward pass would apply, drawn from the shared stream just
    /// as [`Dropout::forward`] draws it; `None` when the layer would not drop anything. For
    /// operations that apply dropout inside themselves (the attention of src/kernels.rs).
    pub(crate) fn next_mask(&self) -> Option<Mask> {
        if !self.training || self.p == 0.0 {
            return None;
        }
        // One draw from the shared stream seeds this mask (see `Mask`).
        let seed: u64 = self
            .rng
            .lock()
            .expect("dropout generator poisoned")
            .random();
        Some(Mask {
            seed,
            keep: 1.0 - self.p,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(mask) = self.next_mask() else {
            return Ok(x.clone());
        };
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            // One pass each way, and no mask tensor: the backward pass makes the same mask again.
            return Ok(x.contiguous()?.apply_op1(mask)?);
        }
        let mask = Tensor::from_vec(mask.values(x.elem_count()), x.shape(), x.device())?;
        let mask = if x.dtype() == DType::F32 {
            mask
        } else {
            mask.to_dtype(x.dtype())?
        };
        Ok((x * mask)?)
    }
}

/// A dropout mask: element `j` is `1 / keep` with probability `keep`, else 0. It is made in
/// blocks, block `i` from its own ChaCha stream `i` of `seed`, on every core; a block's numbers
/// depend only on the seed and `i`, so the mask is the same whatever the number of threads, and
/// the same again when the backward pass needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mask {
    seed: u64,
    keep: f32,
}

impl Mask {
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

    fn values(&self, n: usize) -> Vec<f32> {
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
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((start, end))) => &v[start..end],
            _ => candle_core::bail!("dropout: expected contiguous f32 data"),
        };
        let mut y = vec![0f32; x.len()];
        self.apply(&mut y, |j, m| x[j] * m);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(self)?))
    }
}
