//! Multi-head attention for inference without a KV cache (prefill, the naive loop), head by
//! head, never holding the full score matrix.

use candle_core::{CpuStorage, Shape, Tensor};
use rayon::prelude::*;

use super::attention_geometry::{AttentionGeometry, SharedOut, ATTENTION_ROW_BLOCK};
use super::custom_op::{apply_no_bwd, CpuInputs, CpuKernel};
use super::custom_op::{cpu_float, mask_fits};
use crate::kernels::matmul::Strided;
use crate::memory::zeros_on_huge_pages;
use crate::Result;

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
    if !cpu_float(&[qkv]) || qkv.track_op() || qkv.rank() != 3 {
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
    match mask {
        None => Ok(Some(apply_no_bwd(op, &[qkv])?)),
        Some(m) if mask_fits(m, (b, t, t)) => Ok(Some(apply_no_bwd(op, &[qkv, m])?)),
        Some(_) => Ok(None),
    }
}

struct CausalAttention {
    n_head: usize,
    scale: f32,
}

/// With one input, `qkv`; with two, `qkv` and the mask.
impl CpuKernel for CausalAttention {
    const NAME: &'static str = "causal-attention";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = &*inputs.f32(0)?;
        let g = AttentionGeometry::new(inputs, self.n_head, 1)?;
        let (t, nh, c) = (g.t, g.nh, g.c());
        let mut y = zeros_on_huge_pages(g.b * t * c);
        let out = SharedOut(y.as_mut_ptr());
        (0..g.b * nh).into_par_iter().for_each(|task| {
            let (bi, h) = (task / nh, task % nh);
            let head = g.head(bi, h);
            let mut scores = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut probs = vec![0f32; ATTENTION_ROW_BLOCK * t];
            // Keys beyond the last one any row of a block may see get probability 0.
            for blk in g.row_blocks(bi, h) {
                let width = blk.width;
                g.block_probs(qkv, &blk, self.scale, &mut scores, (&mut probs, width));
                // SAFETY: y rows i0..i1, columns h*hs..(h+1)*hs of batch bi (row stride C) are
                // written by this task alone.
                unsafe {
                    head.times_v(
                        qkv,
                        (blk.rows(), width),
                        Strided::rows(probs.as_ptr(), width),
                        Strided::rows(out.at(bi * t * c + blk.i0 * c + h * g.hs), c),
                    )
                }
            }
        });
        Ok((inputs.output(y), Shape::from((g.b, t, c))))
    }
}
