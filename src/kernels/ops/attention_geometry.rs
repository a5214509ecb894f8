//! What the two attention kernels share: the blocks of query rows they walk, the shapes and
//! the mask of one call, where each head's q, k and v lie in `c_attn`'s `(B, T, 3C)` output,
//! and the two products every pass makes.

use std::ops::Range;

use super::custom_op::CpuInputs;
use super::softmax::{masked_softmax_row, MaskIndex};
use crate::kernels::matmul::{matmul_f32, Strided};

/// Query rows per block: each block's scores are computed only up to the last key any of its
/// rows may see, which skips most of the masked upper triangle of a causal prefill.
pub(crate) const ATTENTION_ROW_BLOCK: usize = 64;

/// The shapes and the mask the attention kernels walk through, block of query rows by block.
pub(crate) struct AttentionGeometry<'a> {
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) nh: usize,
    pub(crate) hs: usize,
    /// The u8 mask and where score row `r` finds its row in it; `None`: every key visible.
    mask: Option<(&'a [u8], MaskIndex)>,
    /// Where each sequence's rows start in `qkv` and the output, and how many of its first
    /// rows are there (see [`AttentionGeometry::packed`]); `None`: all `T`, `T` apart.
    packed: Option<Vec<(usize, usize)>>,
}

impl<'a> AttentionGeometry<'a> {
    /// For `qkv` `(B, T, 3C)`, input 0 of `inputs`, and the mask `(B or 1, 1, T or 1, T)` at
    /// input `mask_input` if the call has one. The mask is indexed like the `(B, nh, T, T)`
    /// scores it would apply to.
    pub(crate) fn new(
        inputs: &CpuInputs<'a>,
        n_head: usize,
        mask_input: usize,
    ) -> candle_core::Result<Self> {
        let (b, t, c3) = inputs.layout(0).shape().dims3()?;
        let mask = MaskIndex::of_input(inputs, mask_input, (b, n_head, t))?;
        Ok(Self {
            b,
            t,
            nh: n_head,
            hs: c3 / 3 / n_head,
            mask,
            packed: None,
        })
    }

    /// For `qkv` `(B, T, nh * hs * 3)` under a u8 mask `(B or 1, T, T)`, its rows for every
    /// head.
    pub(crate) fn masked(b: usize, t: usize, nh: usize, hs: usize, mask: &'a [u8]) -> Self {
        let mb = mask.len() / (t * t);
        assert!(mask.len() == mb * t * t && (mb == 1 || mb == b));
        Self {
            b,
            t,
            nh,
            hs,
            mask: Some((mask, MaskIndex::new((nh, t), mb, t))),
            packed: None,
        }
    }

    /// Only the first `len` rows of each sequence, packed one sequence after another
    /// (`(start row, len)` each): what a causal model computes when nothing reads a sequence's
    /// later rows, such as the padding after a classifier's last real token. Queries see keys
    /// up to their own sequence's `len` only; the mask and the dropout keep the `(B, T)`
    /// numbering, so each kept row is computed exactly as in the full layout.
    pub(crate) fn packed(mut self, runs: Vec<(usize, usize)>) -> Self {
        assert!(runs.len() == self.b && runs.iter().all(|&(_, len)| len <= self.t));
        self.packed = Some(runs);
        self
    }

    /// The row sequence `bi` starts at in `qkv` and the output.
    pub(crate) fn start(&self, bi: usize) -> usize {
        self.packed.as_ref().map_or(bi * self.t, |p| p[bi].0)
    }

    /// How many rows sequence `bi` has.
    fn len(&self, bi: usize) -> usize {
        self.packed.as_ref().map_or(self.t, |p| p[bi].1)
    }

    /// All sequences' rows: the output's and `qkv`'s.
    pub(crate) fn rows(&self) -> usize {
        self.packed
            .as_ref()
            .map_or(self.b * self.t, |p| p.iter().map(|r| r.1).sum())
    }

    pub(crate) fn c(&self) -> usize {
        self.nh * self.hs
    }

    pub(crate) fn c3(&self) -> usize {
        3 * self.c()
    }

