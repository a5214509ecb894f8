//! [`super::matmul`]'s bf16 products on a CPU without AMX tiles: the operands rounded to
//! bf16 (a bf16 weight is only widened) and multiplied as f32 by gemm - the values the tiles
//! multiply, summed in f32 in another order. Each operand is widened a block at a time into a
//! buffer kept per thread, so that the tied head's products (a 50,257-row operand on every
//! side) never hold a whole widened copy.

use std::cell::RefCell;
use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use super::gemm_f32::{matmul_f32, pool_parallelism};
use super::operand::{Operand, Strided};
use crate::kernels::rounding::round_bf16;

/// The most elements of one operand widened at a time (32 MiB of f32).
const BLOCK: usize = 1 << 23;

thread_local! {
    /// The two widened blocks, kept from call to call: a fresh buffer would be mapped and
    /// zeroed page by page each time.
    static WIDENED: RefCell<(Vec<f32>, Vec<f32>)> = RefCell::default();
}

/// `dst = lhs @ rhs` for `(m, k) @ (k, n)` (or `+=` with `accumulate`) on the operands rounded
/// to bf16: where one operand fits in a block it is widened whole and the other a block of
/// columns (or rows) at a time, each product written to its part of `dst`; where neither fits,
/// both are cut along `k` and the blocks' products summed into `dst`. Every element is widened
/// once.
///
/// # Safety
/// As for [`matmul_f32`].
pub(crate) unsafe fn matmul_widened(
    dims: (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    // SAFETY: the caller's guarantees.
    unsafe { in_blocks(dims, dst, (lhs, rhs), accumulate, BLOCK) }
}

/// [`matmul_widened`] with blocks of at most `block` elements (but at least 256 along `k`).
///
/// # Safety
/// As for [`matmul_f32`].
unsafe fn in_blocks(
    (m, k, n): (usize, usize, usize),
    dst: Strided<*mut f32>,
    (lhs, rhs): (Operand, Operand),
    accumulate: bool,
    block: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let at = |i: usize, j: usize| Strided {
        // SAFETY (of the callers below): (i, j) is inside dst, the caller's bounds.
        ptr: dst
            .ptr
            .wrapping_add(i * dst.row_stride + j * dst.col_stride),
        ..dst
    };
    let par = pool_parallelism();
    WIDENED.with_borrow_mut(|(l, r)| {
        // SAFETY (all products): the widened blocks lie in `l` and `r` as their views say,
        // and each product writes the part of `dst` its block of rows or columns makes.
        unsafe {
            if m * k <= block || k == 0 {
                let lw = widen(l, lhs, 0..m, 0..k);
                let step = (block / k.max(1)).max(1);
                for n0 in (0..n).step_by(step) {
                    let n1 = (n0 + step).min(n);
                    let rw = widen(r, rhs, 0..k, n0..n1);
                    matmul_f32((m, k, n1 - n0), at(0, n0), lw, rw, accumulate, par);
                }
            } else if k * n <= block {
                let rw = widen(r, rhs, 0..k, 0..n);
                let step = (block / k).max(1);
                for m0 in (0..m).step_by(step) {
                    let m1 = (m0 + step).min(m);
                    let lw = widen(l, lhs, m0..m1, 0..k);
                    matmul_f32((m1 - m0, k, n), at(m0, 0), lw, rw, accumulate, par);
                }
            } else {
                let step = (block / (m + n)).clamp(256.min(k), k);
                for k0 in (0..k).step_by(step) {
                    let k1 = (k0 + step).min(k);
                    let (lw, rw) = (widen(l, lhs, 0..m, k0..k1), widen(r, rhs, k0..k1, 0..n));
                    let sum = accumulate || k0 > 0;
                    matmul_f32((m, k1 - k0, n), dst, lw, rw, sum, par);
                }
            }
        }
    })
}

/// Rows `rows` and columns `cols` of `op` as bf16 values in f32, in `buf`: row by row, or
/// column by column where the operand is stored by columns (a transposed view), so that the
/// reads run along memory.
///
/// # Safety
/// Every element of the block must be in the operand's bounds.
unsafe fn widen(
    buf: &mut Vec<f32>,
    op: Operand,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Strided<*const f32> {
    let (ptr, rs, cs, bf16) = match op {
        Operand::F32(s) => (s.ptr as usize, s.row_stride, s.col_stride, false),
        Operand::Bf16(s) => (s.ptr as usize, s.row_stride, s.col_stride, true),
    };
    let (nr, nc) = (rows.len(), cols.len());
    if buf.len() < nr * nc {
        buf.resize(nr * nc, 0.0); // grown to the largest block once, then reused
    }
    let out = &mut buf[..nr * nc];
    let by_columns = rs == 1 && cs != 1;
    // Lines of the block: line `i` is `len` elements from `first + i * apart`, `step` apart.
    let first = rows.start * rs + cols.start * cs;
    let (len, apart, step) = if by_columns {
        (nr, cs, rs)
    } else {
        (nc, rs, cs)
    };
    if len > 0 {
        out.par_chunks_mut(len).enumerate().for_each(|(line, d)| {
            let at = first + line * apart;
            // SAFETY: the line's elements are in the operand's bounds (the caller's guarantee).
            unsafe { widen_line(d, ptr, at, step, bf16) }
        });
    }
    let (row_stride, col_stride) = if by_columns { (1, nr) } else { (nc, 1) };
    Strided {
        ptr: buf.as_ptr(),
        row_stride,
        col_stride,
    }
}

/// `d[t]` = element `at + t * step` of the operand at `ptr` (f32 rounded to bf16, or bf16
/// widened).
///
/// # Safety
/// Those elements must be in the operand's bounds.
unsafe fn widen_line(d: &mut [f32], ptr: usize, at: usize, step: usize, bf16: bool) {
    let widen16 = |x: &bf16| f32::from_bits(u32::from(x.to_bits()) << 16);
    // SAFETY (all four reads): the caller's bounds.
    unsafe {
        match (bf16, step) {
            (false, 1) => {
                let s = std::slice::from_raw_parts((ptr as *const f32).add(at), d.len());
                d.iter_mut().zip(s).for_each(|(d, s)| *d = round_bf16(*s));
            }
            (true, 1) => {
                let s = std::slice::from_raw_parts((ptr as *const bf16).add(at), d.len());
                d.iter_mut().zip(s).for_each(|(d, s)| *d = widen16(s));
            }
            (false, _) => {
                let p = (ptr as *const f32).add(at);
                for (t, d) in d.iter_mut().enumerate() {
                    *d = round_bf16(*p.add(t * step));
                }
            }
            (true, _) => {
                let p = (ptr as *const bf16).add(at);
                for (t, d) in d.iter_mut().enumerate() {
                    *d = widen16(&*p.add(t * step));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way through the blocks - one operand whole and the other in columns or rows,
    /// both cut along k - on f32 and bf16 operands, by rows and transposed, against the
    /// product of the rounded values summed in f64.
    #[test]
    fn blocks_multiply_the_rounded_values() {
        // Column blocks (the first shape's lhs whole), row blocks (the second's rhs whole).
        for (m, k, n) in [(37, 300, 129), (200, 300, 29)] {
            multiplies_in_every_way((m, k, n));
        }
    }

    fn multiplies_in_every_way((m, k, n): (usize, usize, usize)) {
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 37.0;
        let a: Vec<f32> = (0..m * k).map(value).collect(); // (m, k) by rows
        let bt: Vec<f32> = (0..n * k).map(|i| value(i + 17)).collect(); // (k, n) stored as (n, k)
        let bt16: Vec<bf16> = bt.iter().map(|&x| bf16::from_f32(x)).collect();
        let want: Vec<f64> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                (0..k)
                    .map(|t| {
                        f64::from(round_bf16(a[i * k + t])) * f64::from(round_bf16(bt[j * k + t]))
                    })
                    .sum()
            })
            .collect();
        let lhs = Operand::F32(Strided::rows(a.as_ptr(), k));
        for rhs in [
            Operand::F32(Strided {
                ptr: bt.as_ptr(),
                row_stride: 1,
                col_stride: k,
            }),
            Operand::Bf16(Strided {
                ptr: bt16.as_ptr(),
                row_stride: 1,
                col_stride: k,
            }),
        ] {
            // Whole, by columns, by rows, along k; and along k adding to what is there.
            for (block, accumulate) in [
                (1 << 20, false),
                (m * k, false),
                (k * n, false),
                (64, false),
                (64, true),
            ] {
                let mut dst = vec![1f32; m * n];
                // SAFETY: every view is within its buffer for these dimensions.
                unsafe {
                    in_blocks(
                        (m, k, n),
                        Strided::rows(dst.as_mut_ptr(), n),
                        (lhs, rhs),
                        accumulate,
                        block,
                    )
                };
                let base = if accumulate { 1.0 } else { 0.0 };
                for (d, w) in dst.iter().zip(&want) {
                    let w = w + base;
                    assert!(
                        (f64::from(*d) - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "block {block}: {d} against {w}"
                    );
                }
            }
        }
    }
}
