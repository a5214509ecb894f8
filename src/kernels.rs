//! CPU fast paths: the same arithmetic as the plain candle code in [`crate::model`] and
//! `candle_nn::AdamW`, arranged to use every core and to make fewer passes over memory.
//!
//! **Decoding, one token at a time.** Generating with the KV cache feeds the model one token
//! per step, so every linear layer is a vector-matrix product (`(1, in) @ (in, out)`). candle
//! hands that to the `gemm` crate, whose matrix-vector kernel runs on a single thread: decoding
//! then uses one core of two, and is bound by how fast one core streams the weights from
//! memory. Here the product is split over the rayon pool (the one candle's own matmuls use): the
//! Conv1D weights by blocks of rows, each streamed front to back into a partial sum, the tied
//! head by blocks of vocabulary rows. The sums are the plain path's, in another order: they agree
//! to float rounding, which `tests/perf_paths.rs` checks.
//!
//! **Attention scores.** Scaling, masking and the softmax are three passes over the
//! `(B, nh, T, S)` scores in the plain code, and in training each pass is a node whose gradient
//! candle allocates and accumulates separately. [`scaled_masked_softmax`] does them in one pass,
//! with its own backward pass (also one pass).
//!
//! **AdamW.** `candle_nn::AdamW` updates each parameter with a dozen tensor operations, each
//! allocating a parameter-sized result; [`FusedAdamW`] makes one parallel pass per parameter and
//! updates weights and moments in place, with the same formula in the same order.
//!
//! These paths only run for f32 tensors on the CPU (and, for the matrix-vector products, only
//! when no gradient is needed); everything else takes the plain path, which is what the book
//! shows.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp2, Layout, Shape, Tensor, Var,
};
use candle_nn::ParamsAdamW;
use rayon::prelude::*;

use crate::{Error, Result};

/// Output columns per chunk are a multiple of this (a 64-byte cache line of f32).
const COLUMN_ALIGN: usize = 16;
/// Chunks per pool thread, so that a thread slowed by other work does not hold up the rest.
const CHUNKS_PER_THREAD: usize = 4;
/// Row blocks per pool thread in the one-row linear layer, for the same reason.
const ROW_TASKS_PER_THREAD: usize = 2;

// ----- element-wise math the compiler can vectorise --------------------------------------------

/// `e^x` without a libm call: Cephes' `expf` (range reduction by ln 2 in two parts, a degree-6
/// polynomial, the exponent put in by bit arithmetic), 1-2 ulp on [-87, 88], 0 below. Written
/// branch-free so that a loop of it compiles to AVX2 instructions.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// Sum and maximum in eight lanes, so that the compiler may use vector registers: an in-order
/// float reduction would be one element per instruction.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(rest, |m, &v| m.max(v))
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// Defines a function over slices twice: as written, and compiled for AVX2 and FMA (every
/// x86-64 of the last decade), and picks the second when the CPU has them. The bodies are plain
/// loops; compiled for AVX2 they handle eight floats per instruction. Both compile the same
/// arithmetic (Rust never fuses a multiply and an add on its own), so both give the same bits.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn generic($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($a: $t),*) $(-> $r)? {
                    generic($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, which `avx2` is compiled for.
                    return unsafe { avx2($($a),*) };
                }
            }
            generic($($a),*)
        }
    };
}

// ----- decoding: one row times a matrix, on every core -------------------------------------------

/// Whether a tensor is f32 on the CPU, where the fast paths apply.
fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// `x @ W + b` for `x` `(..., in)`, `W` `(in, out)`, `b` `(out)`: Hugging Face's Conv1D as one
/// differentiable op. One row (decoding) is threaded over blocks of the weight's rows; more rows
/// go to gemm's threaded product with the bias in place beforehand (so `b + x @ W` is one pass).
/// In training it is one node instead of candle's four (reshape, matmul, broadcast add,
/// reshape), each of which allocates and accumulates its own gradient; the backward pass is the
/// two matmuls and a column sum. Returns `None` for other devices and dtypes.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(weight) || !cpu_f32(bias) || weight.rank() != 2 {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        Linear,
    )?))
}

/// `x @ wte^T` for `x` `(N, C)`: the tied LM head, differentiable. One position (decoding) is
/// threaded over the vocabulary; more positions go to gemm's threaded matrix product. Either
/// way no transposed copy of `wte` is made, and in training the gradient of `wte` comes out
/// `(V, C)` and contiguous (through `wte.t()` candle would accumulate it through a transposed
/// view, element by element). Returns `None` for other devices and dtypes.
pub fn tied_head(x: &Tensor, wte: &Tensor) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(wte) || x.rank() != 2 || wte.rank() != 2 {
        return Ok(None);
    }
    Ok(Some(
        x.contiguous()?.apply_op2(&wte.contiguous()?, TiedHead)?,
    ))
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

/// Where a matrix's elements are: element `(i, j)` lives at `ptr + i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
struct Strided<P> {
    ptr: P,
    row_stride: usize,
    col_stride: usize,
}

