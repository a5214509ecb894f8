//! The one call into the `gemm` crate that every f32 matrix product of the kernels makes, with
//! strided views of its three matrices, the one-row product on a chunk of columns, and the
//! choice between it and bf16 products in AMX tiles (`amx.rs`) for the written-out pass.

use half::bf16;

use super::amx;
use super::widened::matmul_widened;

/// Where a matrix's elements are: element `(i, j)` lives at `ptr + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Strided<P> {
    pub(super) ptr: P,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

impl<P> Strided<P> {
    /// A row-major matrix with rows `row_stride` elements apart.
    pub(super) fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// An operand of a product: f32, or bf16 (a bf16 model's weights).
#[derive(Clone, Copy)]
pub(super) enum Operand {
    F32(Strided<*const f32>),
    Bf16(Strided<*const bf16>),
}

/// A row-major matrix the products read: f32, or a bf16 model's weight.
#[derive(Clone, Copy)]
pub(super) enum Matrix<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl Matrix<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::F32(m) => m.len(),
            Self::Bf16(m) => m.len(),
        }
    }

    /// The matrix read with these strides (`(1, cols)` for its transpose).
    pub(super) fn view(&self, row_stride: usize, col_stride: usize) -> Operand {
        match self {
            Self::F32(m) => Operand::F32(Strided {
                ptr: m.as_ptr(),
                row_stride,
                col_stride,
            }),
            Self::Bf16(m) => Operand::Bf16(Strided {
                ptr: m.as_ptr(),
                row_stride,
                col_stride,
            }),
        }
    }

    /// Adds row `row` of the matrix (rows `dst.len()` wide) into `dst`, widened where bf16.
    pub(super) fn add_row(&self, dst: &mut [f32], row: usize) {
        let c = dst.len();
        match self {
            Self::F32(m) => dst
                .iter_mut()
                .zip(&m[row * c..][..c])
                .for_each(|(d, x)| *d += x),
            Self::Bf16(m) => dst
                .iter_mut()
                .zip(&m[row * c..][..c])
                .for_each(|(d, x)| *d += x.to_f32()),
        }
    }
}

/// How a pass multiplies: f32 products through the `gemm` crate, or operands rounded to bf16
/// and their products summed in f32 (a pure-bf16 model) - in AMX tiles where the CPU has them,
/// elsewhere by gemm's f32 products on the rounded operands widened to f32.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Products {
    F32,
    Bf16,
}

impl Products {
    /// Whether this CPU and OS run bf16 products in AMX tiles.
    pub(super) fn amx() -> bool {
        amx::available()
    }
}

/// `dst = lhs @ rhs` (or `+=` with `accumulate`) the way `products` says, threaded over the
/// pool. f32 products need f32 operands.
///
/// # Safety
/// As for [`matmul_f32`].
pub(super) unsafe fn matmul(
    products: Products,
    dims: (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    match (products, lhs, rhs) {
        // SAFETY: the caller's guarantees.
        (Products::F32, Operand::F32(l), Operand::F32(r)) => unsafe {
            matmul_f32(dims, dst, l, r, accumulate, pool_parallelism())
        },
        (Products::F32, ..) => panic!("an f32 product was given a bf16 operand"),
        // SAFETY: the caller's guarantees; the tiles are there.
        (Products::Bf16, ..) if Products::amx() => unsafe {
            amx::matmul_bf16(dims, dst, lhs, rhs, accumulate)
        },
        // SAFETY: the caller's guarantees.
        (Products::Bf16, ..) => unsafe { matmul_widened(dims, dst, lhs, rhs, accumulate) },
    }
}

/// `dst = lhs @ rhs` for `(m, k) @ (k, n)` in f32, or `dst += lhs @ rhs` with `accumulate`:
/// the `gemm` crate's call with everything this file does not vary left out.
///
/// # Safety
/// Every element addressed through the three views for these dimensions must be in bounds,
/// and nothing else may read or write `dst`'s elements meanwhile.
pub(super) unsafe fn matmul_f32(
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
pub(super) fn pool_parallelism() -> gemm::Parallelism {
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
pub(super) unsafe fn gemv_chunk(
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
