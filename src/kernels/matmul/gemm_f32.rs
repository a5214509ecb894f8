//! The one call into the `gemm` crate that every f32 matrix product of the kernels makes, and
//! the one-row product on a chunk of columns that decoding splits over the pool.

use super::operand::Strided;

/// `dst = lhs @ rhs` for `(m, k) @ (k, n)` in f32, or `dst += lhs @ rhs` with `accumulate`:
/// the `gemm` crate's call with everything this file does not vary left out.
///
/// # Safety
/// Every element addressed through the three views for these dimensions must be in bounds,
/// and nothing else may read or write `dst`'s elements meanwhile.
pub(crate) unsafe fn matmul_f32(
    (m, k, n): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's guarantee; gemm reads lhs and rhs and writes dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride as isize,
            dst.row_stride as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// gemm's threading on candle's pool size (one thread: none).
pub(crate) fn pool_parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        threads => gemm::Parallelism::Rayon(threads),
    }
}

/// `dst[j] = sum_k x[k] * rhs[k, j]` for the `dst.len()` columns starting at `col`, where
/// `rhs[k, j]` lives at `rhs[k * rhs_rs + j * rhs_cs]`: candle's gemm call restricted to a chunk.
///
/// # Safety
/// `rhs` must hold every element addressed for `k < x.len()` and `col + dst.len()` columns.
pub(crate) unsafe fn gemv_chunk(
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
        matmul_f32(
            (1, k, n),
            Strided::rows(dst.as_mut_ptr(), n),
            Strided::rows(x.as_ptr(), k),
            Strided {
                ptr: rhs.as_ptr().add(col * rhs_cs),
                row_stride: rhs_rs,
                col_stride: rhs_cs,
            },
            false,
            gemm::Parallelism::None,
        )
    }
}
