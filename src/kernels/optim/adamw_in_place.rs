//! An optimiser's element-wise update made in place over four buffers at once: the weight, its
//! gradient and the two moments, each f32, f16 or bf16.

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

/// `update(w, g, m, v)` over chunks of the four buffers, in place and in parallel, where all
/// four tensors are contiguous on the CPU, of one shape, each f32, f16 or bf16, and `w`, `m`
/// and `v` have storages of their own. Returns `false`, touching nothing, where that does not
/// hold: then update the plain way. This replaces a dozen tensor operations, each allocating a
/// parameter-sized result, with one pass over memory; `update` decides the arithmetic element
/// by element (the chunks are the same parts of each buffer), so the result is the operations'
/// own when it does them in the same order in f32. `update` always sees f32: a half buffer is
/// widened chunk by chunk and `update`'s results rounded back into it (to nearest, ties to
/// even, as candle's `to_dtype` rounds) - so an update that rounds its results to that type
/// itself, as PyTorch's half-precision AdamW does, stores exactly what it computed. The
/// gradient is such a tensor or an f32 slice as long as `w` ([`Gradient`]).
pub fn update_in_place<F>(
    w: &Tensor,
    g: Gradient,
    m: &Tensor,
    v: &Tensor,
    update: F,
) -> candle_core::Result<bool>
where
    F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
{
    let g_fits = match g {
        Gradient::Tensor(g) => {
            g.device().is_cpu()
                && matches!(g.dtype(), DType::F32 | DType::F16 | DType::BF16)
                && g.is_contiguous()
                && g.shape() == w.shape()
        }
        Gradient::Slice(g) => g.len() == w.elem_count(),
    };
    if !g_fits {
        return Ok(false);
    }
    update_with(w, g, m, v, &update)
}

/// Where a gradient is: a tensor (the graph's), or an f32 slice on the host (the written-out
/// pass's sums, which reach the update as they are).
#[derive(Clone, Copy)]
pub enum Gradient<'a> {
    Tensor(&'a Tensor),
    Slice(&'a [f32]),
}

fn update_with<F>(
    w: &Tensor,
    g: Gradient,
    m: &Tensor,
    v: &Tensor,
    update: &F,
) -> candle_core::Result<bool>
where
    F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
{
    let fits = |t: &Tensor| {
        t.device().is_cpu()
            && matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16)
            && t.is_contiguous()
            && t.shape() == w.shape()
    };
    if ![w, m, v].into_iter().all(fits) || w.id() == m.id() || w.id() == v.id() || m.id() == v.id()
    {
        return Ok(false);
    }
    // Three buffers are written: each is reached through candle's in-place call on it, nested
    // so that all three are held at once.
    let first = Holding {
        held: None,
        v,
        w,
        g,
        update,
    };
    m.inplace_op1(&first)?;
    Ok(true)
}

/// A pointer to a buffer that the nested in-place calls hold exclusively meanwhile.
#[derive(Clone, Copy)]
enum Buffer {
    F32(*mut f32, usize),
    F16(*mut f16, usize),
    BF16(*mut bf16, usize),
}

// SAFETY: each buffer is written only through its own index range by the element loop below,
// while candle's in-place calls hold it.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