impl<P> Strided<P> {
    /// A row-major matrix with rows `row_stride` elements apart.
    fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// `dst = lhs @ rhs` for `(m, k) @ (k, n)` in f32, or `dst += lhs @ rhs` with `accumulate`:
/// the `gemm` crate's call with everything this file does not vary left out.
///
/// # Safety
/// Every element addressed through the three views for these dimensions must be in bounds,
/// and nothing else may read or write `dst`'s elements meanwhile.
unsafe fn matmul_f32(
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
fn pool_parallelism() -> gemm::Parallelism {
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
    // SAFETY: dst (m, n), lhs x (m, k) and rhs W (k, n) are the row-major buffers they are.
    unsafe {
        matmul_f32(
            (m, k, n),
            Strided::rows(y.as_mut_ptr(), n),
            Strided::rows(x.as_ptr(), k),
            Strided::rows(w.as_ptr(), n),
            true,
            pool_parallelism(),
        )
    }
    y
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "conv1d-linear"
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
        if xl.dims().last() != Some(&k) || b.len() != n {
            candle_core::bail!(
                "{}: input {:?}, weight {:?}, bias {:?} do not fit",
                self.name(),
                xl.dims(),
                wl.dims(),
                bl.dims()
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
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (k, n) = w.dims2()?;
        let x2 = x.reshape(((), k))?; // (N, in)
        let g2 = g.contiguous()?.reshape(((), n))?; // (N, out)
        let dx = g2.matmul(&w.t()?)?.reshape(x.shape())?; // (N, out) @ (out, in)
        let dw = x2.t()?.matmul(&g2)?; // (in, N) @ (N, out)
        let db = g2.apply_op1_no_bwd(&ColumnSum)?; // (out)
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The sum of each column of an `(N, C)` matrix: the bias gradient.
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(self.name(), s, l)?;
        let (_, c) = l.shape().dims2()?;
        let chunk = column_chunks(c);
        let mut sums = vec![0f32; c];
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
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

struct TiedHead;

impl CustomOp2 for TiedHead {
    fn name(&self) -> &'static str {
        "tied-head"
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
        let (n, c) = xl.shape().dims2()?;
        let (v, wc) = wl.shape().dims2()?;
        if wc != c {
            candle_core::bail!(
                "{}: hidden states {:?} do not fit wte {:?}",
                self.name(),
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
            // SAFETY: dst (N, V), lhs x (N, C) and rhs wte^T (C, V) are read as the row-major
            // buffers they are; element (k, j) of wte^T is wte[j * C + k].
            unsafe {
                matmul_f32(
                    (n, c, v),
                    Strided::rows(y.as_mut_ptr(), v),
                    Strided::rows(x.as_ptr(), c),
                    Strided {
                        ptr: wte.as_ptr(),
                        row_stride: 1,
                        col_stride: c,
                    },
                    false,
                    pool_parallelism(),
                )
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, v))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wte: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = g.matmul(wte)?; // (N, V) @ (V, C) = (N, C)
        let dwte = g.t()?.matmul(x)?; // (V, N) @ (N, C) = (V, C), contiguous
        Ok((Some(dx), Some(dwte)))
    }
}

// ----- GELU and LayerNorm: one parallel pass each way -------------------------------------------

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF: f32 = 0.044_715;
/// Elements per parallel task of the element-wise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// GPT-2's `gelu_new`, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, vectorised, on every
/// core and with a one-pass backward (candle's `gelu` calls libm's tanh on one thread, and its
/// gradient is a dozen tensor operations). Returns `None` for other devices and dtypes.
pub fn gelu_tanh(x: &Tensor) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(GeluTanh)?))
}

struct GeluTanh;

simd_fn! {
    /// `gelu(x) = 0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, written as
    /// `x * sigmoid(2u)` (the same function: `1 + tanh(u) = 2 sigmoid(2u)`), which needs one
    /// exponential and loses nothing to cancellation where tanh(u) is close to -1.
    fn gelu_slice(y: &mut [f32], x: &[f32]) {
        for (y, &v) in y.iter_mut().zip(x) {
            let u = SQRT_TWO_OVER_PI * v * (1.0 + GELU_COEF * v * v);
            *y = v * sigmoid_fast(2.0 * u);
        }
    }
}

simd_fn! {
    /// `dx = g * gelu'(x)`: with `s = sigmoid(2u)`, `1 + tanh(u) = 2s` and
    /// `1 - tanh(u)^2 = 4 s (1 - s)`, so `gelu'(x) = s + 2 x s (1 - s) u'(x)`.
    fn gelu_grad_slice(dx: &mut [f32], x: &[f32], g: &[f32]) {
        for (dx, (&v, &g)) in dx.iter_mut().zip(x.iter().zip(g)) {
            let u = SQRT_TWO_OVER_PI * v * (1.0 + GELU_COEF * v * v);
            let du = SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_COEF * v * v);
            let s = sigmoid_fast(2.0 * u);
            *dx = g * (s + 2.0 * v * s * (1.0 - s) * du);
        }
    }
}

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let mut y = zeros_on_huge_pages(x.len());
        y.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(y, x)| gelu_slice(y, x));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluTanhGrad)?))
    }
}

/// The backward pass of [`GeluTanh`], from its input.
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let g = contiguous_f32(self.name(), gs, gl)?;
        let mut dx = zeros_on_huge_pages(x.len());
        dx.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                x.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(g.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(|(dx, (x, g))| gelu_grad_slice(dx, x, g));
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// LayerNorm over the last dimension with a one-pass backward, for training: candle's fused
/// kernel has no backward, and the composed one is ten tensor operations each way. Mean and
/// variance are taken in two passes, like the composed version. Returns `None` for other
/// devices and dtypes.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(weight) || !cpu_f32(bias) {
        return Ok(None);
    }
    let op = LayerNormOp { eps: eps as f32 };
    Ok(Some(x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        op,
    )?))
}

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/std of one row, in two passes.
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm-train"
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
        let c = w.len();
        if b.len() != c || xl.dims().last() != Some(&c) {
            candle_core::bail!(
                "{}: input {:?}, weight {:?}",
                self.name(),
                xl.dims(),
                wl.dims()
            );
        }
        let mut y = zeros_on_huge_pages(x.len());
        y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(y, x)| {
            let (mean, rstd) = row_stats(x, self.eps);
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let (x2, g2) = (x.reshape(((), c))?, g.contiguous()?.reshape(((), c))?); // (N, C)
        let dx = x2.apply_op3_no_bwd(&g2, w, &LayerNormGrad { eps: self.eps })?;
        // dw = sum over rows of g * xhat, db = sum over rows of g.
        let xhat = x2.apply_op3_no_bwd(
            &w.ones_like()?,
            &w.zeros_like()?,
            &LayerNormOp { eps: self.eps },
        )?;
        let dw = (&g2 * xhat)?.sum(0)?;
        let db = g2.sum(0)?;
        Ok((Some(dx.reshape(x.shape())?), Some(dw), Some(db)))
    }
}

