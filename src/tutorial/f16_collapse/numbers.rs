//! What f16 and bf16 make of the tutorial's numbers.

use half::{bf16, f16};
use serde::Serialize;

use super::{PROBE_LRS, TYPICAL_WEIGHT};
use crate::train::AdamWConfig;
use crate::{Gpt2Tokenizer, Result};

/// What f16 (and bf16) make of the tutorial's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct NumberFacts {
    pub f16_max: f64,
    pub f16_min_normal: f64,
    pub f16_min_subnormal: f64,
    /// `eps = 1e-6` stored in f16: a subnormal, a multiple of the smallest one.
    pub eps_f16: f64,
    pub eps_f16_is_subnormal: bool,
    pub eps_bf16: f64,
    /// Half the spacing of f16 (bf16) numbers at [`TYPICAL_WEIGHT`]: a smaller update is lost.
    pub half_ulp_f16_at_typical: f64,
    pub half_ulp_bf16_at_typical: f64,
    /// For each of [`PROBE_LRS`], the largest f16 weight that an update of that size moves.
    pub largest_weight_moved_f16: Vec<f64>,
    /// The largest |g| whose `(1 - beta2) * g * g` rounds to 0 in f16: below it AdamW's second
    /// moment `v` never leaves 0 and its denominator is `eps` alone.
    pub v_underflow_gradient: f64,
    /// What token 0 decodes to.
    pub token_0: String,
}

fn f16_half_ulp(w: f64) -> f64 {
    let x = f16::from_f64(w);
    (f16::from_bits(x.to_bits() + 1).to_f64() - x.to_f64()) / 2.0
}

fn bf16_half_ulp(w: f64) -> f64 {
    let x = bf16::from_f64(w);
    (bf16::from_bits(x.to_bits() + 1).to_f64() - x.to_f64()) / 2.0
}

/// The largest positive f16 `w` with `f16(w + u) != w` (the addition done in f32, as PyTorch
/// does it for a half tensor).
fn largest_weight_moved(u: f64) -> f64 {
    (1..f16::MAX.to_bits())
        .rev()
        .map(f16::from_bits)
        .find(|w| f16::from_f32(w.to_f32() + u as f32) != *w)
        .map_or(0.0, f16::to_f64)
}

/// The largest g with `f16((g * (1 - beta2)) * g) == 0`, by bisection.
fn v_underflow_gradient(beta2: f64) -> f64 {
    let zero = |g: f32| f16::from_f32((g * (1.0 - beta2) as f32) * g) == f16::ZERO;
    let (mut lo, mut hi) = (0f32, 1f32);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if zero(mid) {
            lo = mid
        } else {
            hi = mid
        }
    }
    f64::from(lo)
}

pub fn number_facts(tokenizer: &Gpt2Tokenizer) -> Result<NumberFacts> {
    let eps = f16::from_f64(1e-6);
    Ok(NumberFacts {
        f16_max: f16::MAX.to_f64(),
        f16_min_normal: f16::MIN_POSITIVE.to_f64(),
        f16_min_subnormal: f16::MIN_POSITIVE_SUBNORMAL.to_f64(),
        eps_f16: eps.to_f64(),
        eps_f16_is_subnormal: eps < f16::MIN_POSITIVE,
        eps_bf16: bf16::from_f64(1e-6).to_f64(),
        half_ulp_f16_at_typical: f16_half_ulp(TYPICAL_WEIGHT),
        half_ulp_bf16_at_typical: bf16_half_ulp(TYPICAL_WEIGHT),
        largest_weight_moved_f16: PROBE_LRS.iter().map(|&u| largest_weight_moved(u)).collect(),
        v_underflow_gradient: v_underflow_gradient(AdamWConfig::tutorial(0.0).beta2),
        token_0: tokenizer.decode(&[0])?,
    })
}
