//! The arithmetic of one AdamW update, in its two versions ([`AdamWVariant`]): as the
//! sequence of PyTorch operations (one candle operation each, every result rounded to the half
//! type where asked - how `model.half()` + AdamW computes), and the same operations on one f32
//! element, which the CPU path runs in a single pass in place ([`ElementStep`]).

use candle_core::{DType, Device, Tensor};

use super::config::{AdamWConfig, AdamWVariant};
use crate::Result;

/// The tensors one parameter's update reads and writes, all in f32.
pub(super) struct Update {
    pub(super) w: Tensor,
    pub(super) g: Tensor,
    pub(super) m: Tensor,
    pub(super) v: Tensor,
}

/// PyTorch's element-wise operations on f32 tensors, each result rounded to `round` if set:
/// PyTorch computes an f16 or bf16 operation in f32 (its "opmath" type) and rounds once.
/// `x * s` and `x + s` with an f64 `s` round `s` to f32 first, as PyTorch does.
pub(super) struct Ops {
    pub(super) round: Option<DType>,
    pub(super) device: Device,
}

impl Ops {
    fn r(&self, t: Tensor) -> Result<Tensor> {
        Ok(match self.round {
            Some(d) => t.to_dtype(d)?.to_dtype(DType::F32)?,
            None => t,
        })
    }

    /// `x.mul_(s)`
    fn mul(&self, x: &Tensor, s: f64) -> Result<Tensor> {
        self.r((x * s)?)
    }

    /// `x.add_(y, alpha=s)`: `x + s·y`
    fn add_scaled(&self, x: &Tensor, y: &Tensor, s: f64) -> Result<Tensor> {
        self.r(((y * s)? + x)?)
    }

    /// `x.lerp_(y, w)` with a scalar weight: PyTorch's two formulas, by the size of `w`.
    fn lerp(&self, x: &Tensor, y: &Tensor, w: f64) -> Result<Tensor> {
        let w32 = w as f32;
        let d = (y - x)?;
        self.r(if w32.abs() < 0.5 {
            ((d * w)? + x)?
        } else {
            (y - (d * f64::from(1.0 - w32))?)?
        })
    }

    /// `x.addcmul_(a, b, value=s)`: `x + s·a·b`, left to right.
    fn addcmul(&self, x: &Tensor, a: &Tensor, b: &Tensor, s: f64) -> Result<Tensor> {
        self.r((((a * s)? * b)? + x)?)
    }

    /// `x.addcdiv_(a, b, value=s)`: `x + s·a / b`, left to right.
    fn addcdiv(&self, x: &Tensor, a: &Tensor, b: &Tensor, s: f64) -> Result<Tensor> {
        self.r((((a * s)? / b)? + x)?)
    }

    fn sqrt(&self, x: &Tensor) -> Result<Tensor> {
        self.r(x.sqrt()?)
    }

    /// `x / s`: a true division (candle's `x / f64` multiplies by the reciprocal).
    fn div(&self, x: &Tensor, s: f64) -> Result<Tensor> {
        let s = Tensor::new(s as f32, &self.device)?;
        self.r(x.broadcast_div(&s)?)
    }

    /// `x.add_(s)`
    fn add(&self, x: &Tensor, s: f64) -> Result<Tensor> {
        self.r((x + s)?)
    }
}

// ANCHOR: torch_step
/// `torch.optim.AdamW`'s update of one parameter (`_single_tensor_adam` with decoupled weight
/// decay), operation by operation.
pub(super) fn torch_step(
    o: &Ops,
    x: Update,
    c: &AdamWConfig,
    wd: f64,
    bc1: f64,
    bc2: f64,
) -> Result<Update> {
    let Update { mut w, g, m, v } = x;
    if wd != 0.0 {
        w = o.mul(&w, 1.0 - c.lr * wd)?; // param.mul_(1 - lr * weight_decay)
    }
    let m = o.lerp(&m, &g, 1.0 - c.beta1)?; // exp_avg.lerp_(grad, 1 - beta1)
    let v = o.mul(&v, c.beta2)?; // exp_avg_sq.mul_(beta2)
    let v = o.addcmul(&v, &g, &g, 1.0 - c.beta2)?; //   .addcmul_(grad, grad, value=1 - beta2)
    let step_size = c.lr / bc1;
    let denom = o.sqrt(&v)?; // (exp_avg_sq.sqrt()
    let denom = o.div(&denom, bc2.sqrt())?; //   / bias_correction2_sqrt)
    let denom = o.add(&denom, c.eps)?; //   .add_(eps)
    let w = o.addcdiv(&w, &m, &denom, -step_size)?; // param.addcdiv_(exp_avg, denom, value=-step_size)
    Ok(Update { w, g, m, v })
}
// ANCHOR_END: torch_step