thread_local! {
    /// A chunk of each buffer widened to f32, where one of them is half.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Buffer {
    fn len(&self) -> usize {
        match *self {
            Self::F32(_, n) | Self::F16(_, n) | Self::BF16(_, n) => n,
        }
    }

    /// Elements `start..start + len` of an f32 buffer, `None` for a half one.
    ///
    /// # Safety
    /// The range must be in bounds, and no other live slice may overlap it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn f32_range(&self, start: usize, len: usize) -> Option<&mut [f32]> {
        debug_assert!(start + len <= self.len());
        match *self {
            // SAFETY: the caller's guarantee.
            Self::F32(p, _) => Some(unsafe { std::slice::from_raw_parts_mut(p.add(start), len) }),
            _ => None,
        }
    }

    /// Elements `start..start + len`, to read.
    ///
    /// # Safety
    /// As [`Buffer::f32_range`], and nothing may write the range while the view lives.
    unsafe fn view<'a>(&self, start: usize, len: usize) -> Elements<'a> {
        debug_assert!(start + len <= self.len());
        // SAFETY: the caller's guarantee.
        unsafe {
            match *self {
                Self::F32(p, _) => Elements::F32(std::slice::from_raw_parts(p.add(start), len)),
                Self::F16(p, _) => Elements::F16(std::slice::from_raw_parts(p.add(start), len)),
                Self::BF16(p, _) => Elements::BF16(std::slice::from_raw_parts(p.add(start), len)),
            }
        }
    }

    /// `src` written to elements `start..start + src.len()`, rounded to the buffer's type.
    ///
    /// # Safety
    /// As [`Buffer::f32_range`].
    unsafe fn store(&self, start: usize, src: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        let n = src.len();
        // SAFETY: the caller's guarantee.
        unsafe {
            match *self {
                Self::F32(p, _) => {
                    std::slice::from_raw_parts_mut(p.add(start), n).copy_from_slice(src)
                }
                Self::F16(p, _) => {
                    std::slice::from_raw_parts_mut(p.add(start), n).convert_from_f32_slice(src)
                }
                // half's rounding, bit for bit, without its branches.
                Self::BF16(p, _) => std::slice::from_raw_parts_mut(p.add(start), n)
                    .iter_mut()
                    .zip(src)
                    .for_each(|(o, &x)| {
                        *o = bf16::from_bits(crate::kernels::rounding::bf16_bits(x))
                    }),
            }
        }
    }
}

/// Elements to read: the gradient, or a view of a [`Buffer`].
#[derive(Clone, Copy)]
enum Elements<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl Elements<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(d) => d.len(),
            Self::F16(d) => d.len(),
            Self::BF16(d) => d.len(),
        }
    }

    /// Elements `start..start + len` where they are f32, `None` for half ones.
    fn f32_range(&self, start: usize, len: usize) -> Option<&[f32]> {
        match *self {
            Self::F32(d) => Some(&d[start..start + len]),
            _ => None,
        }
    }

    /// Elements `start..start + out.len()`, widened to f32 into `out`.
    fn load(&self, start: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let end = start + out.len();
        match *self {
            Self::F32(d) => out.copy_from_slice(&d[start..end]),
            Self::F16(d) => d[start..end].convert_to_f32_slice(out),
            // bf16 widens by a shift (half's loop does not vectorise).
            Self::BF16(d) => out
                .iter_mut()
                .zip(&d[start..end])
                .for_each(|(o, x)| *o = f32::from_bits(u32::from(x.to_bits()) << 16)),
        }
    }
}

fn buffer(op: &str, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<Buffer> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: expected a contiguous tensor")
    };
    let n = end - start;
    match s {
        CpuStorage::F32(d) => Ok(Buffer::F32(d[start..end].as_mut_ptr(), n)),
        CpuStorage::F16(d) => Ok(Buffer::F16(d[start..end].as_mut_ptr(), n)),
        CpuStorage::BF16(d) => Ok(Buffer::BF16(d[start..end].as_mut_ptr(), n)),
        _ => candle_core::bail!("{op}: expected f32, f16 or bf16 data"),
    }
}

/// The nested in-place calls that hold the three written buffers at once: on `m` first
/// (`held` empty), then on `v` with `m` held, then on `w` with both (through [`Update`] or
/// [`UpdateFromSlice`], by where the gradient is).
struct Holding<'a, F> {
    held: Option<Buffer>,
    v: &'a Tensor,
    w: &'a Tensor,
    g: Gradient<'a>,
    update: &'a F,
}