    /// The mask row of query `i` of head `h`, batch row `bi`.
    pub(crate) fn mask_row(&self, bi: usize, h: usize, i: usize) -> Option<&'a [u8]> {
        self.mask.map(|(m, idx)| {
            let r = idx.row((bi * self.nh + h) * self.t + i);
            &m[r * self.t..(r + 1) * self.t]
        })
    }

    /// How many keys the rows `i0..i1` need: up to the last one any of them may see, or all of
    /// them when a row may see none (its softmax is uniform, as on the plain path; packed, over
    /// the sequence's rows - such a row is padding, which nothing kept reads).
    fn width(&self, bi: usize, h: usize, rows: Range<usize>) -> usize {
        let all = self.len(bi);
        rows.map(|i| match self.mask_row(bi, h, i) {
            None => all,
            Some(m) => m.iter().rposition(|&a| a != 0).map_or(all, |j| j + 1),
        })
        .max()
        .unwrap_or(all)
        .min(all)
    }

    /// The blocks of query rows of head `h` of batch row `bi`, each with the keys it needs.
    pub(crate) fn row_blocks(&self, bi: usize, h: usize) -> impl Iterator<Item = RowBlock> + '_ {
        let len = self.len(bi);
        (0..len).step_by(ATTENTION_ROW_BLOCK).map(move |i0| {
            let i1 = (i0 + ATTENTION_ROW_BLOCK).min(len);
            let width = self.width(bi, h, i0..i1);
            RowBlock {
                bi,
                h,
                i0,
                i1,
                width,
            }
        })
    }

    /// The attention probabilities of a block: its rows of `q k^T` into `scores`
    /// `(rows, width)`, then the scaled, masked softmax of each into row `r` of `probs`, whose
    /// rows are `stride` apart.
    pub(crate) fn block_probs(
        &self,
        qkv: &[f32],
        blk: &RowBlock,
        scale: f32,
        scores: &mut [f32],
        (probs, stride): (&mut [f32], usize),
    ) {
        let (rows, width) = (blk.rows(), blk.width);
        assert!(qkv.len() == self.rows() * self.c3() && scores.len() >= rows * width);
        // SAFETY: q rows i0..i1 and k rows 0..width of this head lie within `qkv` (checked
        // above, with `scores`' size).
        unsafe {
            let head = self.head(blk.bi, blk.h);
            head.scores(qkv, blk.i0, rows, width, scores.as_mut_ptr())
        };
        for (r, i) in blk.queries() {
            let m = self.mask_row(blk.bi, blk.h, i).map(|m| &m[..width]);
            let row = &mut probs[r * stride..r * stride + width];
            masked_softmax_row(row, &scores[blk.row(r)], m, scale);
        }
    }

    /// Offset of the dropout mask's element `(bi, h, i, 0)` in the `(B, nh, T, T)` numbering.
    pub(crate) fn mask_offset(&self, bi: usize, h: usize, i: usize) -> usize {
        ((bi * self.nh + h) * self.t + i) * self.t
    }

    /// Head `h` of batch row `bi`.
    pub(crate) fn head(&self, bi: usize, h: usize) -> Head {
        let base = self.start(bi) * self.c3();
        Head {
            q: base + h * self.hs,
            k: base + self.c() + h * self.hs,
            v: base + 2 * self.c() + h * self.hs,
            c3: self.c3(),
            hs: self.hs,
        }
    }
}

/// A block of query rows `i0..i1` of head `h` of batch row `bi`, and the keys `0..width` they
/// need.
#[derive(Clone, Copy)]
pub(crate) struct RowBlock {
    pub(crate) bi: usize,
    pub(crate) h: usize,
    pub(crate) i0: usize,
    pub(crate) i1: usize,
    pub(crate) width: usize,
}

impl RowBlock {
    pub(crate) fn rows(&self) -> usize {
        self.i1 - self.i0
    }

    /// Each query row's index in the block and in the sequence: `(r, i)`.
    pub(crate) fn queries(&self) -> impl Iterator<Item = (usize, usize)> {
        (self.i0..self.i1).enumerate()
    }

    /// Row `r` of a `(rows, width)` scratch block.
    pub(crate) fn row(&self, r: usize) -> Range<usize> {
        r * self.width..(r + 1) * self.width
    }
}

/// Where one head's queries, keys and values start in the `(B, T, 3C)` output of `c_attn`
/// (row `i` of each is `3C` further on), and the two products every attention pass makes.
#[derive(Clone, Copy)]
pub(crate) struct Head {
    pub(crate) q: usize,
    pub(crate) k: usize,
    pub(crate) v: usize,
    c3: usize,
    hs: usize,
}

impl Head {
    /// `scores` `(rows, width)` = `q[i0..i0 + rows] k[..width]^T`.
    ///
    /// # Safety
    /// The head, its rows and `scores` must be within `qkv` and `scores`'s bounds.
    pub(crate) unsafe fn scores(
        &self,
        qkv: &[f32],
        i0: usize,
        rows: usize,
        width: usize,
        scores: *mut f32,
    ) {
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
    pub(crate) unsafe fn times_v(
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
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the attention kernels' tasks write disjoint (row, head) slices.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer, through a method so that closures capture the whole (Sync) wrapper.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