/// `dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))` with `dxhat = g * w`.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let g = contiguous_f32(self.name(), gs, gl)?;
        let w = contiguous_f32(self.name(), ws, wl)?;
        let c = w.len();
        let mut dx = zeros_on_huge_pages(x.len());
        dx.par_chunks_mut(c)
            .zip(x.par_chunks(c).zip(g.par_chunks(c)))
            .for_each(|(dx, (x, g))| {
                let (mean, rstd) = row_stats(x, self.eps);
                let n = c as f32;
                let (mut mean_d, mut mean_dx) = (0f32, 0f32);
                for ((x, g), w) in x.iter().zip(g).zip(w) {
                    let d = g * w;
                    mean_d += d;
                    mean_dx += d * (x - mean) * rstd;
                }
                let (mean_d, mean_dx) = (mean_d / n, mean_dx / n);
                for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    let xhat = (x - mean) * rstd;
                    *dx = rstd * (g * w - mean_d - xhat * mean_dx);
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

// ----- attention: scale, mask and softmax in one pass ------------------------------------------

/// `softmax(where(mask, att * scale, lowest))` over the last dimension, as the plain attention
/// computes it: `att` is `(B, nh, T, S)` f32 on the CPU, `mask` (if any) `(B or 1, 1, T or 1, S)`
/// u8 with 1 where attention is allowed. A masked score gets f32's lowest value, so a row with
/// nothing allowed (a padding query) comes out uniform, as in transformers. Differentiable.
/// Returns `None` for other devices, dtypes or shapes; the caller then takes the plain path.
pub fn scaled_masked_softmax(
    att: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !att.device().is_cpu() || att.dtype() != DType::F32 || att.rank() != 4 {
        return Ok(None);
    }
    let (b, _, t, s) = att.dims4()?;
    let op = MaskedSoftmax {
        scale: scale as f32,
    };
    let att = att.contiguous()?;
    match mask {
        None => Ok(Some(att.apply_op1(op)?)),
        Some(m) => {
            let fits = m.dtype() == DType::U8
                && m.rank() == 4
                && matches!(m.dims4()?, (mb, 1, mt, ms) if (mb == 1 || mb == b) && (mt == 1 || mt == t) && ms == s);
            if !fits || !m.device().is_cpu() {
                return Ok(None);
            }
            Ok(Some(att.apply_op2(&m.contiguous()?, op)?))
        }
    }
}

/// Where row `r` of the `(B, nh, T, S)` scores finds its mask row, for a mask of
/// `(mb, 1, mt, S)`.
#[derive(Clone, Copy)]
struct MaskIndex {
    nh: usize,
    t: usize,
    mb: usize,
    mt: usize,
}

impl MaskIndex {
    fn new(att: &Layout, mask: &Layout) -> candle_core::Result<Self> {
        let (b, nh, t, _) = att.shape().dims4()?;
        Self::for_scores((b, nh, t), mask)
    }

    /// For scores `(B, nh, T, S)` given as `(B, nh, T)`.
    fn for_scores((_, nh, t): (usize, usize, usize), mask: &Layout) -> candle_core::Result<Self> {
        let (mb, _, mt, _) = mask.shape().dims4()?;
        Ok(Self { nh, t, mb, mt })
    }

    /// Index of the mask row (of length S) for score row `r`.
    fn row(&self, r: usize) -> usize {
        let (bi, ti) = (r / (self.nh * self.t), r % self.t);
        let bi = if self.mb == 1 { 0 } else { bi };
        let ti = if self.mt == 1 { 0 } else { ti };
        bi * self.mt + ti
    }
}

fn contiguous_u8<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [u8]> {
    let data = match s {
        CpuStorage::U8(v) => v.as_slice(),
        _ => candle_core::bail!("{op}: expected a u8 mask"),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expected a contiguous mask"),
    }
}

simd_fn! {
    /// One row of the forward pass: `y = softmax(where(m, x * scale, lowest))`.
    fn masked_softmax_row(y: &mut [f32], x: &[f32], m: Option<&[u8]>, scale: f32) {
        match m {
            Some(m) => {
                for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
                    *y = if m != 0 { x * scale } else { f32::MIN };
                }
            }
            None => {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * scale;
                }
            }
        }
        // exp(lowest - max) is 0 whenever anything in the row is allowed (exp_fast gives 0
        // below -87, as expf does); a fully masked row has max == lowest and comes out uniform,
        // as on the plain path.
        let max = lane_max(y);
        for y in y.iter_mut() {
            *y = exp_fast(*y - max);
        }
        let inv = 1.0 / lane_sum(y);
        for y in y.iter_mut() {
            *y *= inv;
        }
    }
}

simd_fn! {
    /// One row of the backward pass: `dx = m ? scale * y * (g - sum(g * y)) : 0` (the where
    /// picks no gradient for masked scores, the softmax's Jacobian gives `y * (g - <g, y>)`).
    fn masked_softmax_grad_row(dx: &mut [f32], y: &[f32], g: &[f32], m: Option<&[u8]>, scale: f32) {
        let mut acc = [0f32; 8];
        for (y, g) in y.chunks(8).zip(g.chunks(8)) {
            for ((a, y), g) in acc.iter_mut().zip(y).zip(g) {
                *a += y * g;
            }
        }
        let dot = lane_sum(&acc);
        match m {
            Some(m) => {
                for (((dx, y), g), &m) in dx.iter_mut().zip(y).zip(g).zip(m) {
                    *dx = if m != 0 { scale * (y * (g - dot)) } else { 0.0 };
                }
            }
            None => {
                for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = scale * (y * (g - dot));
                }
            }
        }
    }
}

struct MaskedSoftmax {
    scale: f32,
}

impl MaskedSoftmax {
    fn run(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        mask: Option<(&[u8], MaskIndex)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32("scaled-masked-softmax", xs, xl)?;
        let s = xl.dims()[3];
        let mut y = zeros_on_huge_pages(x.len());
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let m = mask.map(|(m, idx)| &m[idx.row(r) * s..][..s]);
                masked_softmax_row(y, x, m, self.scale);
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(xs, xl, None)
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = MaskedSoftmaxGrad { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &grad)?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = contiguous_u8(CustomOp2::name(self), ms, ml)?;
        self.run(xs, xl, Some((m, MaskIndex::new(xl, ml)?)))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        mask: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = MaskedSoftmaxGrad { scale: self.scale };
        let dx = y.apply_op3_no_bwd(&g.contiguous()?, mask, &grad)?;
        Ok((Some(dx), None))
    }
}

/// The backward pass of [`MaskedSoftmax`]: from its output `y` and the gradient `g` of `y`.
struct MaskedSoftmaxGrad {
    scale: f32,
}

impl MaskedSoftmaxGrad {
    fn run(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        mask: Option<(&[u8], MaskIndex)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = contiguous_f32("scaled-masked-softmax-grad", ys, yl)?;
        let g = contiguous_f32("scaled-masked-softmax-grad", gs, gl)?;
        let s = yl.dims()[3];
        let mut dx = zeros_on_huge_pages(y.len());
        dx.par_chunks_mut(s)
            .zip(y.par_chunks(s).zip(g.par_chunks(s)))
            .enumerate()
            .for_each(|(r, (dx, (y, g)))| {
                let m = mask.map(|(m, idx)| &m[idx.row(r) * s..][..s]);
                masked_softmax_grad_row(dx, y, g, m, self.scale);
            });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

impl CustomOp2 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(ys, yl, gs, gl, None)
    }
}

impl CustomOp3 for MaskedSoftmaxGrad {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = contiguous_u8(CustomOp3::name(self), ms, ml)?;
        self.run(ys, yl, gs, gl, Some((m, MaskIndex::new(yl, ml)?)))
    }
}

// ----- attention without a cache, head by head ------------------------------------------------

