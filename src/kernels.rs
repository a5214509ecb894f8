//! CPU fast paths for inference: the same arithmetic as the plain candle code in
//! [`crate::model`], arranged so that both cores work when decoding one token at a time.
//!
//! Generating with the KV cache feeds the model one token per step, so every linear layer is a
//! vector-matrix product (`(1, in) @ (in, out)`). candle hands that to the `gemm` crate, whose
//! matrix-vector kernel runs on a single thread: decoding then uses one core of two, and is
//! bound by how fast one core streams the weights from memory. Here the output columns are
//! split into chunks and each chunk's product runs on the rayon pool (the one candle's own
//! matmuls use). Each output element is still the same dot product over the same inputs in the
//! same order, so the results equal the plain path's; `tests/perf_paths.rs` checks it.
//!
//! These paths only run for f32 tensors on the CPU that need no gradient; everything else takes
//! the plain path, which is what the book shows.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Output columns per chunk are a multiple of this (a 64-byte cache line of f32).
const COLUMN_ALIGN: usize = 16;
/// Chunks per pool thread, so that a thread slowed by other work does not hold up the rest.
const CHUNKS_PER_THREAD: usize = 4;

/// Whether `x` may take a fast path: a CPU f32 tensor outside any gradient computation.
fn fast_eligible(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// `(1, in) @ (in, out) + (out)`: a Conv1D on one token, threaded over the output columns.
/// Returns `None` when the fast path does not apply (more than one row, a gradient to track,
/// another device or dtype); the caller then takes the plain path.
pub fn linear_one_row(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    if !fast_eligible(&[x, weight, bias]) || !matches!(x.dims2(), Ok((1, _))) {
        return Ok(None);
    }
    Ok(Some(x.apply_op3_no_bwd(weight, bias, &LinearOneRow)?))
}

/// `(1, C) @ wte^T`: the tied LM head on one position, threaded over the vocabulary.
/// Returns `None` when the fast path does not apply.
pub fn tied_head_one_row(x: &Tensor, wte: &Tensor) -> Result<Option<Tensor>> {
    if !fast_eligible(&[x, wte]) || !matches!(x.dims2(), Ok((1, _))) {
        return Ok(None);
    }
    Ok(Some(x.apply_op2_no_bwd(wte, &TiedHeadOneRow)?))
}

/// The contiguous f32 data of a CPU tensor, or an error naming the op.
fn contiguous_f32<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: expected f32 data"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!(
            "{op}: expected a contiguous tensor, got strides {:?}",
            l.stride()
        ),
    }
}

/// Splits `0..n` into aligned chunks for the pool's threads.
fn column_chunks(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per = n.div_ceil(threads * CHUNKS_PER_THREAD);
    per.div_ceil(COLUMN_ALIGN).max(1) * COLUMN_ALIGN
}

/// `dst[j] = sum_k x[k] * rhs[k, j]` for the `dst.len()` columns starting at `col`, where
/// `rhs[k, j]` lives at `rhs[k * rhs_rs + j * rhs_cs]`: candle's gemm call restricted to a chunk.
///
/// # Safety
/// `rhs` must hold every element addressed for `k < x.len()` and `col + dst.len()` columns.
unsafe fn gemv_chunk(
    dst: &mut [f32],
    x: &[f32],
    rhs: &[f32],
    col: usize,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    let (n, k) = (dst.len(), x.len());
    // SAFETY: the pointers address `dst` (1 × n, row-major), `x` (1 × k) and the caller-checked
    // range of `rhs`; gemm reads `rhs` and `x`, writes `dst`, and nothing else aliases `dst`.
    unsafe {
        gemm::gemm(
            1,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr().add(col * rhs_cs),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

struct LinearOneRow;

impl CustomOp3 for LinearOneRow {
    fn name(&self) -> &'static str {
        "linear-one-row"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let w = contiguous_f32(self.name(), ws, wl)?;
        let b = contiguous_f32(self.name(), bs, bl)?;
        let (k, n) = wl.shape().dims2()?;
        if x.len() != k || b.len() != n {
            candle_core::bail!(
                "{}: input {:?}, weight {:?}, bias {:?} do not fit",
                self.name(),
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let mut y = vec![0f32; n];
        let chunk = column_chunks(n);
        y.par_chunks_mut(chunk).enumerate().for_each(|(i, dst)| {
            let col = i * chunk;
            // SAFETY: columns col..col + dst.len() <= n of the (k, n) row-major weight.
            unsafe { gemv_chunk(dst, x, w, col, n, 1) };
            // The bias is added after the product, as the plain path's broadcast_add does.
            for (d, b) in dst.iter_mut().zip(&b[col..]) {
                *d += b;
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((1, n))))
    }
}

struct TiedHeadOneRow;

impl CustomOp2 for TiedHeadOneRow {
    fn name(&self) -> &'static str {
        "tied-head-one-row"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let wte = contiguous_f32(self.name(), ws, wl)?;
        let (v, c) = wl.shape().dims2()?;
        if x.len() != c {
            candle_core::bail!(
                "{}: hidden state {:?} does not fit wte {:?}",
                self.name(),
                xl.dims(),
                wl.dims()
            );
        }
        let mut y = vec![0f32; v];
        let chunk = column_chunks(v);
        y.par_chunks_mut(chunk).enumerate().for_each(|(i, dst)| {
            // SAFETY: rows i*chunk.. of the (V, C) row-major wte, read as columns of wte^T.
            unsafe { gemv_chunk(dst, x, wte, i * chunk, 1, c) };
        });
        Ok((CpuStorage::F32(y), Shape::from((1, v))))
    }
}
