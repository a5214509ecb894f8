//! Dropout with a seeded random generator.
//!
//! candle's CPU device cannot be seeded, so dropout masks come from our own ChaCha generator,
//! shared by every dropout layer of a model, which draws each mask's seed (the mask's elements
//! are then made from it, `kernels::Mask`): the same seed gives the same masks, run after run.
//! On a GPU the masks are drawn there, by the device's own generator, which the first mask after
//! seeding (or restoring) the stream seeds from it: the same seed gives the same masks run after
//! run there too, but a resumed run draws other masks than an uninterrupted one would (the
//! device generator's position is not saved). Seeding it for every mask would keep that too,
//! at the cost of setting up a generator (cuRAND's) for each of the hundreds of masks of a step.
//! Dropout is the identity unless the model is in training mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::{DrawMask, Mask};
use crate::Result;

/// A dropout layer: in training, zeroes each element with probability `p` and scales the rest
/// by `1 / (1 - p)`, so the expected value is unchanged.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    training: bool,
    rng: Arc<Mutex<ChaCha8Rng>>,
    /// Whether a device generator has been seeded from `rng` since it was seeded or restored
    /// (shared like `rng`).
    device_seeded: Arc<AtomicBool>,
}

impl Dropout {
    /// A dropout generator seeded with `seed`; layers made from it with [`Dropout::with_p`]
    /// share its random stream.
    pub fn seeded(seed: u64) -> Self {
        Self {
            p: 0.0,
            training: false,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
            device_seeded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A layer with drop probability `p` sharing this one's generator.
    pub fn with_p(&self, p: f32) -> Self {
        Self {
            p,
            training: self.training,
            rng: self.rng.clone(),
            device_seeded: self.device_seeded.clone(),
        }
    }

    /// Switches this layer between training (masks drawn) and evaluation (the identity):
    /// PyTorch's `module.train()` / `module.eval()`. Layers made from it keep their own mode.
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Where the shared generator stands, so that a resumed run draws the masks an
    /// uninterrupted one would have drawn.
    pub fn rng_state(&self) -> Result<DropoutRngState> {
        let rng = self.rng.lock().map_err(|_| poisoned())?;
        Ok(DropoutRngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        })
    }

    /// Moves the shared generator (of every layer made from this one) to `state`.
    pub fn set_rng_state(&self, state: &DropoutRngState) -> Result<()> {
        let mut rng = ChaCha8Rng::from_seed(state.seed);
        rng.set_stream(state.stream);
        rng.set_word_pos(state.word_pos);
        *self.rng.lock().map_err(|_| poisoned())? = rng;
        self.device_seeded.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// `x`, of any shape, with the next mask of the shared stream applied: elements zeroed
    /// with probability `p`, the rest scaled by `1 / (1 - p)`. Outside training, or with
    /// `p` 0, `x` itself and no draw from the stream.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some(mask) = self.next_mask() else {
            return Ok(x.clone());
        };
        if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            // One pass each way, and no mask tensor: the backward pass makes the same mask again.
            return Ok(x.contiguous()?.apply_op1(mask)?);
        }
        if !x.device().is_cpu() {
            let reseed = !self.device_seeded.swap(true, Ordering::Relaxed);
            let mask = mask.on_device(x.shape(), x.dtype(), x.device(), reseed)?;
            return Ok((x * mask)?);
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

/// The state of a dropout generator: ChaCha8's seed, stream and position in it (in 32-bit
/// words). Saved in checkpoints; see [`Dropout::rng_state`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropoutRngState {
    /// The generator's 32-byte ChaCha key, made from the `u64` seed.
    pub seed: [u8; 32],
    /// The ChaCha stream number (0 for a generator made by [`Dropout::seeded`]).
    pub stream: u64,
    /// How far into the stream the generator has read, in 32-bit words.
    pub word_pos: u128,
}

fn poisoned() -> crate::Error {
    crate::Error::InvalidArgument(
        "the dropout generator's lock is poisoned (a thread panicked while drawing a mask)".into(),
    )
}

/// The mask this layer's next forward pass would apply, for operations that apply dropout
/// inside themselves (the training attention of `src/kernels/`).
impl DrawMask for Dropout {
    fn next_mask(&self) -> Option<Mask> {
        if !self.training || self.p == 0.0 {
            return None;
        }
        // One draw from the shared stream seeds this mask (see `Mask`).
        let seed: u64 = self
            .rng
            .lock()
            .expect("dropout generator poisoned")
            .random();
        Some(Mask::new(seed, 1.0 - self.p))
    }
}
