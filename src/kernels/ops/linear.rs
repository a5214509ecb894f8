//! Hugging Face's Conv1D (`x @ W + b`) and the tied LM head (`x @ wte^T`) as single
//! differentiable operations: one row (decoding) threaded over blocks of the weight, more rows
//! through gemm's threaded product.

use candle_core::{CpuStorage, Shape, Tensor};
use rayon::prelude::*;

use super::custom_op::cpu_float;
use super::custom_op::{apply, apply_no_bwd, CpuInputs, CpuKernel, Grads};
use crate::kernels::matmul::{gemv_chunk, matmul, Matrix, Products, Strided};
use crate::memory::{advise_huge_pages, zeros_on_huge_pages, HUGE_PAGE_MIN_BYTES};
use crate::Result;

/// Output columns per chunk are a multiple of this (a 64-byte cache line of f32).
const COLUMN_ALIGN: usize = 16;
/// Chunks per pool thread, so that a thread slowed by other work does not hold up the rest.
const CHUNKS_PER_THREAD: usize = 4;
/// Row blocks per pool thread in the one-row linear layer, for the same reason.
const ROW_TASKS_PER_THREAD: usize = 2;

/// `x @ W + b` for `x` `(..., in)`, `W` `(in, out)`, `b` `(out)`: Hugging Face's Conv1D as one
/// differentiable op. One row (decoding) is threaded over blocks of the weight's rows; more rows
/// go to gemm's threaded product with the bias in place beforehand (so `b + x @ W` is one pass).
/// In training it is one node instead of candle's four (reshape, matmul, broadcast add,
/// reshape), each of which allocates and accumulates its own gradient; the backward pass is the
/// two matmuls and a column sum. Returns `None` for other devices and dtypes.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    if !cpu_float(&[x, weight, bias]) || weight.rank() != 2 {
        return Ok(None);
    }
    Ok(Some(apply(Linear, &[x, weight, bias])?))
}

/// `x @ wte^T` for `x` `(N, C)`: the tied LM head, differentiable. One position (decoding) is
/// threaded over the vocabulary; more positions go to gemm's threaded matrix product. Either
/// way no transposed copy of `wte` is made, and in training the gradient of `wte` comes out
/// `(V, C)` and contiguous (through `wte.t()` candle would accumulate it through a transposed
/// view, element by element). Returns `None` for other devices and dtypes.
pub fn tied_head(x: &Tensor, wte: &Tensor) -> Result<Option<Tensor>> {
    if !cpu_float(&[x, wte]) || x.rank() != 2 || wte.rank() != 2 {
        return Ok(None);
    }
    Ok(Some(apply(TiedHead, &[x, wte])?))
}

/// Splits `0..n` into aligned chunks for the pool's threads.
fn column_chunks(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per = n.div_ceil(threads * CHUNKS_PER_THREAD);
    per.div_ceil(COLUMN_ALIGN).max(1) * COLUMN_ALIGN
}

struct Linear;

/// `y = x @ W + b` for one row, threaded over blocks of W's rows.
fn linear_one_row(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
    // Each task streams a contiguous block of rows (the weight is (in, out), row-major) into
    // a partial sum of all outputs; the partials, a few KB each, are added at the end.
    let tasks = rayon::current_num_threads().max(1) * ROW_TASKS_PER_THREAD;
    let per = k.div_ceil(tasks);
    let partials: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let (r0, r1) = ((t * per).min(k), ((t + 1) * per).min(k));
            let mut partial = vec![0f32; n];
            if r1 > r0 {
                // SAFETY: rows r0..r1 of the (k, n) row-major weight, all n columns.
                unsafe { gemv_chunk(&mut partial, &x[r0..r1], &w[r0 * n..], 0, n, 1) };
            }
            partial
        })
        .collect();
    let mut y = vec![0f32; n];
    for partial in &partials {
        for (y, p) in y.iter_mut().zip(partial) {
            *y += p;
        }
    }
    // The bias is added after the product, as the plain path's broadcast_add does.
    for (y, b) in y.iter_mut().zip(b) {
        *y += b;
    }
    y
}

