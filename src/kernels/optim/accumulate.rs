//! Gradient accumulation in place: `sum += g` over the sum's own buffer.

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use crate::kernels::ops::contiguous;

/// Adds `g` into `sum` in place, on the CPU in f32, f16 or bf16: one parallel pass and no new
/// buffer, where `(sum + g)` allocates a parameter-sized tensor (the whole model's size per
/// micro-step, with the page faults of a fresh buffer) and reads both. Returns `false`, and
/// touches nothing, where it does not apply (another device, other dtypes or shapes): then add
/// the plain way.
///
/// `sum` must be a tensor no other tensor shares storage with - a gradient as candle's backward
/// pass returns it is one (each is the fresh output of an addition).
pub fn add_in_place(sum: &Tensor, g: &Tensor) -> candle_core::Result<bool> {
    if !sum.device().is_cpu()
        || !g.device().is_cpu()
        || sum.dtype() != g.dtype()
        || sum.shape() != g.shape()
        || !sum.is_contiguous()
        || !g.is_contiguous()
    {
        return Ok(false);
    }
    sum.inplace_op2(g, &AddInPlace)?;
    Ok(true)
}

struct AddInPlace;

/// Elements per parallel task: large enough that a task is not all overhead.
const CHUNK: usize = 1 << 16;

fn add_slices<T: Copy + Send + Sync + std::ops::Add<Output = T>>(dst: &mut [T], src: &[T]) {
    dst.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d = *d + *s));
}

impl InplaceOp2 for AddInPlace {
    fn name(&self) -> &'static str {
        "add-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let Some((start, end)) = l1.contiguous_offsets() else {
            candle_core::bail!("{}: the sum must be contiguous", self.name())
        };
        match (s1, s2) {
            (CpuStorage::F32(d), s) => {
                add_slices(&mut d[start..end], contiguous(self.name(), s, l2)?)
            }
            (CpuStorage::F16(d), s) => {
                add_slices(&mut d[start..end], contiguous(self.name(), s, l2)?)
            }
            (CpuStorage::BF16(d), s) => {
                add_slices(&mut d[start..end], contiguous(self.name(), s, l2)?)
            }
            _ => candle_core::bail!("{}: expected f32, f16 or bf16 data", self.name()),
        }
        Ok(())
    }
}
