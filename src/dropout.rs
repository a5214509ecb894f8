//! Dropout with a seeded random generator.
//!
//! candle's CPU device cannot be seeded, so dropout masks come from our own ChaCha generator,
//! shared by every dropout layer of a model: the same seed gives the same masks, run after run.
//! Dropout is the identity unless the model is in training mode.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Result;

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
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().expect("dropout generator poisoned");
            (0..n)
                .map(|_| {
                    if rng.random::<f32>() < keep {
                        1.0 / keep
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        let mask = if x.dtype() == DType::F32 {
            mask
        } else {
            mask.to_dtype(x.dtype())?
        };
        Ok((x * mask)?)
    }
}
