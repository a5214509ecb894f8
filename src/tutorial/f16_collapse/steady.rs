//! One weight with a steady gradient through the tutorial's whole schedule, in five
//! precisions and optimisers.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

use super::{values, TUTORIAL_LR, TUTORIAL_STEPS, TUTORIAL_WARMUP, TYPICAL_WEIGHT};
use crate::train::{AdamW, AdamWConfig, HalfMoments, LinearSchedule};
use crate::Result;

/// The gradients of [`steady_gradient`]: one weight each.
pub const STEADY_GRADIENTS: [f64; 11] = [
    1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 5e-3, 6e-3, 1e-2, 1e-1, 1.0,
];

/// A precision and an optimiser a weight trains with.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: &'static str,
    #[serde(skip)]
    dtype: DType,
    #[serde(skip)]
    adamw: AdamWConfig,
}

/// The tutorial's pure f16, two ways of half-fixing it, and the two f32-master set-ups of the
/// fixed recipe (mixed precision keeps f32 master weights and an f32 optimiser).
pub fn variants() -> Vec<Variant> {
    let tutorial = AdamWConfig::tutorial(0.0); // eps 1e-6, moments like the weights
    let f32_moments = AdamWConfig {
        half_moments: HalfMoments::F32,
        ..tutorial
    };
    let v = |name, dtype, adamw| Variant { name, dtype, adamw };
    vec![
        v("f16, moments f16 (tutorial)", DType::F16, tutorial),
        v("f16, moments f32", DType::F16, f32_moments),
        v("bf16, moments bf16", DType::BF16, tutorial),
        v("f32 masters, eps 1e-6", DType::F32, tutorial),
        v(
            "f32 masters, torch eps 1e-8",
            DType::F32,
            AdamWConfig::torch(0.0),
        ),
    ]
}

/// One gradient's outcome in every variant.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyRow {
    pub gradient: f64,
    /// Final weight minus initial weight, per variant (the gradient is positive: the weight
    /// should fall).
    pub drift: Vec<f64>,
    /// Optimizer steps that changed the weight at all, per variant.
    pub steps_moved: Vec<usize>,
    /// The tutorial variant's `v` after the last step, and that step's change of the weight.
    pub tutorial_v: f64,
    pub tutorial_last_update: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SteadyGradient {
    pub steps: usize,
    pub initial_weight: f64,
    pub last_lr: f64,
    pub variants: Vec<Variant>,
    pub rows: Vec<SteadyRow>,
    /// Whether every weight stayed finite in every variant.
    pub all_finite: bool,
}

/// Weights of [`TYPICAL_WEIGHT`], each with one of [`STEADY_GRADIENTS`] at every step, through
/// the tutorial's schedule (its first step at lr 0) with each variant's dtype and [`AdamW`].
pub fn steady_gradient() -> Result<SteadyGradient> {
    let schedule = LinearSchedule::new(TUTORIAL_LR, TUTORIAL_WARMUP, None);
    let dev = Device::Cpu;
    let g32: Vec<f32> = STEADY_GRADIENTS.iter().map(|&g| g as f32).collect();
    let n = g32.len();
    let variants = variants();
    let mut rows: Vec<SteadyRow> = STEADY_GRADIENTS
        .iter()
        .map(|&gradient| SteadyRow {
            gradient,
            drift: vec![],
            steps_moved: vec![],
            tutorial_v: 0.0,
            tutorial_last_update: 0.0,
        })
        .collect();
    let mut all_finite = true;
    for (vi, variant) in variants.iter().enumerate() {
        let w0 = Tensor::full(TYPICAL_WEIGHT as f32, n, &dev)?.to_dtype(variant.dtype)?;
        let w = Var::from_tensor(&w0)?;
        let mut grads = GradStore::default();
        grads.insert(
            w.as_tensor(),
            Tensor::new(g32.as_slice(), &dev)?.to_dtype(variant.dtype)?,
        );
        let mut adamw = AdamW::new(vec![("w".into(), w.clone())], variant.adamw)?;
        let mut moved = vec![0usize; n];
        let mut before = values(w.as_tensor())?;
        let mut last_update = vec![0.0; n];
        for k in 0..TUTORIAL_STEPS {
            adamw.set_lr(schedule.lr(k));
            adamw.step(&grads)?;
            let after = values(w.as_tensor())?;
            for i in 0..n {
                last_update[i] = after[i] - before[i];
                moved[i] += usize::from(after[i] != before[i]);
            }
            before = after;
        }
        let start = values(&w0)?;
        all_finite &= before.iter().all(|x| x.is_finite());
        let v = match adamw.moments("w") {
            Some((_, v)) => values(v)?,
            None => vec![f64::NAN; n],
        };
        for (i, row) in rows.iter_mut().enumerate() {
            row.drift.push(before[i] - start[i]);
            row.steps_moved.push(moved[i]);
            if vi == 0 {
                row.tutorial_v = v[i];
                row.tutorial_last_update = last_update[i];
            }
        }
    }
    Ok(SteadyGradient {
        steps: TUTORIAL_STEPS,
        initial_weight: values(&Tensor::new(TYPICAL_WEIGHT as f32, &dev)?.to_dtype(DType::F16)?)?
            [0],
        last_lr: schedule.lr(TUTORIAL_STEPS - 1),
        variants,
        rows,
        all_finite,
    })
}
