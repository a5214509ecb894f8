//! What a matrix product reads and writes: strided views of f32 or bf16 matrices, shared by the
//! f32, AMX and widened backends and by the kernels that call them.

use half::bf16;

/// Where a matrix's elements are: element `(i, j)` lives at `ptr + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub(crate) ptr: P,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<P> Strided<P> {
    /// A row-major matrix with rows `row_stride` elements apart.
    pub(crate) fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// An operand of a product: f32, or bf16 (a bf16 model's weights).
#[derive(Clone, Copy)]
pub(crate) enum Operand {
    F32(Strided<*const f32>),
    Bf16(Strided<*const bf16>),
}

/// A row-major matrix the products read: f32, or a bf16 model's weight.
#[derive(Clone, Copy)]
pub(crate) enum Matrix<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl Matrix<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::F32(m) => m.len(),
            Self::Bf16(m) => m.len(),
        }
    }

    /// The matrix read with these strides (`(1, cols)` for its transpose).
    pub(crate) fn view(&self, row_stride: usize, col_stride: usize) -> Operand {
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
    pub(crate) fn add_row(&self, dst: &mut [f32], row: usize) {
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
