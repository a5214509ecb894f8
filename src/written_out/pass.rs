//! The written-out pass itself (see `mod.rs`): the forward pass into buffers kept from
//! micro-step to micro-step, and the backward pass layer by layer into the gradient sums.

use rayon::prelude::*;

use super::buffers::{sized, sized_all, Buffers, GradSums};
use super::params::*;
use super::rows::{
    classifier_rows, dropped_grad, gather, masked, origins, pair, residual_add, scatter, two_mut,
    Run,
};
use crate::kernels::{
    classify_cross_entropy, cross_entropy_row, gelu_grad_into, gelu_into, layer_norm_backward,
    layer_norm_into, linear_backward, linear_into, tied_head_backward, tied_head_into,
    AttentionGeometry, AttentionWithGrad, Mask, Matrix, Products,
};
use crate::{Gpt2Config, Result};

/// What the hidden states are scored by.
pub(super) enum Head {
    /// The tied LM head, each position against the next token (`GPT2LMHeadModel`).
    NextToken,
    /// `score` `(N, C)` at each row's last real token, against the row's class
    /// (`GPT2ForSequenceClassification`); class -100 is ignored.
    Classify {
        positions: Vec<usize>,
        labels: Vec<Option<usize>>,
        classes: usize,
    },
}

/// The dropout masks of one forward pass, drawn in the order the model's layers draw them.
struct Masks {
    embd: Option<Mask>,
    /// Per block: attention probabilities, attention output, MLP output.
    blocks: Vec<[Option<Mask>; 3]>,
}

impl Masks {
    fn draw(draw: &dyn Fn(f32) -> Option<Mask>, cfg: &Gpt2Config) -> Self {
        let embd = draw(cfg.embd_pdrop);
        let blocks = (0..cfg.n_layer)
            .map(|_| {
                let attn = draw(cfg.attn_pdrop);
                let resid = draw(cfg.resid_pdrop);
                [attn, resid, draw(cfg.resid_pdrop)]
            })
            .collect();
        Self { embd, blocks }
    }
}

/// A micro-step's settings beyond the input.
pub struct MicroStep<'a, F> {
    /// What the loss is multiplied by before its gradients are added to the sums.
    pub loss_weight: f32,
    /// The mask of a dropout layer of this probability (`None`: no dropout), called in the
    /// order the model's layers draw theirs.
    pub draw: &'a dyn Fn(f32) -> Option<Mask>,
    /// Called with the loss after the forward pass: whether to go on to the backward pass.
    pub proceed: F,
}

/// One micro-step's fixed inputs.
pub(super) struct Pass<'a> {
    cfg: &'a Gpt2Config,
    p: &'a [Matrix<'a>],
    index: &'a ParamIndex,
    /// bf16 products where the matrices are bf16, f32 ones otherwise.
    products: Products,
    ids: &'a [u32],
    b: usize,
    t: usize,
    geometry: AttentionGeometry<'a>,
    head: Head,
    /// The rows of the `(B, T)` layout the pass computes, packed in order (see [`Run`]): all
    /// of them for the LM head, which reads every position; for a classifier, each sequence's
    /// rows up to its last real token. Attention is causal, so nothing the loss reads depends
    /// on the rows after it - the padding - and their gradients are zero: computing them, as
    /// transformers does, changes nothing but the time taken.
    live: Vec<Run>,
    /// The rows the loss reads from the last block's output (`None`: all live rows), as
    /// indices into the live rows and as runs of one row each. A classifier reads one row per
    /// sequence, so after the last block's attention - which needs every row's keys and
    /// values - only those rows go on, through the projection, the MLP and `ln_f`, forward
    /// and backward: the other rows' results there are never used, and their gradients are
    /// zero.
    kept: Option<(Vec<usize>, Vec<Run>)>,
}

