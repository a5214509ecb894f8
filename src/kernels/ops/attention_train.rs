//! Multi-head causal attention with a backward pass, for training: dropout inside, the
//! gradient of q, k and v written straight into one `(B, T, 3C)` buffer.

use candle_core::{CpuStorage, Shape, Tensor};
use rayon::prelude::*;

use super::attention_geometry::{AttentionGeometry, RowBlock, SharedOut, ATTENTION_ROW_BLOCK};
use super::custom_op::{apply, apply_no_bwd, CpuInputs, CpuKernel, Grads};
use super::custom_op::{cpu_float, mask_fits};
use super::dropout_mask::{DrawMask, Mask};
use super::softmax::masked_softmax_grad_row;
use crate::kernels::matmul::{matmul_f32, Strided};
use crate::memory::zeros_on_huge_pages;
use crate::Result;

/// Multi-head causal attention as one differentiable operation, for training (and for any
/// forward pass whose gradient is wanted): `dropout(softmax(where(mask, q k^T * scale, lowest))) v`
/// head by head, read from the `(B, T, 3C)` output of `c_attn` and written into `(B, T, C)`,
/// with a backward pass that writes the gradient of q, k and v straight into a `(B, T, 3C)`
/// buffer. The plain path is a dozen tensors - the split of q, k and v, the transposes, the
/// score matrix, the softmax, the dropout, the product, the merge - and in the backward pass
/// each of them gets a zeroed gradient buffer to add into. Here each head is one task, its
/// softmax probabilities are computed again in the backward pass rather than kept (they were
/// `(B, nh, T, T)` floats per layer - 24 layers x 16 heads x 500 x 500 x 4 bytes = 384 MB
/// through a 500-token gpt2-medium step - for one more `q k^T` per block), and the dropout
/// mask is made again from its seed rather than stored; it is the mask the plain path's dropout layer would draw for the `(B, nh, T, T)`
/// probabilities. Returns `None` (and draws nothing from `dropout`) where
/// this does not apply: other devices or dtypes, no mask, or a mask of another shape.
pub fn attention(
    qkv: &Tensor,
    n_head: usize,
    scale: f64,
    mask: &Tensor,
    dropout: &impl DrawMask,
) -> Result<Option<Tensor>> {
    if !cpu_float(&[qkv]) || qkv.rank() != 3 {
        return Ok(None);
    }
    let (b, t, c3) = qkv.dims3()?;
    if c3 % (3 * n_head) != 0 || !mask_fits(mask, (b, t, t)) {
        return Ok(None);
    }
    let op = AttentionWithGrad {
        n_head,
        scale: scale as f32,
        dropout: dropout.next_mask(),
    };
    Ok(Some(apply(op, &[qkv, mask])?))
}

pub(crate) struct AttentionWithGrad {
    pub(crate) n_head: usize,
    pub(crate) scale: f32,
    pub(crate) dropout: Option<Mask>,
}

impl AttentionWithGrad {
    /// `y` `(B, T, C)`.
    pub(crate) fn forward(&self, qkv: &[f32], g: &AttentionGeometry) -> Vec<f32> {
        let (t, nh, c) = (g.t, g.nh, g.c());
        let mut y = zeros_on_huge_pages(g.rows() * c);
        let out = SharedOut(y.as_mut_ptr());
        (0..g.b * nh).into_par_iter().for_each(|task| {
            let (bi, h) = (task / nh, task % nh);
            let head = g.head(bi, h);
            // One head's (T, T) probabilities, row block by row block.
            let mut p = vec![0f32; t * t];
            let mut scores = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut keep = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut dropped = vec![0f32; ATTENTION_ROW_BLOCK * t];
            for blk in g.row_blocks(bi, h) {
                g.block_probs(
                    qkv,
                    &blk,
                    self.scale,
                    &mut scores,
                    (&mut p[blk.i0 * t..], t),
                );
                let probs = self.dropped_probs(g, &blk, &p, &mut keep, &mut dropped);
                // SAFETY: y rows i0..i1, columns h*hs..(h+1)*hs of batch bi (row stride C)
                // are written by this task alone.
                unsafe {
                    head.times_v(
                        qkv,
                        (blk.rows(), blk.width),
                        probs,
                        Strided::rows(out.at((g.start(bi) + blk.i0) * c + h * g.hs), c),
                    )
                }
            }
        });
        y
    }

