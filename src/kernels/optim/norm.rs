//! The two passes of gradient clipping over a gradient's own buffer: the sum of its squares,
//! and its scaling in place. As tensor operations each is a new gradient-sized tensor (`g²`,
//! `g · c`) and two or three passes over memory; at an update that is the whole model's size,
//! once for the norm and again for the clipping.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::kernels::simd::lane_sum;

/// Elements per parallel task.
const CHUNK: usize = 1 << 16;

/// `Σ g²` of a contiguous f32 gradient on the CPU, `None` for any other (then compute it with
/// tensor operations). Each chunk is summed in f32 lanes and the chunks' sums in f64: an order
/// of its own, as candle's `sum_all` and PyTorch's reduction each have theirs, and closer to the
/// exact sum than either.
pub fn sum_of_squares(g: &Tensor) -> candle_core::Result<Option<f32>> {
    if !g.device().is_cpu() || g.dtype() != DType::F32 || !g.is_contiguous() {
        return Ok(None);
    }
    let (storage, layout) = g.storage_and_layout();
    let Storage::Cpu(s) = &*storage else {
        return Ok(None);
    };
    let x = crate::kernels::ops::contiguous::<f32>("sum-of-squares", s, layout)?;
    Ok(Some(sum_of_squares_of_slice(x)))
}

/// [`sum_of_squares`] of a gradient held as a host slice (the written-out pass's sums).
pub fn sum_of_squares_of_slice(x: &[f32]) -> f32 {
    let sum: f64 = x
        .par_chunks(CHUNK)
        .map(|c| {
            let mut squares = [0f32; 256];
            let mut total = 0f64;
            for part in c.chunks(squares.len()) {
                let sq = &mut squares[..part.len()];
                sq.iter_mut().zip(part).for_each(|(s, &v)| *s = v * v);
                total += f64::from(lane_sum(sq));
            }
            total
        })
        .sum();
    sum as f32
}

/// `g *= c` over a host slice, in parallel: [`scale_in_place`]'s f32 case.
pub fn scale_slice(g: &mut [f32], c: f32) {
    g.par_chunks_mut(CHUNK)
        .for_each(|d| d.iter_mut().for_each(|x| *x *= c));
}

/// `g *= c` in place on the CPU for an f32, f16 or bf16 gradient (a half one widened, multiplied
/// in f32 and rounded once, as `(g.to_dtype(F32) * c).to_dtype(..)` does); `false`, touching
/// nothing, where that does not apply. `g` must share its storage with no other tensor, as a
/// gradient candle's backward pass returns does not.
pub fn scale_in_place(g: &Tensor, c: f32) -> candle_core::Result<bool> {
    let fits = g.device().is_cpu()
        && matches!(g.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && g.is_contiguous();
    if !fits {
        return Ok(false);
    }
    g.inplace_op1(&Scale(c))?;
    Ok(true)
}

struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "scale-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("{}: expected a contiguous tensor", self.name())
        };
        let c = self.0;
        match s {
            CpuStorage::F32(d) => scale_slice(&mut d[start..end], c),
            CpuStorage::F16(d) => d[start..end].par_chunks_mut(CHUNK).for_each(|d| {
                d.iter_mut()
                    .for_each(|x| *x = f16::from_f32(x.to_f32() * c))
            }),
            CpuStorage::BF16(d) => d[start..end].par_chunks_mut(CHUNK).for_each(|d| {
                d.iter_mut().for_each(|x| {
                    *x = bf16::from_bits(crate::kernels::rounding::bf16_bits(x.to_f32() * c))
                })
            }),
            _ => candle_core::bail!("{}: expected f32, f16 or bf16 data", self.name()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize) -> Vec<f32> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) % 10_007) as f32 / 3e3 - 1.5)
            .collect()
    }

    /// Against an f64 sum, over a length that leaves partial chunks and partial lane groups.
    #[test]
    fn sum_of_squares_is_the_sum() {
        let x = values(3 * CHUNK + 1_001);
        let exact: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let t = Tensor::from_vec(x, 3 * CHUNK + 1_001, &Device::Cpu).unwrap();
        let got = sum_of_squares(&t).unwrap().unwrap();
        assert!(
            (f64::from(got) - exact).abs() <= exact * 1e-6,
            "{got} vs {exact}"
        );
        let half = t.to_dtype(DType::BF16).unwrap();
        assert!(sum_of_squares(&half).unwrap().is_none());
    }

    /// The tensor operations' product, in each dtype.
    #[test]
    fn scaling_in_place_is_the_product() {
        let c = 0.3712_f32;
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let g = Tensor::from_vec(values(CHUNK + 77), CHUNK + 77, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let want = (g.to_dtype(DType::F32).unwrap() * f64::from(c))
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(scale_in_place(&g, c).unwrap());
            let got = g.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            // Equal as numbers: the tensor product adds 0 after multiplying, making -0 +0.
            assert!(got.iter().zip(&want).all(|(a, b)| a == b), "{dtype:?}");
        }
    }
}