/// Query rows per block: each block's scores are computed only up to the last key any of its
/// rows may see, which skips most of the masked upper triangle of a causal prefill.
const ATTENTION_ROW_BLOCK: usize = 64;

/// Multi-head attention for inference without a KV cache (prefill, the naive loop):
/// `softmax(where(mask, q k^T * scale, lowest)) v` for every head, read straight out of the
/// `(B, T, 3C)` output of `c_attn` and written straight into `(B, T, C)` with the heads side by
/// side. The plain path copies q, k and v into `(B, nh, T, hs)`, materialises all `(B, nh, T, T)`
/// scores, and copies the result back; here each head is one task on the pool, its scores live
/// in a scratch block, and keys no query of a block may see are never multiplied. Masked scores
/// contribute exactly 0 on the plain path too, so the result is the same up to summation order.
/// `mask` is `None` (every key visible) or u8 `(B or 1, 1, T or 1, T)`. Returns `None` when this
/// does not apply (a gradient to track, other devices or dtypes, a mask of another shape).
pub fn causal_attention(
    qkv: &Tensor,
    n_head: usize,
    scale: f64,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !cpu_f32(qkv) || qkv.track_op() || qkv.rank() != 3 {
        return Ok(None);
    }
    let (b, t, c3) = qkv.dims3()?;
    if c3 % (3 * n_head) != 0 {
        return Ok(None);
    }
    let op = CausalAttention {
        n_head,
        scale: scale as f32,
    };
    let qkv = qkv.contiguous()?;
    match mask {
        None => Ok(Some(qkv.apply_op1_no_bwd(&op)?)),
        Some(m) => {
            let fits = m.dtype() == DType::U8
                && m.device().is_cpu()
                && matches!(m.dims4()?, (mb, 1, mt, ms) if (mb == 1 || mb == b) && (mt == 1 || mt == t) && ms == t);
            if !fits {
                return Ok(None);
            }
            Ok(Some(qkv.apply_op2_no_bwd(&m.contiguous()?, &op)?))
        }
    }
}

struct CausalAttention {
    n_head: usize,
    scale: f32,
}

/// The shapes and the mask the attention kernels walk through, block of query rows by block.
struct AttentionGeometry<'a> {
    b: usize,
    t: usize,
    nh: usize,
    hs: usize,
    /// The u8 mask and where score row `r` finds its row in it; `None`: every key visible.
    mask: Option<(&'a [u8], MaskIndex)>,
}

impl<'a> AttentionGeometry<'a> {
    /// For `qkv` of layout `l` `(B, T, 3C)` and an optional mask `(B or 1, 1, T or 1, T)`.
    fn new(
        l: &Layout,
        n_head: usize,
        mask: Option<(&'a [u8], &Layout)>,
    ) -> candle_core::Result<Self> {
        let (b, t, c3) = l.shape().dims3()?;
        let mask = match mask {
            Some((m, ml)) => Some((m, MaskIndex::for_scores((b, n_head, t), ml)?)),
            None => None,
        };
        Ok(Self {
            b,
            t,
            nh: n_head,
            hs: c3 / 3 / n_head,
            mask,
        })
    }

    fn c(&self) -> usize {
        self.nh * self.hs
    }

    fn c3(&self) -> usize {
        3 * self.c()
    }

    /// The mask row of query `i` of head `h`, batch row `bi`.
    fn mask_row(&self, bi: usize, h: usize, i: usize) -> Option<&'a [u8]> {
        self.mask.map(|(m, idx)| {
            let r = idx.row((bi * self.nh + h) * self.t + i);
            &m[r * self.t..(r + 1) * self.t]
        })
    }

    /// How many keys the rows `i0..i1` need: up to the last one any of them may see, or all of
    /// them when a row may see none (its softmax is uniform, as on the plain path).
    fn width(&self, bi: usize, h: usize, rows: std::ops::Range<usize>) -> usize {
        rows.map(|i| match self.mask_row(bi, h, i) {
            None => self.t,
            Some(m) => m.iter().rposition(|&a| a != 0).map_or(self.t, |j| j + 1),
        })
        .max()
        .unwrap_or(self.t)
    }

    /// Offset of the dropout mask's element `(bi, h, i, 0)` in the `(B, nh, T, T)` numbering.
    fn mask_offset(&self, bi: usize, h: usize, i: usize) -> usize {
        ((bi * self.nh + h) * self.t + i) * self.t
    }

    /// Head `h` of batch row `bi`.
    fn head(&self, bi: usize, h: usize) -> Head {
        let base = bi * self.t * self.c3();
        Head {
            q: base + h * self.hs,
            k: base + self.c() + h * self.hs,
            v: base + 2 * self.c() + h * self.hs,
            c3: self.c3(),
            hs: self.hs,
        }
    }
}

/// Where one head's queries, keys and values start in the `(B, T, 3C)` output of `c_attn`
/// (row `i` of each is `3C` further on), and the two products every attention pass makes.
#[derive(Clone, Copy)]
struct Head {
    q: usize,
    k: usize,
    v: usize,
    c3: usize,
    hs: usize,
}

impl Head {
    /// `scores` `(rows, width)` = `q[i0..i0 + rows] k[..width]^T`.
    ///
    /// # Safety
    /// The head, its rows and `scores` must be within `qkv` and `scores`'s bounds.
    unsafe fn scores(&self, qkv: &[f32], i0: usize, rows: usize, width: usize, scores: *mut f32) {
        // SAFETY: the caller's bounds; k^T's element (d, j) is k[j * 3C + d].
        unsafe {
            matmul_f32(
                (rows, self.hs, width),
                Strided::rows(scores, width),
                Strided::rows(qkv.as_ptr().add(self.q + i0 * self.c3), self.c3),
                Strided {
                    ptr: qkv.as_ptr().add(self.k),
                    row_stride: 1,
                    col_stride: self.c3,
                },
                false,
                gemm::Parallelism::None,
            )
        }
    }

