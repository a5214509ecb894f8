//! The one call into the `gemm` crate that every f32 matrix product of the kernels makes, and
//! the one-row product on a chunk of columns that decoding splits over the pool.

use super::operand::Strided;

/// The longest run of the inner dimension handed to one gemm call. gemm cuts the inner
/// dimension into blocks sized from the CPU's L1 cache (512 on a 32 KiB L1, 1024 on a 48 KiB
/// one), and each block's sum is added to the output in turn - so the f32 sums, and whatever
/// is rounded from them (an f16 model's activations), would depend on the CPU. gemm never cuts
/// a run of 512 or fewer, so runs of this length are added in the same order everywhere.
const K_RUN: usize = 512;

/// `dst = lhs @ rhs` for `(m, k) @ (k, n)` in f32, or `dst += lhs @ rhs` with `accumulate`:
/// the `gemm` crate's call with everything this file does not vary left out, one call per run
/// of [`K_RUN`] of the inner dimension.
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
    let mut start = 0;
    loop {
        let run = K_RUN.min(k - start);
        let add = accumulate || start > 0;
        // SAFETY: the caller's guarantee, for the columns `start..start + run` of lhs and the
        // same rows of rhs; gemm reads lhs and rhs and writes dst.
        unsafe {
            gemm::gemm(
                m,
                n,
                run,
                dst.ptr,
                dst.col_stride as isize,
                dst.row_stride as isize,
                add,
                lhs.ptr.add(start * lhs.col_stride),
                lhs.col_stride as isize,
                lhs.row_stride as isize,
                rhs.ptr.add(start * rhs.row_stride),
                rhs.col_stride as isize,
                rhs.row_stride as isize,
                if add { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
        start += run;
        if start >= k {
            break;
        }
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
