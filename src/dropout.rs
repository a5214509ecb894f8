//! Dropout with a seeded random generator.
//!
//! candle's CPU device cannot be seeded, so dropout masks come from our own ChaCha generator,
//! shared by every dropout layer of a model: the same seed gives the same masks, run after run.
//! Dropout is the identity unless the model is in training mode.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
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

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let n = x.elem_count();
        // One draw from the shared stream seeds this mask; the mask itself is made in blocks,
        // block i from its own ChaCha stream i, on every core. A block's numbers depend only on
        // the seed and i, so the mask is the same whatever the number of threads.
        let seed: u64 = self
            .rng
            .lock()
            .expect("dropout generator poisoned")
            .random();
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(MASK_BLOCK)
            .enumerate()
            .for_each(|(i, block)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(i as u64);
                for m in block {
                    if rng.random::<f32>() < keep {
                        *m = 1.0 / keep;
                    }
                }
            });
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        let mask = if x.dtype() == DType::F32 {
            mask
        } else {
            mask.to_dtype(x.dtype())?
        };
        Ok((x * mask)?)
    }
}
