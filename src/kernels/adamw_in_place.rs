//! An optimiser's element-wise update made in place over four f32 buffers at once: the
//! weight, its gradient and the two moments.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

use super::contiguous;

/// `update(w, g, m, v)` over chunks of the four buffers, in place and in parallel, where all
/// four tensors are contiguous f32 on the CPU, of one shape, and `w`, `m` and `v` have storages
/// of their own. Returns `false`, touching nothing, where that does not hold: then update the
/// plain way. This replaces a dozen tensor operations, each allocating a parameter-sized
/// result, with one pass over memory; `update` decides the arithmetic element by element (the
/// chunks are the same parts of each buffer), so the result is the operations' own when it does
/// them in the same order in f32.
pub fn update_in_place<F>(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    update: F,
) -> candle_core::Result<bool>
where
    F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
{
    let fits = |t: &Tensor| {
        t.device().is_cpu()
            && t.dtype() == candle_core::DType::F32
            && t.is_contiguous()
            && t.shape() == w.shape()
    };
    if ![w, g, m, v].into_iter().all(fits)
        || w.id() == m.id()
        || w.id() == v.id()
        || m.id() == v.id()
    {
        return Ok(false);
    }
    // Three buffers are written: each is reached through candle's in-place call on it, nested
    // so that all three are held at once.
    m.inplace_op1(&WithMoment {
        v,
        w,
        g,
        update: &update,
    })?;
    Ok(true)
}

/// A pointer to a buffer that the nested in-place calls hold exclusively meanwhile.
#[derive(Clone, Copy)]
struct Buffer(*mut f32, usize);

// SAFETY: each buffer is written only through its own index range by the element loop below,
// while candle's in-place calls hold it.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Elements `start..start + len`.
    ///
    /// # Safety
    /// The range must be in bounds, and no other live slice may overlap it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [f32] {
        debug_assert!(start + len <= self.1);
        // SAFETY: the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

fn buffer(op: &str, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<Buffer> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor")
    };
    match s {
        CpuStorage::F32(d) => Ok(Buffer(d[start..end].as_mut_ptr(), end - start)),
        _ => candle_core::bail!("{op}: expected f32 data"),
    }
}

struct WithMoment<'a, F> {
    v: &'a Tensor,
    w: &'a Tensor,
    g: &'a Tensor,
    update: &'a F,
}

impl<F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync> InplaceOp1 for WithMoment<'_, F> {
    fn name(&self) -> &'static str {
        "update-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let m = buffer(self.name(), s, l)?;
        self.v.inplace_op1(&WithMoments {
            m,
            w: self.w,
            g: self.g,
            update: self.update,
        })
    }
}

struct WithMoments<'a, F> {
    m: Buffer,
    w: &'a Tensor,
    g: &'a Tensor,
    update: &'a F,
}

impl<F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync> InplaceOp1 for WithMoments<'_, F> {
    fn name(&self) -> &'static str {
        "update-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let v = buffer(self.name(), s, l)?;
        self.w.inplace_op2(
            self.g,
            &Update {
                m: self.m,
                v,
                update: self.update,
            },
        )
    }
}

struct Update<'a, F> {
    m: Buffer,
    v: Buffer,
    update: &'a F,
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

impl<F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync> InplaceOp2 for Update<'_, F> {
    fn name(&self) -> &'static str {
        "update-in-place"
    }

    fn cpu_fwd(
        &self,
        s: &mut CpuStorage,
        l: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let w = buffer(self.name(), s, l)?;
        let g: &[f32] = contiguous(self.name(), gs, gl)?;
        let (m, v) = (self.m, self.v);
        if w.1 != g.len() || m.1 != g.len() || v.1 != g.len() {
            candle_core::bail!("{}: buffers of different lengths", self.name());
        }
        let update = self.update;
        g.par_chunks(CHUNK).enumerate().for_each(|(c, g)| {
            let start = c * CHUNK;
            // SAFETY: the three buffers are distinct (checked by id, each held by its own
            // in-place call), as long as `g`, and chunk `c` touches only its own range.
            let (w, m, v) = unsafe {
                (
                    w.range(start, g.len()),
                    m.range(start, g.len()),
                    v.range(start, g.len()),
                )
            };
            update(w, g, m, v);
        });
        Ok(())
    }
}
