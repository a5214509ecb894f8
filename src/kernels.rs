//! CPU fast paths: the same arithmetic as the plain candle code in [`crate::model`] and
//! `candle_nn::AdamW`, arranged to use every core and to make fewer passes over memory.
//!
//! **Decoding, one token at a time.** Generating with the KV cache feeds the model one token per step, so every linear layer is a
//! vector-matrix product (`(1, in) @ (in, out)`). candle hands that to the `gemm` crate, whose
//! matrix-vector kernel runs on a single thread: decoding then uses one core of two, and is
//! bound by how fast one core streams the weights from memory. Here the output columns are
//! split into chunks and each chunk's product runs on the rayon pool (the one candle's own
//! matmuls use). Each output element is still the same dot product over the same inputs in the
//! same order, so the results equal the plain path's; `tests/perf_paths.rs` checks it.
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

use std::sync::Mutex;

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

/// `x @ wte^T` for `x` `(N, C)`: the tied LM head, differentiable. One position (decoding) is
/// threaded over the vocabulary; more positions go to gemm's threaded matrix product. Either
/// way no transposed copy of `wte` is made, and in training the gradient of `wte` comes out
/// `(V, C)` and contiguous (through `wte.t()` candle would accumulate it through a transposed
/// view, element by element). Returns `None` for other devices and dtypes.
pub fn tied_head(x: &Tensor, wte: &Tensor) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
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
        let mut y = vec![0f32; n * v];
        if n == 1 {
            let chunk = column_chunks(v);
            y.par_chunks_mut(chunk).enumerate().for_each(|(i, dst)| {
                // SAFETY: rows i*chunk.. of the (V, C) row-major wte, read as columns of wte^T.
                unsafe { gemv_chunk(dst, x, wte, i * chunk, 1, c) };
            });
        } else {
            let threads = candle_core::utils::get_num_threads();
            // SAFETY: dst (N, V), lhs x (N, C) and rhs wte^T (C, V) are read as the row-major
            // buffers they are; element (k, j) of wte^T is wte[j * C + k].
            unsafe {
                gemm::gemm(
                    n,
                    v,
                    c,
                    y.as_mut_ptr(),
                    1,
                    v as isize,
                    false,
                    x.as_ptr(),
                    1,
                    c as isize,
                    wte.as_ptr(),
                    c as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    if threads > 1 {
                        gemm::Parallelism::Rayon(threads)
                    } else {
                        gemm::Parallelism::None
                    },
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

/// GPT-2's `gelu_new`, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, on every core and
/// with a one-pass backward (candle's `gelu` runs on one thread, and its gradient is a dozen
/// tensor operations). Returns `None` for other devices and dtypes.
pub fn gelu_tanh(x: &Tensor) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    Ok(Some(x.contiguous()?.apply_op1(GeluTanh)?))
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(self.name(), xs, xl)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(y, x)| {
                for (y, &v) in y.iter_mut().zip(x) {
                    // candle's formula, operation for operation.
                    *y = 0.5
                        * v
                        * (1.0 + f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_COEF * v * v)));
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluTanhGrad)?))
    }
}

/// `dx = g * d/dx gelu(x)`, with `d/dx gelu = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi)
/// (1 + 3 * 0.044715 x^2)` and `t` the tanh of the forward pass.
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
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                x.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(g.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(|(dx, (x, g))| {
                for (dx, (&v, &g)) in dx.iter_mut().zip(x.iter().zip(g)) {
                    let t = f32::tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_COEF * v * v));
                    let du = SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_COEF * v * v);
                    *dx = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// LayerNorm over the last dimension with a one-pass backward, for training: candle's fused
/// kernel has no backward, and the composed one is ten tensor operations each way. Mean and
/// variance are taken in two passes, like the composed version. Returns `None` for other
/// devices and dtypes.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
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
        let mut y = vec![0f32; x.len()];
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
        let mut dx = vec![0f32; x.len()];
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
        let (_, nh, t, _) = att.shape().dims4()?;
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

/// One row of the forward pass: `y = softmax(where(m, x * scale, lowest))`.
fn masked_softmax_row(y: &mut [f32], x: &[f32], m: Option<&[u8]>, scale: f32) {
    let allowed = |j: usize| m.is_none_or(|m| m[j] != 0);
    let mut max = f32::NEG_INFINITY;
    for (j, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        *y = if allowed(j) { x * scale } else { f32::MIN };
        max = max.max(*y);
    }
    let mut sum = 0f32;
    for (j, y) in y.iter_mut().enumerate() {
        // exp(lowest - max) is exactly 0 whenever anything in the row is allowed; skipping it
        // saves half the exponentials of a causal mask. A fully masked row has max == lowest
        // and takes the exponential like the plain path: uniform.
        *y = if allowed(j) || max == f32::MIN {
            (*y - max).exp()
        } else {
            0.0
        };
        sum += *y;
    }
    for y in y.iter_mut() {
        *y /= sum;
    }
}

/// One row of the backward pass: `dx = m ? scale * y * (g - sum(g * y)) : 0` (the where picks
/// no gradient for masked scores, the softmax's Jacobian gives `y * (g - <g, y>)`).
fn masked_softmax_grad_row(dx: &mut [f32], y: &[f32], g: &[f32], m: Option<&[u8]>, scale: f32) {
    let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
    for (j, (dx, (y, g))) in dx.iter_mut().zip(y.iter().zip(g)).enumerate() {
        *dx = if m.is_none_or(|m| m[j] != 0) {
            scale * (y * (g - dot))
        } else {
            0.0
        };
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
        let mut y = vec![0f32; x.len()];
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
        let mut dx = vec![0f32; y.len()];
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