    /// The probabilities of a block after dropout, as the forward pass multiplies v by them:
    /// `keep` gets the rows of the dropout mask and `dropped` their products with the rows of
    /// `p` (one head's `(T, T)` probabilities); without dropout, `p`'s rows themselves.
    fn dropped_probs(
        &self,
        g: &AttentionGeometry,
        blk: &RowBlock,
        p: &[f32],
        keep: &mut [f32],
        dropped: &mut [f32],
    ) -> Strided<*const f32> {
        let t = g.t;
        let Some(mask) = &self.dropout else {
            return Strided::rows(p[blk.i0 * t..].as_ptr(), t);
        };
        for (r, i) in blk.queries() {
            let m = &mut keep[blk.row(r)];
            mask.fill(g.mask_offset(blk.bi, blk.h, i), m);
            for ((d, &m), &p) in dropped[blk.row(r)]
                .iter_mut()
                .zip(m.iter())
                .zip(&p[i * t..])
            {
                *d = m * p;
            }
        }
        Strided::rows(dropped.as_ptr(), blk.width)
    }

    /// The gradient `(B, T, 3C)` of q, k and v from the gradient `dy` `(B, T, C)` of `y`.
    pub(crate) fn backward(&self, qkv: &[f32], dy: &[f32], g: &AttentionGeometry) -> Vec<f32> {
        let (t, nh, hs, c3, c) = (g.t, g.nh, g.hs, g.c3(), g.c());
        let mut dqkv = zeros_on_huge_pages(g.rows() * c3);
        let out = SharedOut(dqkv.as_mut_ptr());
        (0..g.b * nh).into_par_iter().for_each(|task| {
            let (bi, h) = (task / nh, task % nh);
            let head = g.head(bi, h);
            let mut p = vec![0f32; t * t];
            let mut dropped = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut keep = vec![0f32; ATTENTION_ROW_BLOCK * t];
            let mut dp = vec![0f32; ATTENTION_ROW_BLOCK * t];
            for blk in g.row_blocks(bi, h) {
                let (i0, rows, width) = (blk.i0, blk.rows(), blk.width);
                let dy_rows = Strided::rows(dy[(g.start(bi) + i0) * c + h * hs..].as_ptr(), c);
                // The forward pass's probabilities, made again the same way (`dropped` is
                // scratch here, overwritten next).
                g.block_probs(qkv, &blk, self.scale, &mut dropped, (&mut p[i0 * t..], t));
                let pd = self.dropped_probs(g, &blk, &p, &mut keep, &mut dropped);
                // SAFETY (all four products): the rows of this head that this task alone
                // writes in `dqkv` (q rows i0..i1, k and v rows 0..width, row stride 3C),
                // scratch buffers of (rows, width), and reads within `qkv`, `dy` and `p`.
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
                for (r, i) in blk.queries() {
                    let row = blk.row(r);
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

/// Inputs `qkv` and the mask.
impl CpuKernel for AttentionWithGrad {
    const NAME: &'static str = "attention";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = AttentionGeometry::new(inputs, self.n_head, 1)?;
        let y = self.forward(&inputs.f32(0)?, &g);
        Ok((inputs.output(y), Shape::from((g.b, g.t, g.nh * g.hs))))
    }

    fn bwd(&self, inputs: &[&Tensor], _y: &Tensor, dy: &Tensor) -> Grads {
        let grad = AttentionGrad {
            op: AttentionWithGrad {
                n_head: self.n_head,
                scale: self.scale,
                dropout: self.dropout,
            },
        };
        let (qkv, mask) = (inputs[0], inputs[1]);
        Ok(vec![Some(apply_no_bwd(grad, &[qkv, dy, mask])?), None])
    }
}

/// The backward pass of [`AttentionWithGrad`] as an operation on (qkv, dy, mask).
struct AttentionGrad {
    op: AttentionWithGrad,
}

impl CpuKernel for AttentionGrad {
    const NAME: &'static str = "attention-grad";

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        let (qkv, dy) = (&*inputs.f32(0)?, &*inputs.f32(1)?);
        let g = AttentionGeometry::new(inputs, self.op.n_head, 2)?;
        let dqkv = self.op.backward(qkv, dy, &g);
        Ok((inputs.output(dqkv), inputs.layout(0).shape().clone()))
    }
}