/// `y = b + x @ W` for `m` rows: the bias copied into every row, then gemm adds the product.
fn linear_rows(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    if m * n * 4 >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(y.as_mut_ptr().cast(), m * n * 4);
    }
    for _ in 0..m {
        y.extend_from_slice(b);
    }
    add_product(&mut y, x, Matrix::F32(w), (m, k, n), Products::F32);
    y
}

/// `y = b + x @ W` into `y` `(m, n)`, as [`linear_rows`] computes it, with `products`.
pub(crate) fn linear_into(
    y: &mut [f32],
    x: &[f32],
    w: Matrix,
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    products: Products,
) {
    for row in y[..m * n].chunks_exact_mut(n) {
        row.copy_from_slice(b);
    }
    add_product(y, x, w, (m, k, n), products);
}

/// `y += x @ W` for `x` `(m, k)`, `W` `(k, n)`, `y` `(m, n)`, all row-major.
fn add_product(
    y: &mut [f32],
    x: &[f32],
    w: Matrix,
    (m, k, n): (usize, usize, usize),
    products: Products,
) {
    assert!(y.len() >= m * n && x.len() >= m * k && w.len() >= k * n);
    // SAFETY: dst (m, n), lhs x (m, k) and rhs W (k, n) are the row-major buffers they are
    // (sizes checked above).
    unsafe {
        matmul(
            products,
            (m, k, n),
            Strided::rows(y.as_mut_ptr(), n),
            Matrix::F32(x).view(k, 1),
            w.view(n, 1),
            true,
        )
    }
}

/// The backward pass of `y = b + x @ W` for `m` rows, from `g` `(m, n)`, the gradient of `y`:
/// `dx = g @ W^T` written into `dx` `(m, k)`, and `dW += x^T @ g`, `db += column sums of g`
/// added into the sums being accumulated - no gradient buffer of the weight's size is made.
pub(crate) fn linear_backward(
    (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    x: &[f32],
    w: Matrix,
    g: &[f32],
    (m, k, n): (usize, usize, usize),
    products: Products,
) {
    assert!(dx.len() >= m * k && dw.len() == k * n && db.len() == n);
    assert!(x.len() >= m * k && w.len() == k * n && g.len() >= m * n);
    let (xm, gm) = (Matrix::F32(x), Matrix::F32(g));
    // SAFETY: every view addresses the row-major buffers checked above: W^T (n, k) is W read
    // with its strides swapped, x^T (k, m) likewise.
    unsafe {
        matmul(
            products,
            (m, n, k),
            Strided::rows(dx.as_mut_ptr(), k),
            gm.view(n, 1),
            w.view(1, n),
            false,
        );
        matmul(
            products,
            (k, m, n),
            Strided::rows(dw.as_mut_ptr(), n),
            xm.view(1, k),
            gm.view(n, 1),
            true,
        );
    }
    add_column_sums(db, &g[..m * n]);
}

/// `sums[j] += sum_i g[i, j]` for `g` `(rows, sums.len())`, threaded over chunks of columns,
/// each summed down the rows in order.
pub(crate) fn add_column_sums(sums: &mut [f32], g: &[f32]) {
    let c = sums.len();
    let chunk = column_chunks(c);
    sums.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, sums)| {
            let col = i * chunk;
            for row in g.chunks_exact(c) {
                for (s, v) in sums.iter_mut().zip(&row[col..]) {
                    *s += v;
                }
            }
        });
}