    /// `dst` `(rows, hs)` = `probs` `(rows, width)` @ `v[..width]`.
    ///
    /// # Safety
    /// As for [`Head::scores`]; nothing else may touch `dst`'s elements meanwhile.
    unsafe fn times_v(
        &self,
        qkv: &[f32],
        (rows, width): (usize, usize),
        probs: Strided<*const f32>,
        dst: Strided<*mut f32>,
    ) {
        // SAFETY: the caller's bounds.
        unsafe {
            matmul_f32(
                (rows, width, self.hs),
                dst,
                probs,
                Strided::rows(qkv.as_ptr().add(self.v), self.c3),
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

/// A pointer that rayon tasks may share because each writes a disjoint part of its buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `CausalAttention::run`: tasks write disjoint (row, head) slices.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer, through a method so that closures capture the whole (Sync) wrapper.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

impl CausalAttention {
    fn run(&self, qkv: &[f32], g: &AttentionGeometry) -> Vec<f32> {
        let (t, nh, c) = (g.t, g.nh, g.c());
        let mut y = zeros_on_huge_pages(g.b * t * c);
        let out = SharedOut(y.as_mut_ptr());
        (0..g.b * nh).into_par_iter().for_each(|task| {
            let (bi, h) = (task / nh, task % nh);
            let head = g.head(bi, h);
            let mut scores = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut probs = vec![0f32; ATTENTION_ROW_BLOCK * t];
            for i0 in (0..t).step_by(ATTENTION_ROW_BLOCK) {
                let i1 = (i0 + ATTENTION_ROW_BLOCK).min(t);
                // Keys beyond the last one any row of the block may see get probability 0.
                let (rows, width) = (i1 - i0, g.width(bi, h, i0..i1));
                // SAFETY: q rows i0..i1 and k rows 0..width of this head; `scores` holds
                // (rows, width).
                unsafe { head.scores(qkv, i0, rows, width, scores.as_mut_ptr()) };
                for (r, i) in (i0..i1).enumerate() {
                    let row = r * width..(r + 1) * width;
                    let m = g.mask_row(bi, h, i).map(|m| &m[..width]);
                    masked_softmax_row(&mut probs[row.clone()], &scores[row], m, self.scale);
                }
                // SAFETY: y rows i0..i1, columns h*hs..(h+1)*hs of batch bi (row stride C) are
                // written by this task alone.
                unsafe {
                    head.times_v(
                        qkv,
                        (rows, width),
                        Strided::rows(probs.as_ptr(), width),
                        Strided::rows(out.at(bi * t * c + i0 * c + h * g.hs), c),
                    )
                }
            }
        });
        y
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(CustomOp1::name(self), s, l)?;
        let g = AttentionGeometry::new(l, self.n_head, None)?;
        let y = self.run(qkv, &g);
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.t, g.c()))))
    }
}

impl CustomOp2 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(CustomOp2::name(self), s, l)?;
        let m = contiguous_u8(CustomOp2::name(self), ms, ml)?;
        // The mask is indexed like the (B, nh, T, T) scores it would apply to.
        let g = AttentionGeometry::new(l, self.n_head, Some((m, ml)))?;
        let y = self.run(qkv, &g);
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.t, g.c()))))
    }
}

// ----- attention with a backward pass, for training -------------------------------------------

/// Multi-head causal attention as one differentiable operation, for training (and for any
/// forward pass whose gradient is wanted): `dropout(softmax(where(mask, q k^T * scale, lowest))) v`
/// head by head, read from the `(B, T, 3C)` output of `c_attn` and written into `(B, T, C)`,
/// with a backward pass that writes the gradient of q, k and v straight into a `(B, T, 3C)`
/// buffer. The plain path is a dozen tensors - the split of q, k and v, the transposes, the
/// score matrix, the softmax, the dropout, the product, the merge - and in the backward pass
/// each of them gets a zeroed gradient buffer to add into. Here each head is one task, its
/// softmax probabilities are kept for the backward pass, and the dropout mask is made again
/// from its seed rather than stored; it is the mask the plain path's [`Dropout`] would draw for
/// the `(B, nh, T, T)` probabilities. Returns `None` (and draws nothing from `dropout`) where
/// this does not apply: other devices or dtypes, no mask, or a mask of another shape.
///
/// [`Dropout`]: crate::dropout::Dropout
pub fn attention(
    qkv: &Tensor,
    n_head: usize,
    scale: f64,
    mask: &Tensor,
    dropout: &crate::dropout::Dropout,
) -> Result<Option<Tensor>> {
    if !cpu_f32(qkv) || qkv.rank() != 3 {
        return Ok(None);
    }
    let (b, t, c3) = qkv.dims3()?;
    let fits = c3 % (3 * n_head) == 0
        && mask.dtype() == DType::U8
        && mask.device().is_cpu()
        && matches!(mask.dims4()?, (mb, 1, mt, ms) if (mb == 1 || mb == b) && (mt == 1 || mt == t) && ms == t);
    if !fits {
        return Ok(None);
    }
    let op = AttentionWithGrad {
        n_head,
        scale: scale as f32,
        dropout: dropout.next_mask(),
        probs: Arc::new(Mutex::new(None)),
    };
    Ok(Some(qkv.contiguous()?.apply_op2(&mask.contiguous()?, op)?))
}

struct AttentionWithGrad {
    n_head: usize,
    scale: f32,
    dropout: Option<crate::dropout::Mask>,
    /// The softmax probabilities `(B, nh, T, T)` of the forward pass (before dropout; zero
    /// beyond the keys a row block may see), for the backward pass.
    probs: Arc<Mutex<Option<Vec<f32>>>>,
}

impl AttentionWithGrad {
    /// `y` `(B, T, C)` and the probabilities `(B, nh, T, T)`.
    fn forward(&self, qkv: &[f32], g: &AttentionGeometry) -> (Vec<f32>, Vec<f32>) {
        let (t, nh, c) = (g.t, g.nh, g.c());
        let mut y = zeros_on_huge_pages(g.b * t * c);
        let mut probs = zeros_on_huge_pages(g.b * nh * t * t);
        let out = SharedOut(y.as_mut_ptr());
        probs
            .par_chunks_mut(t * t)
            .enumerate()
            .for_each(|(task, p)| {
                let (bi, h) = (task / nh, task % nh);
                let head = g.head(bi, h);
                let mut scores = vec![0f32; ATTENTION_ROW_BLOCK * t];
                let mut dropped = vec![0f32; ATTENTION_ROW_BLOCK * t];
                for i0 in (0..t).step_by(ATTENTION_ROW_BLOCK) {
                    let i1 = (i0 + ATTENTION_ROW_BLOCK).min(t);
                    let (rows, width) = (i1 - i0, g.width(bi, h, i0..i1));
                    // SAFETY: q rows i0..i1 and k rows 0..width of this head; `scores` holds
                    // (rows, width).
                    unsafe { head.scores(qkv, i0, rows, width, scores.as_mut_ptr()) };
                    for (r, i) in (i0..i1).enumerate() {
                        let m = g.mask_row(bi, h, i).map(|m| &m[..width]);
                        let row = &mut p[i * t..i * t + width];
                        masked_softmax_row(row, &scores[r * width..(r + 1) * width], m, self.scale);
                        if let Some(mask) = &self.dropout {
                            let d = &mut dropped[r * width..(r + 1) * width];
                            mask.fill(g.mask_offset(bi, h, i), d);
                            for (d, &p) in d.iter_mut().zip(row.iter()) {
                                *d *= p;
                            }
                        }
                    }
                    let probs = match self.dropout {
                        Some(_) => Strided::rows(dropped.as_ptr(), width),
                        None => Strided::rows(p[i0 * t..].as_ptr(), t),
                    };
                    // SAFETY: y rows i0..i1, columns h*hs..(h+1)*hs of batch bi (row stride C)
                    // are written by this task alone.
                    unsafe {
                        head.times_v(
                            qkv,
                            (rows, width),
                            probs,
                            Strided::rows(out.at(bi * t * c + i0 * c + h * g.hs), c),
                        )
                    }
                }
            });
        (y, probs)
    }