impl<F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync> InplaceOp1 for Holding<'_, F> {
    fn name(&self) -> &'static str {
        "update-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let this = buffer(self.name(), s, l)?;
        let Some(m) = self.held else {
            return self.v.inplace_op1(&Holding {
                held: Some(this),
                v: self.v,
                w: self.w,
                g: self.g,
                update: self.update,
            });
        };
        let (v, update) = (this, self.update);
        match self.g {
            Gradient::Tensor(g) => self.w.inplace_op2(g, &Update { m, v, update }),
            Gradient::Slice(g) => self.w.inplace_op1(&UpdateFromSlice { m, v, g, update }),
        }
    }
}

struct UpdateFromSlice<'a, F> {
    m: Buffer,
    v: Buffer,
    g: &'a [f32],
    update: &'a F,
}

impl<F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync> InplaceOp1
    for UpdateFromSlice<'_, F>
{
    fn name(&self) -> &'static str {
        "update-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let w = buffer(self.name(), s, l)?;
        update_buffers(
            self.name(),
            w,
            Elements::F32(self.g),
            self.m,
            self.v,
            self.update,
        )
    }
}

struct Update<'a, F> {
    m: Buffer,
    v: Buffer,
    update: &'a F,
}

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
        let Some((g0, g1)) = gl.contiguous_offsets() else {
            candle_core::bail!("{}: expected a contiguous gradient", self.name())
        };
        let g = match gs {
            CpuStorage::F32(d) => Elements::F32(&d[g0..g1]),
            CpuStorage::F16(d) => Elements::F16(&d[g0..g1]),
            CpuStorage::BF16(d) => Elements::BF16(&d[g0..g1]),
            _ => candle_core::bail!("{}: expected an f32, f16 or bf16 gradient", self.name()),
        };
        update_buffers(self.name(), w, g, self.m, self.v, self.update)
    }
}

/// `update` over the four buffers chunk by chunk, in parallel.
fn update_buffers<F: Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync>(
    op: &str,
    w: Buffer,
    g: Elements,
    m: Buffer,
    v: Buffer,
    update: &F,
) -> candle_core::Result<()> {
    let n = g.len();
    if w.len() != n || m.len() != n || v.len() != n {
        candle_core::bail!("{op}: buffers of different lengths");
    }
    (0..n.div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let (start, len) = (c * CHUNK, CHUNK.min(n - c * CHUNK));
        // SAFETY: the three written buffers are distinct (checked by id, each held by its
        // own in-place call), as long as `g`, which is only read, and chunk `c` touches
        // only its own range.
        unsafe {
            let all_f32 = (
                w.f32_range(start, len),
                g.f32_range(start, len),
                m.f32_range(start, len),
                v.f32_range(start, len),
            );
            if let (Some(w), Some(g), Some(m), Some(v)) = all_f32 {
                return update(w, g, m, v);
            }
            // A half buffer among them: the chunk in f32 and back, through this thread's
            // scratch (a fresh zeroed buffer per chunk cost as much as the update itself).
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.resize(4 * CHUNK, 0.0);
                let (ws, rest) = scratch.split_at_mut(CHUNK);
                let (ms, rest) = rest.split_at_mut(CHUNK);
                let (vs, gs) = rest.split_at_mut(CHUNK);
                let (ws, ms, vs) = (&mut ws[..len], &mut ms[..len], &mut vs[..len]);
                w.view(start, len).load(0, ws);
                m.view(start, len).load(0, ms);
                v.view(start, len).load(0, vs);
                // An f32 gradient (a half model's, summed in f32) is read where it is.
                let gs: &[f32] = match g.f32_range(start, len) {
                    Some(g) => g,
                    None => {
                        g.load(start, &mut gs[..len]);
                        &gs[..len]
                    }
                };
                update(ws, gs, ms, vs);
                w.store(start, ws);
                m.store(start, ms);
                v.store(start, vs);
            });
        }
    });
    Ok(())
}
