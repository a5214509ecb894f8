//! The dropout mask: which elements a dropout layer keeps, made from a seed on every core, and
//! `x * mask` as one operation whose backward pass makes the same mask again. The layer that
//! draws the seeds is `Dropout` (`src/dropout.rs`); the training attention applies a mask inside
//! itself ([`super::attention`]).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::{as_f32, rounded_like};

/// Mask elements per parallel task.
const MASK_BLOCK: usize = 1 << 16;

/// SplitMix64's increment (2^64 over the golden ratio) and its output function.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where an operation that applies dropout inside itself gets its mask: the next mask a dropout
/// layer would apply, drawn from its stream as its own forward pass would draw it; `None` when
/// the layer would not drop anything.
pub trait DrawMask {
    fn next_mask(&self) -> Option<Mask>;
}

/// A dropout mask: element `j` is `1 / keep` with probability `keep`, else 0. Element `j`'s
/// number is SplitMix64's `j`-th output from a start made of the seed: a function of the seed
/// and `j` alone, so the mask is the same whatever the number of threads and whichever part of
/// it is made, and the same again when the backward pass needs it. Made element by element
/// without a generator's state, it vectorises (a ChaCha stream per block drew one number at
/// a time).
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

    /// `f(x_j, m_j)` into each `x_j` of `out`, which holds elements `start..` of the mask.
    #[inline(always)]
    fn each(&self, start: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        let origin = mix64(self.seed.wrapping_add(GOLDEN));
        let (keep, scale) = (self.keep, 1.0 / self.keep);
        let at = origin.wrapping_add((start as u64).wrapping_mul(GOLDEN));
        for (t, x) in out.iter_mut().enumerate() {
            let z = mix64(at.wrapping_add((t as u64).wrapping_mul(GOLDEN)));
            // The top 24 bits as a uniform number in [0, 1), as an f32 draw takes them.
            let u = ((z >> 40) as i32) as f32 * (1.0 / (1u32 << 24) as f32);
            *x = f(*x, if u < keep { scale } else { 0.0 });
        }
    }

    /// [`Mask::each`] built for the widest vectors this CPU has.
    fn each_fast(&self, start: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
                // SAFETY: the CPU has the features the function is compiled for.
                return unsafe { self.each_avx512(start, out, f) };
            }
            if is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                return unsafe { self.each_avx2(start, out, f) };
            }
        }
        self.each(start, out, f)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn each_avx512(&self, start: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        self.each(start, out, f)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn each_avx2(&self, start: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
        self.each(start, out, f)
    }

    /// `x *= mask` in place, block by block on every core: the product the dropout layer's
    /// forward pass computes (and its backward pass, for a gradient).
    pub(crate) fn apply_in_place(&self, x: &mut [f32]) {
        x.par_chunks_mut(MASK_BLOCK)
            .enumerate()
            .for_each(|(i, block)| self.each_fast(i * MASK_BLOCK, block, |x, m| x * m));
    }

    /// `x *= mask` for `x` holding elements `start..start + x.len()` of the mask, on this
    /// thread.
    pub(crate) fn apply_at(&self, start: usize, x: &mut [f32]) {
        self.each_fast(start, x, |x, m| x * m);
    }

    /// Elements `start..start + out.len()` of the mask, on this thread.
    pub(crate) fn fill(&self, start: usize, out: &mut [f32]) {
        self.each_fast(start, out, |_, m| m);
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
        let mut mask = vec![1f32; n];
        self.apply_in_place(&mut mask);
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
        let mut y = as_f32(self.name(), s, l)?.into_owned();
        self.apply_in_place(&mut y);
        let y = rounded_like(s, y);
        Ok((y, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept share is `keep`, neighbours are kept independently of each other, another
    /// seed gives another mask, and any part of a mask made alone is that part of the whole.
    #[test]
    fn masks_keep_their_share_independently() {
        let n = 1 << 21;
        for keep in [0.9f32, 0.5] {
            let mask = Mask::new(7, keep).values(n);
            let kept: Vec<bool> = mask.iter().map(|&m| m != 0.0).collect();
            assert!(mask.iter().all(|&m| m == 0.0 || m == 1.0 / keep));
            let share = kept.iter().filter(|&&k| k).count() as f64 / n as f64;
            // Four standard deviations of a binomial share over n draws.
            let sd = (f64::from(keep) * f64::from(1.0 - keep) / n as f64).sqrt();
            assert!(
                (share - f64::from(keep)).abs() < 4.0 * sd,
                "{keep}: {share}"
            );
            let both = kept.windows(2).filter(|w| w[0] && w[1]).count() as f64 / (n - 1) as f64;
            assert!(
                (both - share * share).abs() < 8.0 * sd,
                "{keep}: pairs {both}"
            );
            let other = Mask::new(8, keep).values(n);
            let same = mask.iter().zip(&other).filter(|(a, b)| a == b).count() as f64;
            let chance = share * share + (1.0 - share) * (1.0 - share);
            assert!(
                (same / n as f64 - chance).abs() < 8.0 * sd,
                "{keep}: seeds agree"
            );
        }
        let whole = Mask::new(3, 0.9).values(200_000);
        let mut part = vec![0f32; 70_001];
        Mask::new(3, 0.9).fill(123_456, &mut part);
        assert_eq!(part[..], whole[123_456..193_457]);
    }
}