    /// The gradient `(B, T, 3C)` of q, k and v from the gradient `dy` `(B, T, C)` of `y`.
    fn backward(&self, qkv: &[f32], dy: &[f32], probs: &[f32], g: &AttentionGeometry) -> Vec<f32> {
        let (t, nh, hs, c3, c) = (g.t, g.nh, g.hs, g.c3(), g.c());
        let mut dqkv = zeros_on_huge_pages(g.b * t * c3);
        let out = SharedOut(dqkv.as_mut_ptr());
        (0..g.b * nh).into_par_iter().for_each(|task| {
            let (bi, h) = (task / nh, task % nh);
            let head = g.head(bi, h);
            let p = &probs[task * t * t..(task + 1) * t * t];
            let mut dropped = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut keep = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut dp = vec![0f32; ATTENTION_ROW_BLOCK * t];
            for i0 in (0..t).step_by(ATTENTION_ROW_BLOCK) {
                let i1 = (i0 + ATTENTION_ROW_BLOCK).min(t);
                let (rows, width) = (i1 - i0, g.width(bi, h, i0..i1));
                let dy_rows = Strided::rows(dy[bi * t * c + i0 * c + h * hs..].as_ptr(), c);
                // The probabilities after dropout, as the forward pass multiplied v by them.
                let pd = match &self.dropout {
                    Some(mask) => {
                        for (r, i) in (i0..i1).enumerate() {
                            let m = &mut keep[r * width..(r + 1) * width];
                            mask.fill(g.mask_offset(bi, h, i), m);
                            let d = &mut dropped[r * width..(r + 1) * width];
                            for ((d, &m), &p) in d.iter_mut().zip(m.iter()).zip(&p[i * t..]) {
                                *d = m * p;
                            }
                        }
                        Strided::rows(dropped.as_ptr(), width)
                    }
                    None => Strided::rows(p[i0 * t..].as_ptr(), t),
                };
                // SAFETY (all four products): the rows of this head that this task alone
                // writes in `dqkv` (q rows i0..i1, k and v rows 0..width, row stride 3C),
                // scratch buffers of (rows, width), and reads within `qkv`, `dy` and `probs`.
                unsafe {
                    // d(dropped probabilities) = dy v^T: (rows, hs) @ (hs, width).
                    matmul_f32(
                        (rows, hs, width),
                        Strided::rows(dp.as_mut_ptr(), width),
                        dy_rows,
                        Strided {
                            ptr: qkv.as_ptr().add(head.v),
                            row_stride: 1,
                            col_stride: c3,
                        },
                        false,
                        gemm::Parallelism::None,
                    );
                    // dv += dropped^T dy: (width, rows) @ (rows, hs).
                    matmul_f32(
                        (width, rows, hs),
                        Strided::rows(out.at(head.v), c3),
                        Strided {
                            ptr: pd.ptr,
                            row_stride: 1,
                            col_stride: pd.row_stride,
                        },
                        dy_rows,
                        true,
                        gemm::Parallelism::None,
                    );
                }
                // Through the dropout, then the softmax, the mask and the scale: d(scores).
                for (r, i) in (i0..i1).enumerate() {
                    let row = r * width..(r + 1) * width;
                    if self.dropout.is_some() {
                        for (d, &m) in dp[row.clone()].iter_mut().zip(&keep[row.clone()]) {
                            *d *= m;
                        }
                    }
                    let m = g.mask_row(bi, h, i).map(|m| &m[..width]);
                    let ds = &mut dropped[row.clone()];
                    masked_softmax_grad_row(ds, &p[i * t..i * t + width], &dp[row], m, self.scale);
                }
                let ds = dropped.as_ptr();
                // SAFETY: as above; `dropped` now holds d(scores), (rows, width).
                unsafe {
                    // dq = d(scores) k: (rows, width) @ (width, hs).
                    matmul_f32(
                        (rows, width, hs),
                        Strided::rows(out.at(head.q + i0 * c3), c3),
                        Strided::rows(ds, width),
                        Strided::rows(qkv.as_ptr().add(head.k), c3),
                        false,
                        gemm::Parallelism::None,
                    );
                    // dk += d(scores)^T q: (width, rows) @ (rows, hs).
                    matmul_f32(
                        (width, rows, hs),
                        Strided::rows(out.at(head.k), c3),
                        Strided {
                            ptr: ds,
                            row_stride: 1,
                            col_stride: width,
                        },
                        Strided::rows(qkv.as_ptr().add(head.q + i0 * c3), c3),
                        true,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
        dqkv
    }
}

impl CustomOp2 for AttentionWithGrad {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(CustomOp2::name(self), s, l)?;
        let mask = contiguous_u8(CustomOp2::name(self), ms, ml)?;
        let g = AttentionGeometry::new(l, self.n_head, Some((mask, ml)))?;
        let (y, probs) = self.forward(qkv, &g);
        *self.probs.lock().expect("attention probabilities poisoned") = Some(probs);
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.t, g.nh * g.hs))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        mask: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = AttentionGrad {
            op: AttentionWithGrad {
                n_head: self.n_head,
                scale: self.scale,
                dropout: self.dropout,
                probs: self.probs.clone(),
            },
        };
        let dqkv = qkv.apply_op3_no_bwd(&dy.contiguous()?, mask, &grad)?;
        Ok((Some(dqkv), None))
    }
}

/// The backward pass of [`AttentionWithGrad`] as an operation on (qkv, dy, mask).
struct AttentionGrad {
    op: AttentionWithGrad,
}

impl CustomOp3 for AttentionGrad {
    fn name(&self) -> &'static str {
        "attention-grad"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = CustomOp3::name(self);
        let qkv = contiguous_f32(name, s, l)?;
        let dy = contiguous_f32(name, ds, dl)?;
        let mask = contiguous_u8(name, ms, ml)?;
        let g = AttentionGeometry::new(l, self.op.n_head, Some((mask, ml)))?;
        let probs = self
            .op
            .probs
            .lock()
            .expect("attention probabilities poisoned");
        let Some(probs) = probs.as_ref() else {
            candle_core::bail!("{name}: the forward pass kept no probabilities");
        };
        let dqkv = self.op.backward(qkv, dy, probs, &g);
        Ok((CpuStorage::F32(dqkv), l.shape().clone()))
    }
}

// ----- cross-entropy: log-softmax, pick and mean in one pass -----------------------------------

/// `-sum_i weights[i] * log_softmax(logits[i])[targets[i]]` for `logits` `(N, V)` f32, `targets`
/// `(N)` u32 and `weights` `(N)` f32: the mean cross-entropy of [`crate::loss::cross_entropy`]
/// with the ignored rows weighted 0 and the others `1 / counted`. Differentiable in `logits`.
///
/// The plain path is a log-softmax, a gather, a product and a sum, and its backward pass
/// another five passes over the `(N, V)` logits (100 MB for a 500-token step of GPT-2), each
/// into a fresh buffer. Here one pass over the logits gives the loss and, when the logits are
/// tracked for a gradient, their gradient `w_i * (softmax - onehot)` too, which the backward
/// pass hands on. Returns `None` for other devices and dtypes.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Option<Tensor>> {
    if !cpu_f32(logits) || !cpu_f32(weights) || logits.rank() != 2 {
        return Ok(None);
    }
    let n = logits.dim(0)?;
    if targets.dtype() != DType::U32 || targets.dims() != [n] || weights.dims() != [n] {
        return Ok(None);
    }
    let op = CrossEntropy {
        keep_grad: logits.track_op(),
        grad: Mutex::new(None),
    };
    Ok(Some(logits.contiguous()?.apply_op3(
        &targets.contiguous()?,
        &weights.contiguous()?,
        op,
    )?))
}

