//! Why the tutorial's fine-tuned model says `!!!!`: the measurements behind chapter 6's page on
//! the collapse (`examples/06_f16_collapse.rs`, `chapters/06_collapse.md`).
//!
//! The tutorial trained gpt2-xl after `model.half()` with transformers 4's `AdamW` (eps 1e-6)
//! at a learning rate that only reached 1.16e-6. Four suspects, each measured here with the
//! crate's own training code ([`AdamW`](crate::train::AdamW) rounds every operation to f16
//! exactly where PyTorch's `.half()` arithmetic does):
//!
//! 1. [`number_facts`]: what f16 can hold - `eps`, the smallest gradient whose square survives,
//!    the largest weight an update of the tutorial's size still moves.
//! 2. [`steady_gradient`]: one weight with a constant gradient through the tutorial's whole
//!    schedule (1,933 optimizer steps, the count its printed rates imply), in five precisions
//!    and optimisers.
//! 3. [`real_step`]: the bundled model's real gradients in pure f16, summed over sequences as the
//!    tutorial sums them: which band each gradient falls in, and which weights one update at
//!    the tutorial's learning rates changes; and the rows of `wte` of tokens never seen.
//! 4. [`activations`](fn@activations): the largest activation of each layer in f32, and whether f16 inference
//!    overflows - on the bundled model and on a gpt2-size model with random weights.
//!
//! No pretrained weights are used (none can be had offline): what holds for real gpt2-xl stays
//! a hypothesis, and the chapter says which.

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::{Gpt2Config, Gpt2Tokenizer, Result, Weights};

mod activations;
mod gradients;
mod numbers;
mod steady;
mod tables;

pub use activations::{activations, Activations};
pub use gradients::{real_step, GroupRow, RealStep, UnseenRows};
pub use numbers::{number_facts, NumberFacts};
pub use steady::{steady_gradient, variants, SteadyGradient, SteadyRow, Variant, STEADY_GRADIENTS};
pub use tables::render;

/// The tutorial's peak learning rate, warm-up and number of optimizer steps (5 epochs of its
/// 231,657 jokes): its learning rate rose from 0 to 1.16e-6 and never further.
pub const TUTORIAL_LR: f64 = 3e-6;
pub const TUTORIAL_WARMUP: usize = 5000;
pub const TUTORIAL_STEPS: usize = 1933;
/// The learning rates probed: after epoch 1 and epoch 5 of the tutorial, and its peak.
pub const PROBE_LRS: [f64; 3] = [2.31e-7, 1.16e-6, 3e-6];
/// A typical weight: GPT-2's `initializer_range`, the standard deviation of its init.
pub const TYPICAL_WEIGHT: f64 = 0.02;

/// What the program measures on, and how much.
#[derive(Debug, Clone, Serialize)]
pub struct CollapseSettings {
    /// Bundled jokes packed as the tutorial packs them (500 tokens), in file order; the first
    /// this many sequences give the summed gradient of [`real_step`].
    pub sequences: usize,
    pub max_seq_len: usize,
    /// Seeds dropout and the random gpt2-size weights.
    pub seed: u64,
    /// Also measure a gpt2-size (124M) model with random weights, not only the bundled one.
    pub gpt2_size: bool,
}

impl Default for CollapseSettings {
    fn default() -> Self {
        Self {
            sequences: 2,
            max_seq_len: 500,
            seed: 42,
            gpt2_size: true,
        }
    }
}

/// Everything the program prints.
#[derive(Debug, Clone, Serialize)]
pub struct CollapseReport {
    pub settings: CollapseSettings,
    pub numbers: NumberFacts,
    pub steady: SteadyGradient,
    pub real: RealStep,
    pub activations: Vec<Activations>,
}

/// Runs every measurement on the bundled model (`weights`, `cfg`, `tokenizer`).
pub fn run(
    weights: &Weights,
    cfg: &Gpt2Config,
    tokenizer: &Gpt2Tokenizer,
    settings: &CollapseSettings,
) -> Result<CollapseReport> {
    let numbers = number_facts(tokenizer)?;
    let steady = steady_gradient()?;
    let real = real_step(
        weights,
        cfg,
        tokenizer,
        settings,
        numbers.v_underflow_gradient,
    )?;
    let prompt = tokenizer.encode(super::TUTORIAL_PROMPT)?;
    let mut activations = vec![activations(
        "bundled (random, 2 layers)",
        weights,
        cfg,
        &prompt,
    )?];
    if settings.gpt2_size {
        let gpt2 = Gpt2Config::gpt2();
        let random = Weights::init(&gpt2, settings.seed, weights.device())?;
        activations.push(self::activations(
            "gpt2-size (random, 12 layers)",
            &random,
            &gpt2,
            &prompt,
        )?);
    }
    Ok(CollapseReport {
        settings: settings.clone(),
        numbers,
        steady,
        real,
        activations,
    })
}

/// A tensor's values as f64, flattened.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?)
}
