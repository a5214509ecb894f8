//! Multi-head attention for inference without a KV cache (prefill, the naive loop), head by
//! head, never holding the full score matrix.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention_geometry::{AttentionGeometry, SharedOut, ATTENTION_ROW_BLOCK};
use super::gemm::Strided;
use super::softmax::masked_softmax_row;
use super::{contiguous_f32, contiguous_u8, cpu_f32, mask_fits};
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
        Some(m) if mask_fits(m, (b, t, t)) => {
            Ok(Some(qkv.apply_op2_no_bwd(&m.contiguous()?, &op)?))
        }
        Some(_) => Ok(None),
    }
}

struct CausalAttention {
    n_head: usize,
    scale: f32,
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