simd_fn! {
    /// One row: `e_j = w * e^(x_j - lse)`, then `e_t -= w` (the gradient of `-w * log_softmax(x)_t`
    /// with respect to `x`), and the row's loss `w * (lse - x_t)`. `e` is scratch when only the
    /// loss is wanted.
    fn cross_entropy_row(e: &mut [f32], x: &[f32], t: usize, w: f32) -> f64 {
        let max = lane_max(x);
        for (e, &v) in e.iter_mut().zip(x) {
            *e = exp_fast(v - max);
        }
        let sum = lane_sum(e);
        let lse = max + sum.ln();
        let scale = w / sum;
        for e in e.iter_mut() {
            *e *= scale;
        }
        e[t] -= w;
        f64::from(w) * f64::from(lse - x[t])
    }
}

/// Logits, targets, weights and the number of classes.
type CrossEntropyInputs<'a> = (&'a [f32], &'a [u32], &'a [f32], usize);

/// The rows' data of the three inputs, checked: logits `(N, V)`, targets in `[0, V)`.
fn cross_entropy_inputs<'a>(
    op: &str,
    (xs, xl): (&'a CpuStorage, &Layout),
    (ts, tl): (&'a CpuStorage, &Layout),
    (ws, wl): (&'a CpuStorage, &Layout),
) -> candle_core::Result<CrossEntropyInputs<'a>> {
    let x = contiguous_f32(op, xs, xl)?;
    let w = contiguous_f32(op, ws, wl)?;
    let t = match (ts, tl.contiguous_offsets()) {
        (CpuStorage::U32(t), Some((start, end))) => &t[start..end],
        _ => candle_core::bail!("{op}: expected contiguous u32 targets"),
    };
    let (_, v) = xl.shape().dims2()?;
    if let Some(bad) = t.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("{op}: target {bad} is not below the {v} classes");
    }
    Ok((x, t, w, v))
}

/// The loss, and with `keep_grad` the gradient of the logits for an upstream gradient of 1,
/// computed in the same pass and kept for [`CustomOp3::bwd`].
struct CrossEntropy {
    keep_grad: bool,
    grad: Mutex<Option<Vec<f32>>>,
}

impl CustomOp3 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, t, w, v) = cross_entropy_inputs(self.name(), (xs, xl), (ts, tl), (ws, wl))?;
        let row = |e: &mut [f32], x: &[f32], t: u32, w: f32| {
            // Ignored rows (weight 0) add nothing and keep a zero gradient.
            if w == 0.0 {
                0.0
            } else {
                cross_entropy_row(e, x, t as usize, w)
            }
        };
        let losses: Vec<f64> = if self.keep_grad {
            let mut grad = zeros_on_huge_pages(x.len());
            let losses = grad
                .par_chunks_mut(v)
                .zip(x.par_chunks(v))
                .zip(t.par_iter().zip(w.par_iter()))
                .map(|((e, x), (&t, &w))| row(e, x, t, w))
                .collect();
            *self
                .grad
                .lock()
                .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned".into()))? =
                Some(grad);
            losses
        } else {
            x.par_chunks(v)
                .zip(t.par_iter().zip(w.par_iter()))
                .map_init(|| vec![0f32; v], |e, (x, (&t, &w))| row(e, x, t, w))
                .collect()
        };
        // Summed in row order, in f64: the same bits whatever the number of threads.
        let loss = losses.iter().sum::<f64>() as f32;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        t: &Tensor,
        w: &Tensor,
        _loss: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let kept = self
            .grad
            .lock()
            .map_err(|_| candle_core::Error::Msg("cross-entropy: poisoned".into()))?
            .take();
        let dx = match kept {
            Some(grad) => Tensor::from_vec(grad, x.shape(), x.device())?,
            // Not kept (the logits were not tracked when the loss was computed), or already
            // handed out by an earlier backward pass: compute it again.
            None => {
                let mut op = CrossEntropy {
                    keep_grad: true,
                    grad: Mutex::new(None),
                };
                x.apply_op3_no_bwd(t, w, &op)?;
                let grad = op.grad.get_mut().ok().and_then(Option::take);
                let grad = grad
                    .ok_or_else(|| candle_core::Error::Msg("cross-entropy: no gradient".into()))?;
                Tensor::from_vec(grad, x.shape(), x.device())?
            }
        };
        let scale = g.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let dx = if scale == 1.0 {
            dx
        } else {
            (dx * f64::from(scale))?
        };
        Ok((Some(dx), None, None))
    }
}

// ----- AdamW in one pass --------------------------------------------------------------------