impl<'a> Pass<'a> {
    pub(super) fn new(
        cfg: &'a Gpt2Config,
        p: &'a [Matrix<'a>],
        index: &'a ParamIndex,
        ids: &'a [u32],
        (b, t): (usize, usize),
        mask: &'a [u8],
        head: Head,
    ) -> Self {
        let geometry = AttentionGeometry::masked(b, t, cfg.n_head, cfg.head_dim(), mask);
        let (live, geometry, kept) = match &head {
            Head::NextToken => {
                let all = Run {
                    at: 0,
                    origin: 0,
                    len: b * t,
                };
                (vec![all], geometry, None)
            }
            Head::Classify { positions, .. } => {
                let (live, kept) = classifier_rows(positions, mask, t);
                let geometry = geometry.packed(live.iter().map(|r| (r.at, r.len)).collect());
                (live, geometry, Some(kept))
            }
        };
        let bf16 = p.iter().any(|m| matches!(m, Matrix::Bf16(_)));
        let products = if bf16 { Products::Bf16 } else { Products::F32 };
        Self {
            cfg,
            p,
            index,
            products,
            ids,
            b,
            t,
            geometry,
            head,
            live,
            kept,
        }
    }

    /// The live rows block `l` computes after its attention, if not all.
    fn kept_in(&self, l: usize) -> Option<&[usize]> {
        let last = l + 1 == self.cfg.n_layer;
        self.kept.as_ref().filter(|_| last).map(|k| &k.0[..])
    }

    /// The rows block `l` computes after its attention, as runs for its dropout masks.
    fn runs_after(&self, l: usize) -> &[Run] {
        match &self.kept {
            Some((_, runs)) if l + 1 == self.cfg.n_layer => runs,
            _ => &self.live,
        }
    }

    /// A parameter the pass reads element by element: f32 always (the caller widens a bf16
    /// model's vectors and small matrices; see `mod.rs`).
    fn vector(&self, p: usize) -> &[f32] {
        match self.p[p] {
            Matrix::F32(v) => v,
            Matrix::Bf16(_) => unreachable!("parameter {p} is read element by element"),
        }
    }

    fn outer(&self, i: usize) -> &[f32] {
        self.vector(self.index.outer(i))
    }

    fn layer(&self, l: usize, i: usize) -> &[f32] {
        self.vector(self.index.layer(l, i))
    }

    /// A weight only products read (and, for `wte`, the embedding's row lookups).
    fn matrix(&self, p: usize) -> Matrix<'_> {
        self.p[p]
    }

    /// The attention of a block whose probabilities drop `mask`.
    fn attention(&self, mask: Option<Mask>) -> AttentionWithGrad {
        let scale = if self.cfg.scale_attn_weights {
            1.0 / (self.cfg.head_dim() as f64).sqrt()
        } else {
            1.0
        };
        AttentionWithGrad {
            n_head: self.cfg.n_head,
            scale: scale as f32,
            dropout: mask,
        }
    }

    /// A classifier's logits `(B, classes)`, dropout off, and nothing kept for a backward pass
    /// (one block's activations at a time): an evaluation's forward pass.
    pub(super) fn class_logits(&self) -> Vec<f32> {
        let masks = Masks::draw(&|_| None, self.cfg);
        let mut buf = Buffers::default();
        self.forward(&mut buf, &masks, &|m| self.attention(m), false);
        buf.logits
    }

    pub(super) fn run(
        &self,
        sums: &mut GradSums,
        micro: MicroStep<impl FnOnce(f32) -> Result<bool>>,
    ) -> Result<f32> {
        let masks = Masks::draw(micro.draw, self.cfg);
        let attention = |mask: Option<Mask>| self.attention(mask);
        let loss = self.forward(&mut sums.buffers, &masks, &attention, true);
        if !(micro.proceed)(loss)? {
            return Ok(loss);
        }
        if sums.sums.is_empty() {
            sums.sums = self.p.iter().map(|p| vec![0f32; p.len()]).collect();
        }
        let buffers = &mut sums.buffers;
        self.backward(
            buffers,
            &mut sums.sums,
            micro.loss_weight,
            &masks,
            &attention,
        );
        Ok(loss)
    }

    /// `(C, layers, V, N = the live rows, inner C, layer-norm eps)`.
    fn dims(&self) -> (usize, usize, usize, usize, usize, f32) {
        let cfg = self.cfg;
        let eps = cfg.layer_norm_epsilon as f32;
        let (c, l_n, v) = (cfg.n_embd, cfg.n_layer, cfg.vocab_size);
        let n = self.live.iter().map(|r| r.len).sum();
        (c, l_n, v, n, cfg.inner_dim(), eps)
    }

    /// The forward pass into `buf`; returns the loss. With `keep`, every block's activations
    /// stay for the backward pass; without, the blocks take turns in one set of buffers, and
    /// a classifier's logits are left in `buf.logits`, no loss taken (0 returned).
    fn forward(
        &self,
        buf: &mut Buffers,
        masks: &Masks,
        attention: &dyn Fn(Option<Mask>) -> AttentionWithGrad,
        keep: bool,
    ) -> f32 {
        let (c, l_n, v, n, c4, eps) = self.dims();
        // Block l's buffers, and the residual stream's into and out of it.
        let slot = |l: usize| if keep { l } else { 0 };
        let stream = |l: usize| if keep { l } else { l % 2 };
        let blocks = slot(l_n - 1) + 1;
        sized_all(&mut buf.xs, stream(l_n).max(blocks) + 1, n * c);
        for vs in [&mut buf.ln_1, &mut buf.att, &mut buf.mid, &mut buf.ln_2] {
            sized_all(vs, blocks, n * c);
        }
        sized_all(&mut buf.qkv, blocks, n * 3 * c);
        sized_all(&mut buf.fc, blocks, n * c4);
        sized_all(&mut buf.gelu, blocks, n * c4);

        // Token and position embeddings, then the embedding dropout.
        let (wte, wpe) = (self.matrix(self.index.outer(WTE)), self.outer(WPE));
        for (x, r) in buf.xs[0].chunks_exact_mut(c).zip(origins(&self.live)) {
            let (tok, pos) = (self.ids[r] as usize, r % self.t);
            x.fill(0.0);
            wte.add_row(x, tok);
            for (x, p) in x.iter_mut().zip(&wpe[pos * c..][..c]) {
                *x += p;
            }
        }
        if let Some(m) = masks.embd {
            masked(&mut buf.xs[0], m, &self.live);
        }

        for l in 0..l_n {
            let w = |i| self.layer(l, i);
            let m_w = |i| self.matrix(self.index.layer(l, i));
            let [attn_drop, attn_resid, mlp_resid] = masks.blocks[l];
            let (x, out) = pair(&mut buf.xs, stream(l), stream(l + 1));
            let s = slot(l);
            layer_norm_into(&mut buf.ln_1[s], x, w(LN_1_W), w(LN_1_B), eps);
            linear_into(
                &mut buf.qkv[s],
                &buf.ln_1[s],
                m_w(C_ATTN_W),
                w(C_ATTN_B),
                (n, c, 3 * c),
                self.products,
            );
            buf.att[s] = attention(attn_drop).forward(&buf.qkv[s], &self.geometry);
            let (kept, runs) = (self.kept_in(l), self.runs_after(l));
            let (att, x, m) = match kept {
                None => (&buf.att[s], x, n),
                Some(rows) => {
                    gather(&mut buf.att_kept, &buf.att[s], rows, c);
                    gather(&mut buf.x_kept, x, rows, c);
                    for v in [&mut buf.mid[s], &mut buf.ln_2[s], &mut *out] {
                        sized(v, rows.len() * c);
                    }
                    for v in [&mut buf.fc[s], &mut buf.gelu[s]] {
                        sized(v, rows.len() * c4);
                    }
                    (&buf.att_kept, &buf.x_kept, rows.len())
                }
            };
            // mid = x + dropout(att @ W + b), the projection made in `mid` first.
            let mid = &mut buf.mid[s];
            let proj = m_w(ATTN_PROJ_W);
            linear_into(mid, att, proj, w(ATTN_PROJ_B), (m, c, c), self.products);
            residual_add(mid, x, attn_resid, runs);
            layer_norm_into(&mut buf.ln_2[s], mid, w(LN_2_W), w(LN_2_B), eps);
            linear_into(
                &mut buf.fc[s],
                &buf.ln_2[s],
                m_w(C_FC_W),
                w(C_FC_B),
                (m, c, c4),
                self.products,
            );
            gelu_into(&mut buf.gelu[s], &buf.fc[s]);
            let (proj, gelu) = (m_w(MLP_PROJ_W), &buf.gelu[s]);
            linear_into(out, gelu, proj, w(MLP_PROJ_B), (m, c4, c), self.products);
            residual_add(out, mid, mlp_resid, runs);
        }
        let n = self.kept.as_ref().map_or(n, |k| k.0.len()); // the rows ln_f and the head read

        let ln_f = sized(&mut buf.ln_f, n * c);
        layer_norm_into(
            ln_f,
            &buf.xs[stream(l_n)],
            self.outer(LN_F_W),
            self.outer(LN_F_B),
            eps,
        );
        match &self.head {
            Head::NextToken => {
                let logits = sized(&mut buf.logits, n * v);
                tied_head_into(logits, ln_f, wte, (n, c, v), self.products);
                self.cross_entropy(logits)
            }
            Head::Classify {
                labels, classes, ..
            } => {
                let score = self.vector(self.index.head(l_n));
                let logits = sized(&mut buf.logits, self.b * classes);
                for (row, z) in logits.chunks_exact_mut(*classes).enumerate() {
                    let h = &ln_f[row * c..][..c]; // the kept rows, one per sequence
                    for (z, w) in z.iter_mut().zip(score.chunks_exact(c)) {
                        *z = h.iter().zip(w).map(|(h, w)| h * w).sum();
                    }
                }
                if !keep {
                    return 0.0; // an evaluation: the logits themselves are wanted
                }
                classify_cross_entropy(logits, labels, *classes)
            }
        }
    }

    /// The mean cross-entropy of each position's logits against the next token, summed in
    /// row order in f64 as the loss kernel sums it; the logits become their gradient (zero for each
    /// row's last position, which predicts nothing).
    fn cross_entropy(&self, logits: &mut [f32]) -> f32 {
        let v = self.cfg.vocab_size;
        let counted = (self.b * (self.t - 1)) as f32;
        let w = 1.0 / counted;
        let losses: Vec<f64> = logits
            .par_chunks_mut(v)
            .enumerate()
            .map(|(r, e)| {
                if r % self.t == self.t - 1 {
                    e.fill(0.0);
                    return 0.0;
                }
                cross_entropy_row(e, None, self.ids[r + 1] as usize, w)
            })
            .collect();
        losses.iter().sum::<f64>() as f32
    }

    /// The backward pass from the forward pass's `buf`, into `sums` (in the caller's order).
    fn backward(
        &self,
        buf: &mut Buffers,
        sums: &mut [Vec<f32>],
        loss_weight: f32,
        masks: &Masks,
        attention: &dyn Fn(Option<Mask>) -> AttentionWithGrad,
    ) {
        let (c, l_n, v, n, c4, eps) = self.dims();
        let Buffers {
            xs,
            ln_1,
            qkv,
            att,
            mid,
            ln_2,
            fc,
            gelu,
            ln_f,
            logits: dlogits,
            dres,
            dout,
            din,
            dgelu,
            dfc,
            att_kept,
            datt_kept,
            ..
        } = buf;
        for d in [&mut *dres, &mut *dout, &mut *din] {
            sized(d, n * c);
        }
        sized(dgelu, n * c4);
        sized(dfc, n * c4);

        // The loss's weight, as the graph's backward pass scales the logits' gradient.
        if loss_weight != 1.0 {
            dlogits.par_iter_mut().for_each(|d| *d *= loss_weight);
        }
        // Rows after the last block: all, or the kept ones.
        let top = self.kept.as_ref().map_or(n, |k| k.0.len());
        let (wte_i, wpe_i) = (self.index.outer(WTE), self.index.outer(WPE));
        match &self.head {
            Head::NextToken => tied_head_backward(
                (din, &mut sums[wte_i]),
                ln_f,
                self.matrix(wte_i),
                dlogits,
                (n, c, v),
                self.products,
            ),
            Head::Classify { classes, .. } => {
                // dh = dz @ score and dscore += dz^T h, at the kept rows (one per sequence).
                let score_i = self.index.head(l_n);
                let score = self.vector(score_i);
                let dscore = &mut sums[score_i];
                let rows = dlogits.chunks_exact(*classes).zip(ln_f.chunks_exact(c));
                for ((dz, h), dh) in rows.zip(din.chunks_exact_mut(c)) {
                    dh.fill(0.0);
                    let per_class = score.chunks_exact(c).zip(dscore.chunks_exact_mut(c));
                    for (&dz, (w, ds)) in dz.iter().zip(per_class) {
                        for ((dh, ds), (&h, &w)) in dh.iter_mut().zip(ds).zip(h.iter().zip(w)) {
                            *dh += dz * w;
                            *ds += dz * h;
                        }
                    }
                }
            }
        }
        dres.fill(0.0);
        let (lnf_w, lnf_b) = (self.index.outer(LN_F_W), self.index.outer(LN_F_B));
        let (dw, db) = two_mut(sums, lnf_w, lnf_b);
        let (dr, g) = (&mut dres[..top * c], &din[..top * c]);
        layer_norm_backward((dr, dw, db), &xs[l_n], g, self.outer(LN_F_W), eps);

        for l in (0..l_n).rev() {
            let w = |i| self.layer(l, i);
            let m_w = |i| self.matrix(self.index.layer(l, i));
            let s = |i| self.index.layer(l, i);
            let products = self.products;
            let [attn_drop, attn_resid, mlp_resid] = masks.blocks[l];
            let (kept, runs) = (self.kept_in(l), self.runs_after(l));
            let m = kept.map_or(n, <[usize]>::len); // the rows after the attention
            let (mc, mc4) = (m * c, m * c4);
            // out = mid + dropout(gelu @ W + b)
            dropped_grad(&mut dout[..mc], &dres[..mc], mlp_resid, runs);
            let (dw, db) = two_mut(sums, s(MLP_PROJ_W), s(MLP_PROJ_B));
            let dg = &mut dgelu[..mc4];
            linear_backward(
                (dg, dw, db),
                &gelu[l],
                m_w(MLP_PROJ_W),
                &dout[..mc],
                (m, c4, c),
                products,
            );
            gelu_grad_into(&mut dfc[..mc4], &fc[l], &dgelu[..mc4]);
            let (dw, db) = two_mut(sums, s(C_FC_W), s(C_FC_B));
            let di = &mut din[..mc];
            let dfc = &dfc[..mc4];
            linear_backward(
                (di, dw, db),
                &ln_2[l],
                m_w(C_FC_W),
                dfc,
                (m, c, c4),
                products,
            );
            let (dw, db) = two_mut(sums, s(LN_2_W), s(LN_2_B));
            let (dr, g) = (&mut dres[..mc], &din[..mc]);
            layer_norm_backward((dr, dw, db), &mid[l], g, w(LN_2_W), eps);
            // mid = x + dropout(att @ W + b)
            dropped_grad(&mut dout[..mc], &dres[..mc], attn_resid, runs);
            let (dw, db) = two_mut(sums, s(ATTN_PROJ_W), s(ATTN_PROJ_B));
            if let Some(rows) = kept {
                // The projection's input gradient at the kept rows, then every row of it
                // (zero elsewhere) for the attention; likewise the residual stream's.
                let da = sized(datt_kept, mc);
                linear_backward(
                    (da, dw, db),
                    att_kept,
                    m_w(ATTN_PROJ_W),
                    &dout[..mc],
                    (m, c, c),
                    products,
                );
                scatter(din, da, rows, c);
                da.copy_from_slice(&dres[..mc]);
                scatter(dres, da, rows, c);
            } else {
                let proj = m_w(ATTN_PROJ_W);
                linear_backward((din, dw, db), &att[l], proj, dout, (n, c, c), products);
            }
            let dqkv = attention(attn_drop).backward(&qkv[l], din, &self.geometry);
            let (dw, db) = two_mut(sums, s(C_ATTN_W), s(C_ATTN_B));
            let c_attn = m_w(C_ATTN_W);
            linear_backward(
                (din, dw, db),
                &ln_1[l],
                c_attn,
                &dqkv,
                (n, c, 3 * c),
                products,
            );
            let (dw, db) = two_mut(sums, s(LN_1_W), s(LN_1_B));
            layer_norm_backward((dres, dw, db), &xs[l], din, w(LN_1_W), eps);
        }

        // Through the embedding dropout into the rows of wte and wpe that were looked up.
        if let Some(m) = masks.embd {
            masked(dres, m, &self.live);
        }
        let (dwte, dwpe) = two_mut(sums, wte_i, wpe_i);
        for (d, r) in dres.chunks_exact(c).zip(origins(&self.live)) {
            let (tok, pos) = (self.ids[r] as usize, r % self.t);
            for (s, d) in dwte[tok * c..][..c].iter_mut().zip(d) {
                *s += d;
            }
            for (s, d) in dwpe[pos * c..][..c].iter_mut().zip(d) {
                *s += d;
            }
        }
    }
}
