//! Matrix products for the kernels: f32 through the `gemm` crate (`gemm_f32.rs`), and bf16 operands
//! with f32 sums for a pure-bf16 model - in Intel's AMX tiles where the CPU has them (`amx.rs`),
//! elsewhere widened to f32 a block at a time for gemm's products (`widened.rs`). The views
//! they all read (`operand.rs`) live apart from this dispatcher, so that the backends import
//! only those.

mod amx;
mod gemm_f32;
mod operand;
mod widened;

pub(crate) use gemm_f32::{gemv_chunk, matmul_f32, pool_parallelism};
pub(crate) use operand::{Matrix, Operand, Strided};

use widened::matmul_widened;

/// How a pass multiplies: f32 products through the `gemm` crate, or operands rounded to bf16
/// and their products summed in f32 (a pure-bf16 model) - in AMX tiles where the CPU has them,
/// elsewhere by gemm's f32 products on the rounded operands widened to f32.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Products {
    F32,
    Bf16,
}

impl Products {
    /// Whether this CPU and OS run bf16 products in AMX tiles.
    pub(crate) fn amx() -> bool {
        amx::available()
    }
}

/// `dst = lhs @ rhs` (or `+=` with `accumulate`) the way `products` says, threaded over the
/// pool. f32 products need f32 operands.
///
/// # Safety
/// As for [`matmul_f32`].
pub(crate) unsafe fn matmul(
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