// ANCHOR: transformers4_step
/// transformers 4.x `AdamW.step` for one parameter, operation by operation: `eps` joins
/// `sqrt(v)` before any bias correction, which instead scales the step size.
pub(super) fn transformers4_step(
    o: &Ops,
    x: Update,
    c: &AdamWConfig,
    wd: f64,
    bc1: f64,
    bc2: f64,
) -> Result<Update> {
    let Update { w, g, m, v } = x;
    let m = o.mul(&m, c.beta1)?; // exp_avg.mul_(beta1)
    let m = o.add_scaled(&m, &g, 1.0 - c.beta1)?; //   .add_(grad, alpha=1.0 - beta1)
    let v = o.mul(&v, c.beta2)?; // exp_avg_sq.mul_(beta2)
    let v = o.addcmul(&v, &g, &g, 1.0 - c.beta2)?; //   .addcmul_(grad, grad, value=1.0 - beta2)
    let denom = o.sqrt(&v)?; // exp_avg_sq.sqrt()
    let denom = o.add(&denom, c.eps)?; //   .add_(eps)
    let step_size = c.lr * bc2.sqrt() / bc1;
    let mut w = o.addcdiv(&w, &m, &denom, -step_size)?; // p.addcdiv_(exp_avg, denom, value=-step_size)
    if wd > 0.0 {
        w = o.add_scaled(&w, &w, -c.lr * wd)?; // p.add_(p, alpha=-lr * weight_decay)
    }
    Ok(Update { w, g, m, v })
}
// ANCHOR_END: transformers4_step

/// [`torch_step`] and [`transformers4_step`] on one f32 element: every operation of theirs in
/// the same order, with candle's arithmetic (`x * s` is `x * s + 0`, as its affine map computes
/// it, which turns -0 into +0), so that the result is theirs bit for bit.
pub(super) struct ElementStep {
    variant: AdamWVariant,
    decay_factor: f32,
    beta1: f32,
    one_minus_beta1: f32,
    lerp_rest: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
    neg_decay: f32,
    decays: bool,
    /// The half type each operation's result is rounded to, as [`Ops::round`].
    round: Option<DType>,
}

/// How an [`ElementStep`] rounds each operation's result: not at all (f32), or to a half type.
trait Round {
    fn r(x: f32) -> f32;
}

struct Exact;
struct ToBf16;
struct ToF16;

impl Round for Exact {
    #[inline(always)]
    fn r(x: f32) -> f32 {
        x
    }
}

impl Round for ToBf16 {
    #[inline(always)]
    fn r(x: f32) -> f32 {
        // half's rounding, without its branches (this loop vectorises).
        crate::kernels::round_bf16(x)
    }
}

impl Round for ToF16 {
    #[inline(always)]
    fn r(x: f32) -> f32 {
        half::f16::from_f32(x).to_f32()
    }
}

impl ElementStep {
    /// The step of `c` for one parameter; `round` as [`Ops::round`].
    pub(super) fn new(c: &AdamWConfig, wd: f64, bc1: f64, bc2: f64, round: Option<DType>) -> Self {
        let w32 = (1.0 - c.beta1) as f32;
        let step_size = match c.variant {
            AdamWVariant::Torch => c.lr / bc1,
            AdamWVariant::Transformers4 => c.lr * bc2.sqrt() / bc1,
        };
        Self {
            variant: c.variant,
            decay_factor: (1.0 - c.lr * wd) as f32,
            beta1: c.beta1 as f32,
            one_minus_beta1: w32,
            lerp_rest: f64::from(1.0 - w32) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: c.eps as f32,
            neg_step_size: (-step_size) as f32,
            neg_decay: (-c.lr * wd) as f32,
            decays: match c.variant {
                AdamWVariant::Torch => wd != 0.0,
                AdamWVariant::Transformers4 => wd > 0.0,
            },
            round,
        }
    }