impl CpuKernel for Linear {
    const NAME: &'static str = "conv1d-linear";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (&*inputs.f32(0)?, &*inputs.f32(1)?, &*inputs.f32(2)?);
        let (xl, wl) = (inputs.layout(0), inputs.layout(1));
        let (k, n) = wl.shape().dims2()?;
        if xl.dims().last() != Some(&k) || b.len() != n {
            candle_core::bail!(
                "{}: input {:?}, weight {:?}, bias {:?} do not fit",
                Self::NAME,
                xl.dims(),
                wl.dims(),
                inputs.layout(2).dims()
            );
        }
        let m = x.len() / k;
        let y = if m == 1 {
            linear_one_row(x, w, b, k, n)
        } else {
            linear_rows(x, w, b, m, k, n)
        };
        let mut dims = xl.dims().to_vec();
        *dims.last_mut().expect("rank >= 1") = n;
        Ok((inputs.output(y), Shape::from(dims)))
    }

    fn bwd(&self, inputs: &[&Tensor], _y: &Tensor, g: &Tensor) -> Grads {
        let (x, w) = (inputs[0], inputs[1]); // and the bias
        let (k, n) = w.dims2()?;
        let x2 = x.reshape(((), k))?; // (N, in)
        let g2 = g.contiguous()?.reshape(((), n))?; // (N, out)
        let dx = product(&g2, w, false, true)?.reshape(x.shape())?; // (N, out) @ (out, in)
        let dw = product(&x2, &g2, true, false)?; // (in, N) @ (N, out)
        let db = apply_no_bwd(ColumnSum, &[&g2])?; // (out)
        Ok(vec![Some(dx), Some(dw), Some(db)])
    }
}

/// `a @ b` of two matrices, each read as stored or transposed (`lhs_t`, `rhs_t`): the
/// products of the backward passes here. Summed in f32 by [`matmul`] and rounded once to the
/// operands' type, as PyTorch's half-precision products on the CPU are. Through candle's
/// `matmul` an f16 or bf16 product would round its sums to the half type after each block of
/// the inner dimension, and gemm sizes those blocks from the CPU's cache: the gradients of a
/// half-precision model would depend on the CPU.
fn product(a: &Tensor, b: &Tensor, lhs_t: bool, rhs_t: bool) -> candle_core::Result<Tensor> {
    apply_no_bwd(Product([lhs_t, rhs_t]), &[a, b])
}

/// Which of the two operands are read transposed.
struct Product([bool; 2]);

impl CpuKernel for Product {
    const NAME: &'static str = "product";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (&*inputs.f32(0)?, &*inputs.f32(1)?);
        let (ar, ac) = inputs.layout(0).shape().dims2()?;
        let (br, bc) = inputs.layout(1).shape().dims2()?;
        let [lhs_t, rhs_t] = self.0;
        let (m, k) = if lhs_t { (ac, ar) } else { (ar, ac) };
        let (bk, n) = if rhs_t { (bc, br) } else { (br, bc) };
        if bk != k {
            candle_core::bail!(
                "{}: {:?} and {:?} do not multiply",
                Self::NAME,
                (m, k),
                (bk, n)
            );
        }
        // A row-major (rows, cols) buffer read as its transpose swaps the two strides.
        let view = |x: &[f32], cols: usize, t: bool| {
            let (row, col) = if t { (1, cols) } else { (cols, 1) };
            Matrix::F32(x).view(row, col)
        };
        let mut y = zeros_on_huge_pages(m * n);
        // SAFETY: dst (m, n) row-major, and both operands read within the buffers of the
        // shapes checked above.
        unsafe {
            matmul(
                Products::F32,
                (m, k, n),
                Strided::rows(y.as_mut_ptr(), n),
                view(a, ac, lhs_t),
                view(b, bc, rhs_t),
                false,
            )
        };
        Ok((inputs.output(y), Shape::from((m, n))))
    }
}

/// The sum of each column of an `(N, C)` matrix: the bias gradient.
struct ColumnSum;

