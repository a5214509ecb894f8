//! Which rows of the `(B, T)` layout a written-out pass computes (`pass.rs`), and the
//! row-wise steps between its products: residual adds through dropout, gathers and scatters.

use rayon::prelude::*;

use crate::kernels::{Mask, ELEMENTWISE_CHUNK};

/// `len` rows of a buffer from row `at` on, which are rows `origin..origin + len` of the
/// `(B, T)` layout: that numbering picks each row's position, token and dropout mask.
#[derive(Clone, Copy)]
pub(super) struct Run {
    pub(super) at: usize,
    pub(super) origin: usize,
    pub(super) len: usize,
}

/// Each row's row in the `(B, T)` layout, in buffer order.
pub(super) fn origins(runs: &[Run]) -> impl Iterator<Item = usize> + '_ {
    runs.iter().flat_map(|r| r.origin..r.origin + r.len)
}

/// A classifier's rows: each sequence's up to the position its logits are read at, packed
/// one sequence after another, and those positions - as indices into the packed rows and as
/// runs of one row each. A position that may see no key under `mask` (`(B or 1, T, T)`)
/// averages every value, later ones too (as on the plain path): its sequence is kept whole.
pub(super) fn classifier_rows(
    positions: &[usize],
    mask: &[u8],
    t: usize,
) -> (Vec<Run>, (Vec<usize>, Vec<Run>)) {
    let mb = mask.len() / (t * t);
    let sees_nothing = |row: usize, pos: usize| {
        let at = (if mb == 1 { 0 } else { row } * t + pos) * t;
        mask[at..at + t].iter().all(|&m| m == 0)
    };
    let mut at = 0;
    let live: Vec<Run> = (positions.iter().enumerate())
        .map(|(row, &pos)| {
            let len = if sees_nothing(row, pos) { t } else { pos + 1 };
            at += len;
            Run {
                at: at - len,
                origin: row * t,
                len,
            }
        })
        .collect();
    let read = (live.iter().zip(positions)).map(|(r, &pos)| (r.at + pos, r.origin + pos));
    let rows = read.clone().map(|(at, _)| at).collect();
    let runs = (read.enumerate())
        .map(|(i, (_, origin))| Run {
            at: i,
            origin,
            len: 1,
        })
        .collect();
    (live, (rows, runs))
}

/// `y = x + dropout(y)`: a branch's output `y` put through its dropout and added to the
/// residual stream `x`, in place; `y` holds the rows `runs`.
pub(super) fn residual_add(y: &mut [f32], x: &[f32], mask: Option<Mask>, runs: &[Run]) {
    if let Some(m) = mask {
        masked(y, m, runs);
    }
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y += x));
}

/// The gradient of a branch's output before its dropout, from the residual stream's gradient.
pub(super) fn dropped_grad(dout: &mut [f32], dres: &[f32], mask: Option<Mask>, runs: &[Run]) {
    dout.copy_from_slice(dres);
    if let Some(m) = mask {
        masked(dout, m, runs);
    }
}

/// `y *= mask` for `y` holding the rows `runs` (each `y.len() / rows` wide): each row times
/// the mask's elements of the `(B, T)` row it is, block by block on every core.
pub(super) fn masked(y: &mut [f32], mask: Mask, runs: &[Run]) {
    if let [r] = runs {
        if r.at == 0 && r.origin == 0 {
            return mask.apply_in_place(y); // the whole tensor
        }
    }
    let rows: usize = runs.iter().map(|r| r.len).sum();
    let c = y.len() / rows.max(1);
    let mut blocks = Vec::new();
    let mut rest = y;
    for r in runs {
        let (run, tail) = std::mem::take(&mut rest).split_at_mut(r.len * c);
        rest = tail;
        for (i, block) in run.chunks_mut(ELEMENTWISE_CHUNK).enumerate() {
            blocks.push((r.origin * c + i * ELEMENTWISE_CHUNK, block));
        }
    }
    blocks
        .into_par_iter()
        .for_each(|(start, block)| mask.apply_at(start, block));
}

/// `dst` = rows `rows` of `src` (rows `c` wide), in order.
pub(super) fn gather(dst: &mut Vec<f32>, src: &[f32], rows: &[usize], c: usize) {
    dst.clear();
    for &r in rows {
        dst.extend_from_slice(&src[r * c..(r + 1) * c]);
    }
}

/// `dst` `(N, C)` = zeros except rows `rows`, which are `src`'s rows in order.
pub(super) fn scatter(dst: &mut [f32], src: &[f32], rows: &[usize], c: usize) {
    dst.fill(0.0);
    for (s, &r) in src.chunks_exact(c).zip(rows) {
        dst[r * c..(r + 1) * c].copy_from_slice(s);
    }
}

/// Element `i` of `v` to read and element `j` to write (`i != j`).
pub(super) fn pair(v: &mut [Vec<f32>], i: usize, j: usize) -> (&Vec<f32>, &mut Vec<f32>) {
    assert_ne!(i, j);
    if i < j {
        let (a, b) = v.split_at_mut(j);
        (&a[i], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&b[0], &mut a[j])
    }
}

/// Two different elements of `v`, both mutable.
pub(super) fn two_mut(v: &mut [Vec<f32>], i: usize, j: usize) -> (&mut [f32], &mut [f32]) {
    assert_ne!(i, j);
    if i < j {
        let (a, b) = v.split_at_mut(j);
        (&mut a[i], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&mut b[0], &mut a[j])
    }
}