    /// The update over whole buffers, element by element. The choices that hold for every
    /// element (variant, decay, which form of the lerp) are made once, outside the loop, so that
    /// the loop is straight-line arithmetic the compiler vectorises; compiled again for AVX-512
    /// and for AVX2 and taken where the CPU has them. Vector `+ - * / sqrt` round each lane as
    /// the scalar operations do (and no multiply-add is fused), so all give the same bits.
    pub(super) fn apply_slices(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, which `apply_slices_avx512` is compiled for.
            return unsafe { self.apply_slices_avx512(w, g, m, v) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, which `apply_slices_avx2` is compiled for.
            return unsafe { self.apply_slices_avx2(w, g, m, v) };
        }
        self.apply_slices_generic(w, g, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply_slices_avx512(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_slices_generic(w, g, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_slices_avx2(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_slices_generic(w, g, m, v)
    }

    #[inline(always)]
    fn apply_slices_generic(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        match self.round {
            Some(DType::BF16) => self.apply_rounded::<ToBf16>(w, g, m, v),
            Some(DType::F16) => self.apply_rounded::<ToF16>(w, g, m, v),
            _ => self.apply_rounded::<Exact>(w, g, m, v),
        }
    }

    #[inline(always)]
    fn apply_rounded<R: Round>(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let small_lerp = self.one_minus_beta1.abs() < 0.5;
        match (self.variant, self.decays, small_lerp) {
            (AdamWVariant::Torch, true, true) => each(w, g, m, v, |w, g, m, v| {
                self.torch::<R, true, true>(w, g, m, v)
            }),
            (AdamWVariant::Torch, true, false) => each(w, g, m, v, |w, g, m, v| {
                self.torch::<R, true, false>(w, g, m, v)
            }),
            (AdamWVariant::Torch, false, true) => each(w, g, m, v, |w, g, m, v| {
                self.torch::<R, false, true>(w, g, m, v)
            }),
            (AdamWVariant::Torch, false, false) => each(w, g, m, v, |w, g, m, v| {
                self.torch::<R, false, false>(w, g, m, v)
            }),
            (AdamWVariant::Transformers4, true, _) => each(w, g, m, v, |w, g, m, v| {
                self.transformers4::<R, true>(w, g, m, v)
            }),
            (AdamWVariant::Transformers4, false, _) => each(w, g, m, v, |w, g, m, v| {
                self.transformers4::<R, false>(w, g, m, v)
            }),
        }
    }

    /// `torch.optim.AdamW` on one element, each operation's result rounded by `R`.
    /// `SMALL_LERP`: PyTorch's `lerp` computes `m + w·(g - m)` for a weight under 0.5 and
    /// `g - (1 - w)·(g - m)` otherwise.
    #[inline(always)]
    fn torch<R: Round, const DECAYS: bool, const SMALL_LERP: bool>(
        &self,
        w: &mut f32,
        g: f32,
        m: &mut f32,
        v: &mut f32,
    ) {
        if DECAYS {
            *w = R::r(scaled(*w, self.decay_factor));
        }
        let d = g - *m;
        *m = R::r(if SMALL_LERP {
            *m + scaled(d, self.one_minus_beta1)
        } else {
            g - scaled(d, self.lerp_rest)
        });
        *v = R::r(scaled(*v, self.beta2));
        *v = R::r(*v + scaled(g, self.one_minus_beta2) * g);
        let denom = R::r(R::r(v.sqrt()) / self.bc2_sqrt);
        let denom = R::r(denom * 1.0 + self.eps);
        *w = R::r(*w + scaled(*m, self.neg_step_size) / denom);
    }

    /// transformers 4's `AdamW` on one element, each operation's result rounded by `R`.
    #[inline(always)]
    fn transformers4<R: Round, const DECAYS: bool>(
        &self,
        w: &mut f32,
        g: f32,
        m: &mut f32,
        v: &mut f32,
    ) {
        *m = R::r(scaled(*m, self.beta1));
        *m = R::r(*m + scaled(g, self.one_minus_beta1));
        *v = R::r(scaled(*v, self.beta2));
        *v = R::r(*v + scaled(g, self.one_minus_beta2) * g);
        let denom = R::r(R::r(v.sqrt()) * 1.0 + self.eps);
        *w = R::r(*w + scaled(*m, self.neg_step_size) / denom);
        if DECAYS {
            *w = R::r(*w + scaled(*w, self.neg_decay));
        }
    }
}

/// `f` on each element of the four buffers (as long as `g`).
#[inline(always)]
fn each<F: Fn(&mut f32, f32, &mut f32, &mut f32)>(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    f: F,
) {
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        f(w, g, m, v)
    }
}

/// `x * s` as candle's affine map computes it: `x * s + 0`, which turns -0 into +0.
#[inline(always)]
fn scaled(x: f32, s: f32) -> f32 {
    x * s + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::adamw::HalfMoments;

    /// The one-pass update is the operations' own, bit for bit, in both variants, with and
    /// without weight decay, over signed zeros, tiny and large values, in f32 and with every
    /// result rounded to bf16 or f16 (on values of that type).
    #[test]
    fn element_step_is_the_operations_bit_for_bit() {
        let n = 4099;
        let value = |i: usize, k: u64| {
            let x = ((i as u64 * 2_654_435_761 + k * 97) % 10_007) as f32 / 10_007.0 - 0.5;
            match i % 7 {
                0 => 0.0,
                1 => -0.0,
                2 => x * 1e-6,
                _ => x,
            }
        };
        let cpu = Device::Cpu;
        let tensor = |k: u64, abs: bool, round: Option<DType>| {
            let v: Vec<f32> = (0..n)
                .map(|i| if abs { value(i, k).abs() } else { value(i, k) })
                .collect();
            let t = Tensor::from_vec(v, n, &cpu).unwrap();
            match round {
                Some(d) => t.to_dtype(d).unwrap().to_dtype(DType::F32).unwrap(),
                None => t,
            }
        };
        let rounds = [None, Some(DType::BF16), Some(DType::F16)];
        for (variant, round) in [AdamWVariant::Torch, AdamWVariant::Transformers4]
            .into_iter()
            .flat_map(|v| rounds.map(|r| (v, r)))
        {
            for wd in [0.0, 0.01] {
                let c = AdamWConfig {
                    lr: 3e-4,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-6,
                    weight_decay: wd,
                    variant,
                    half_moments: HalfMoments::F32,
                };
                let (bc1, bc2) = (1.0 - 0.9f64.powf(3.0), 1.0 - 0.999f64.powf(3.0));
                let x = Update {
                    w: tensor(1, false, round),
                    g: tensor(2, false, round),
                    m: tensor(3, false, round),
                    v: tensor(4, true, round),
                };
                let ops = Ops {
                    round,
                    device: cpu.clone(),
                };
                let flat = |t: &Tensor| t.to_vec1::<f32>().unwrap();
                let (mut w, g, mut m, mut v) = (flat(&x.w), flat(&x.g), flat(&x.m), flat(&x.v));
                let y = match variant {
                    AdamWVariant::Torch => torch_step(&ops, x, &c, wd, bc1, bc2),
                    AdamWVariant::Transformers4 => transformers4_step(&ops, x, &c, wd, bc1, bc2),
                }
                .unwrap();
                ElementStep::new(&c, wd, bc1, bc2, round).apply_slices(&mut w, &g, &mut m, &mut v);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&w),
                    bits(&flat(&y.w)),
                    "{variant:?} {round:?} wd {wd}: weights"
                );
                assert_eq!(
                    bits(&m),
                    bits(&flat(&y.m)),
                    "{variant:?} {round:?} wd {wd}: m"
                );
                assert_eq!(
                    bits(&v),
                    bits(&flat(&y.v)),
                    "{variant:?} {round:?} wd {wd}: v"
                );
            }
        }
    }
}