/// AdamW with decoupled weight decay, exactly `candle_nn::AdamW`'s update (same formula, same
/// order of operations, same f64 constants rounded to f32), made in one parallel pass over each
/// parameter, in place. The moments live here as plain buffers. Parameters that are not f32 on
/// the CPU are refused when the optimiser is built.
pub struct FusedAdamW {
    vars: Vec<(Var, Mutex<Moments>)>,
    params: ParamsAdamW,
    step_t: usize,
}

/// First and second moments of one parameter.
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl FusedAdamW {
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|var| {
                if !var.device().is_cpu() || var.dtype() != DType::F32 {
                    return Err(Error::InvalidArgument(format!(
                        "FusedAdamW runs on f32 parameters on the CPU, got {:?} on {:?}: use candle_nn::AdamW",
                        var.dtype(),
                        var.device()
                    )));
                }
                let n = var.elem_count();
                let moments = Moments {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                };
                Ok((var, Mutex::new(moments)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            params,
            step_t: 0,
        })
    }

    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let t = self.step_t as i32;
        let update = AdamWUpdate {
            beta1: p.beta1,
            beta2: p.beta2,
            scale_m: 1.0 / (1.0 - p.beta1.powi(t)),
            scale_v: 1.0 / (1.0 - p.beta2.powi(t)),
            decay: 1.0 - p.lr * p.weight_decay,
            lr: p.lr,
            eps: p.eps,
        };
        for (var, moments) in &self.vars {
            let Some(g) = grads.get(var) else { continue };
            let mut moments = moments
                .lock()
                .map_err(|_| Error::InvalidArgument("AdamW moments poisoned".into()))?;
            let op = AdamWInPlace {
                update,
                moments: Mutex::new(&mut moments),
            };
            var.as_tensor().inplace_op2(&g.contiguous()?, &op)?;
        }
        Ok(())
    }
}

impl candle_nn::Optimizer for FusedAdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        FusedAdamW::new(vars, params).map_err(candle_core::Error::wrap)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        FusedAdamW::step(self, grads).map_err(candle_core::Error::wrap)
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

/// The constants of one AdamW step, in f64 as `candle_nn::AdamW` computes them.
#[derive(Clone, Copy)]
struct AdamWUpdate {
    beta1: f64,
    beta2: f64,
    scale_m: f64,
    scale_v: f64,
    decay: f64,
    lr: f64,
    eps: f64,
}

impl AdamWUpdate {
    /// `candle_nn::AdamW`, element-wise. Each `tensor * f64` there is an affine map whose factor
    /// is rounded to f32, and `x + f64` likewise; the same roundings happen here.
    #[inline]
    fn apply(&self, theta: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        let f = |x: f64| x as f32;
        *m = *m * f(self.beta1) + g * f(1.0 - self.beta1);
        *v = *v * f(self.beta2) + (g * g) * f(1.0 - self.beta2);
        let m_hat = *m * f(self.scale_m);
        let v_hat = *v * f(self.scale_v);
        let adjusted = m_hat / (v_hat.sqrt() + f(self.eps));
        *theta = *theta * f(self.decay) - adjusted * f(self.lr);
    }
}

/// The in-place update of one parameter from its gradient; the moments ride along.
struct AdamWInPlace<'a> {
    update: AdamWUpdate,
    moments: Mutex<&'a mut Moments>,
}

/// Elements per parallel task: big enough that scheduling costs nothing, small enough to share.
const ADAMW_CHUNK: usize = 1 << 16;

impl InplaceOp2 for AdamWInPlace<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        ts: &mut CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = contiguous_f32(self.name(), gs, gl)?;
        let theta = match ts {
            CpuStorage::F32(v) => v.as_mut_slice(),
            _ => candle_core::bail!("{}: expected f32 parameters", self.name()),
        };
        let Some((start, end)) = tl.contiguous_offsets() else {
            candle_core::bail!("{}: expected a contiguous parameter", self.name())
        };
        let theta = &mut theta[start..end];
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("AdamW moments poisoned".into()))?;
        let Moments { m, v } = &mut **moments;
        if g.len() != theta.len() || m.len() != theta.len() {
            candle_core::bail!(
                "{}: parameter of {} elements, gradient of {}",
                self.name(),
                theta.len(),
                g.len()
            );
        }
        let u = self.update;
        theta
            .par_chunks_mut(ADAMW_CHUNK)
            .zip(m.par_chunks_mut(ADAMW_CHUNK))
            .zip(v.par_chunks_mut(ADAMW_CHUNK))
            .zip(g.par_chunks(ADAMW_CHUNK))
            .for_each(|(((theta, m), v), g)| {
                for (((theta, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
                    u.apply(theta, m, v, g);
                }
            });
        Ok(())
    }
}

// ----- weights on huge pages ------------------------------------------------------------------

/// Tensors at least this large are worth placing on 2 MiB pages.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// A CPU f32 tensor of `shape` from little-endian `bytes` (a safetensors view), in memory the
/// kernel is asked to back with transparent huge pages. Decoding streams every weight once per
/// token; with 4 KiB pages a 500 MB model spans 120,000 pages and the TLB misses on most of
/// them, with 2 MiB pages on 240. Where huge pages are off, or on other systems, this is a plain
/// copy.
pub(crate) fn f32_tensor_on_huge_pages(bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
    let n = bytes.len() / 4;
    if n * 4 != bytes.len() || shape.iter().product::<usize>() != n {
        return Err(Error::InvalidArgument(format!(
            "{} bytes do not hold f32 values of shape {shape:?}",
            bytes.len()
        )));
    }
    let mut data: Vec<f32> = Vec::with_capacity(n);
    if n * 4 >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(data.as_mut_ptr().cast(), n * 4);
    }
    data.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)
}

/// A zeroed buffer of `len` floats; past a few MB, backed by huge pages. A large zeroed
/// allocation comes fresh from the kernel, untouched, so the advice is in time for its first
/// write: one fault per 2 MiB instead of one per 4 KiB (a 500-token step's logits are 100 MB).
fn zeros_on_huge_pages(len: usize) -> Vec<f32> {
    let mut v = vec![0f32; len];
    if len * 4 >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(v.as_mut_ptr().cast(), len * 4);
    }
    v
}

/// `madvise(MADV_HUGEPAGE)` over the whole pages inside `[ptr, ptr + len)`, before they are
/// first touched. Advice only: failure (huge pages disabled) changes nothing.
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    let page = 4096;
    let start = (ptr as usize).div_ceil(page) * page;
    let end = (ptr as usize + len) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside an allocation this process owns, and MADV_HUGEPAGE
        // changes how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}