impl CpuKernel for ColumnSum {
    const NAME: &'static str = "column-sum";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &*inputs.f32(0)?;
        let (_, c) = inputs.layout(0).shape().dims2()?;
        let mut sums = vec![0f32; c];
        add_column_sums(&mut sums, g);
        Ok((inputs.output(sums), Shape::from(c)))
    }
}

struct TiedHead;

impl CpuKernel for TiedHead {
    const NAME: &'static str = "tied-head";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, wte) = (&*inputs.f32(0)?, &*inputs.f32(1)?);
        let (xl, wl) = (inputs.layout(0), inputs.layout(1));
        let ((n, c), (v, wc)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if wc != c {
            candle_core::bail!(
                "{}: hidden states {:?} do not fit wte {:?}",
                Self::NAME,
                xl.dims(),
                wl.dims()
            );
        }
        let mut y = zeros_on_huge_pages(n * v);
        if n == 1 {
            let chunk = column_chunks(v);
            y.par_chunks_mut(chunk).enumerate().for_each(|(i, dst)| {
                // SAFETY: rows i*chunk.. of the (V, C) row-major wte, read as columns of wte^T.
                unsafe { gemv_chunk(dst, x, wte, i * chunk, 1, c) };
            });
        } else {
            tied_head_into(&mut y, x, Matrix::F32(wte), (n, c, v), Products::F32);
        }
        Ok((inputs.output(y), Shape::from((n, v))))
    }

    fn bwd(&self, inputs: &[&Tensor], _y: &Tensor, g: &Tensor) -> Grads {
        let (x, wte) = (inputs[0], inputs[1]);
        let dx = product(g, wte, false, false)?; // (N, V) @ (V, C) = (N, C)
        let dwte = product(g, x, true, false)?; // (V, N) @ (N, C) = (V, C), contiguous
        Ok(vec![Some(dx), Some(dwte)])
    }
}

/// `y = x @ wte^T` into `y` `(n, v)` for `x` `(n, c)` and `wte` `(v, c)`, with `products`.
pub(crate) fn tied_head_into(
    y: &mut [f32],
    x: &[f32],
    wte: Matrix,
    (n, c, v): (usize, usize, usize),
    products: Products,
) {
    assert!(y.len() >= n * v && x.len() >= n * c && wte.len() == v * c);
    // SAFETY: dst (N, V), lhs x (N, C) and rhs wte^T (C, V) are read as the row-major buffers
    // they are (sizes checked above); element (k, j) of wte^T is wte[j * C + k].
    unsafe {
        matmul(
            products,
            (n, c, v),
            Strided::rows(y.as_mut_ptr(), v),
            Matrix::F32(x).view(c, 1),
            wte.view(1, c),
            false,
        )
    }
}

/// The backward pass of `y = x @ wte^T` from `g` `(n, v)`: `dx = g @ wte` written into `dx`
/// `(n, c)`, and `dwte += g^T @ x` added into the sum being accumulated.
pub(crate) fn tied_head_backward(
    (dx, dwte): (&mut [f32], &mut [f32]),
    x: &[f32],
    wte: Matrix,
    g: &[f32],
    (n, c, v): (usize, usize, usize),
    products: Products,
) {
    assert!(dx.len() >= n * c && dwte.len() == v * c && wte.len() == v * c);
    assert!(x.len() >= n * c && g.len() >= n * v);
    let (x, g) = (Matrix::F32(x), Matrix::F32(g));
    // SAFETY: row-major buffers of the sizes checked above; g^T (V, N) is g read with its
    // strides swapped.
    unsafe {
        matmul(
            products,
            (n, v, c),
            Strided::rows(dx.as_mut_ptr(), c),
            g.view(v, 1),
            wte.view(c, 1),
            false,
        );
        matmul(
            products,
            (v, n, c),
            Strided::rows(dwte.as_mut_ptr(), c),
            g.view(1, v),
            x.view(c, 1),
            true,
        );
    }
}
