//! GPT-2's training pass written out by hand, llm.c's way: a second GPT-2 beside
//! [`crate::model`], forward *and* backward, over plain buffers. [`crate::model`] is the
//! reference - the model the book reads, which candle's graph differentiates; this is the code
//! that trains on the CPU: `TrainStep::accumulate` takes it first, for f32 and pure-bf16
//! weights on the CPU, and falls back to the graph everywhere else (half precision on the
//! GPU, mixed precision, f16). `tests/lm_step.rs` holds the two equal.
//!
//! The forward pass keeps what the backward pass needs; the backward pass goes layer by layer,
//! each weight's gradient added straight into the sum being accumulated. The same kernels as
//! the model's graph ([`crate::kernels`]), in the same order on the same numbers: the loss is
//! the graph's to the bit, and the gradients agree with its to float rounding (they are summed
//! in another order). What is left out is candle's bookkeeping around the kernels: in its
//! backward pass every tensor's gradient starts as a new buffer of zeros that the gradient is
//! then added to, each weight's gradient is a new buffer added again to the micro-steps' sum,
//! and the layer norms' and residual adds' gradients are a few tensor operations each. Here the
//! activations' gradients are written into a handful of buffers reused from layer to layer, the
//! residual stream's gradient is added to in place, and the weights' gradients go into the sums
//! by gemm's own accumulation.
//!
//! It applies to an f32 GPT-2 on the CPU with the tanh GELU (every GPT-2 checkpoint) - and to a
//! pure-bf16 one: its products then multiply the bf16 weights and the activations rounded to
//! bf16 with f32 sums (in AMX tiles where the CPU has them, elsewhere gemm's f32 products on
//! those values widened), everything between them in f32 - for the language-modelling loss
//! (chapter 6) and the sequence classifier's (chapter 7's `Trainer`), [`micro_step`] with a
//! [`Batch`] of either, and for a classifier's evaluation ([`classifier_logits`]); they say
//! `None` to anything else.
//!
//! - `mod.rs`: the entry points and their checks;
//! - `params.rs`: where each parameter is, by checkpoint name, and how the pass reads it;
//! - `pass.rs`: the forward and backward passes;
//! - `rows.rs`: the rows they compute (a classifier's, not the padding after each row's last
//!   real token);
//! - `buffers.rs`: the gradient sums and the activations kept from micro-step to micro-step.

use std::borrow::Cow;

use candle_core::{DType, Tensor};

mod buffers;
mod params;
mod pass;
mod rows;

pub use buffers::GradSums;
pub use pass::MicroStep;

use crate::{Error, Gpt2Config, Result};
use params::{with_params, ParamIndex};
use pass::{Head, Pass};

/// Token ids on the host: `b` rows of `t` tokens each, one row after another - what the
/// jokes loop's packer makes, read by the pass as they are.
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    pub ids: &'a [u32],
    pub b: usize,
    pub t: usize,
}

impl<'a> Tokens<'a> {
    /// One sequence: a batch of one row.
    pub fn one(ids: &'a [u32]) -> Self {
        Self {
            ids,
            b: 1,
            t: ids.len(),
        }
    }
}

/// The GPT-2 a pass runs: its config, and its parameters with their checkpoint names (in any
/// order; the gradient sums follow this order).
#[derive(Clone, Copy)]
pub struct Gpt2Params<'a> {
    pub cfg: &'a Gpt2Config,
    pub names: &'a [&'a str],
    pub params: &'a [Tensor],
}

/// A classifier's batch: ids `(B, T)`, the attention mask `(B, T)` (1 = token, 0 = padding) if
/// any, the position each row's logits are read at (its last real token), and each row's
/// class (`None`: ignored, transformers' -100).
pub struct LabelledBatch<'a> {
    pub ids: &'a Tensor,
    pub attention_mask: Option<&'a Tensor>,
    pub positions: Vec<usize>,
    pub labels: Vec<Option<usize>>,
}

/// What a micro-step learns from: token ids predicting themselves, shifted by one
/// (`GPT2LMHeadModel`, chapter 6), or a classifier's batch (`GPT2ForSequenceClassification`,
/// chapter 7's `Trainer`).
pub enum Batch<'a> {
    Lm(Tokens<'a>),
    Labelled(LabelledBatch<'a>),
}

/// One micro-step: the forward pass, then `micro.proceed(loss)`, which says whether to go on
/// (an error stops everything with nothing added), then the backward pass with the gradients of
/// `loss * micro.loss_weight` added into `sums`. The loss is the language-modelling loss of the
/// tokens, or the mean cross-entropy of the `score` head's logits at each row's position
/// against the row's class, over the rows not ignored. Returns the loss, or `None`, with
/// nothing drawn or computed, where this does not apply: parameters not all f32 or bf16 on the
/// CPU, other parameters than GPT-2's (and the head's), or an activation other than the tanh
/// GELU.
pub fn micro_step(
    model: Gpt2Params,
    batch: Batch,
    micro: MicroStep<impl FnOnce(f32) -> Result<bool>>,
    sums: &mut GradSums,
) -> Result<Option<f32>> {
    let input = match batch {
        Batch::Lm(tokens) => PassInput::lm(model, tokens)?,
        Batch::Labelled(b) => {
            PassInput::classifier(model, b.ids, b.attention_mask, b.positions, Some(b.labels))?
        }
    };
    input
        .and_then(|input| input.run(model, |pass| pass.run(sums, micro)))
        .transpose()
}

/// A classifier's logits `(B, classes)` at each row's position (its last real token), dropout
/// off, by the written-out forward pass: only each row's tokens up to that position are
/// computed, which under causal attention are all the logits depend on (transformers
/// computes the padding after them too). `None` where the pass does not apply.
pub fn classifier_logits(
    model: Gpt2Params,
    ids: &Tensor,
    attention_mask: Option<&Tensor>,
    positions: Vec<usize>,
) -> Result<Option<Vec<f32>>> {
    let input = PassInput::classifier(model, ids, attention_mask, positions, None)?;
    Ok(input.and_then(|input| input.run(model, |pass| pass.class_logits())))
}

/// A batch read and checked for the pass.
struct PassInput<'a> {
    index: ParamIndex,
    ids: Cow<'a, [u32]>,
    b: usize,
    t: usize,
    /// The model's mask `(B or 1, T, T)`: causal, and no query sees a padding key.
    mask: Vec<u8>,
    head: Head,
}

impl<'a> PassInput<'a> {
    /// Token ids for the language-modelling loss; `None` where the pass does not apply.
    fn lm(model: Gpt2Params, tokens: Tokens<'a>) -> Result<Option<Self>> {
        let Gpt2Params { cfg, names, params } = model;
        let Some(index) = applies(cfg, names, params, &[]) else {
            return Ok(None);
        };
        let Tokens { ids, b, t } = tokens;
        if ids.len() != b * t {
            return Err(Error::InvalidArgument(format!(
                "{} token ids do not make {b} rows of {t}",
                ids.len()
            )));
        }
        if t < 2 {
            return Err(Error::InvalidArgument(format!(
                "a sequence of {t} token has no next token to predict: the loss needs at least 2"
            )));
        }
        check_ids(cfg, ids, t)?;
        Ok(Some(Self {
            index,
            ids: Cow::Borrowed(ids),
            b,
            t,
            mask: causal_mask(t),
            head: Head::NextToken,
        }))
    }

    /// A classifier's batch, with its labels for a loss (checked) or none for an evaluation;
    /// `None` where the pass does not apply.
    fn classifier(
        model: Gpt2Params,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        positions: Vec<usize>,
        labels: Option<Vec<Option<usize>>>,
    ) -> Result<Option<Self>> {
        let Gpt2Params { cfg, names, params } = model;
        let on_cpu = ids.device().is_cpu();
        let Some(index) = applies(cfg, names, params, &["score.weight"]).filter(|_| on_cpu) else {
            return Ok(None);
        };
        let (b, t) = ids.dims2()?;
        let (classes, c) = params[index.head(cfg.n_layer)].dims2()?;
        if c != cfg.n_embd || classes < 2 {
            return Ok(None); // no classes, or regression: the graph's errors say which
        }
        let ids_v: Vec<u32> = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
        check_ids(cfg, &ids_v, t)?;
        if positions.len() != b || positions.iter().any(|&p| p >= t) {
            return Err(Error::InvalidArgument(format!(
                "a batch of {b} rows of {t} tokens needs {b} positions below {t}"
            )));
        }
        if let Some(labels) = &labels {
            check_labels(labels, b, classes)?;
        }
        let mask: Vec<u8> = match attention_mask {
            None => causal_mask(t),
            Some(am) => {
                if am.dims() != [b, t] {
                    return Err(Error::InvalidArgument(format!(
                        "attention_mask has shape {:?} but the input needs [{b}, {t}] (batch, tokens)",
                        am.dims()
                    )));
                }
                let am: Vec<u32> = am.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
                (0..b * t * t)
                    .map(|e| {
                        let (row, i, j) = (e / (t * t), e / t % t, e % t);
                        u8::from(j <= i && am[row * t + j] != 0)
                    })
                    .collect()
            }
        };
        let head = Head::Classify {
            positions,
            labels: labels.unwrap_or_else(|| vec![None; b]),
            classes,
        };
        Ok(Some(Self {
            index,
            ids: Cow::Owned(ids_v),
            b,
            t,
            mask,
            head,
        }))
    }

    /// `f` of the pass over this input and the parameters as the pass reads them; `None`
    /// where a parameter is not contiguous on the CPU.
    fn run<R>(self, model: Gpt2Params, f: impl FnOnce(Pass) -> R) -> Option<R> {
        let Self {
            index,
            ids,
            b,
            t,
            mask,
            head,
        } = self;
        let cfg = model.cfg;
        with_params(model.params, &index, cfg.n_layer, |p| {
            f(Pass::new(cfg, p, &index, &ids, (b, t), &mask, head))
        })
    }
}

/// A classifier's labels: one per row, not all ignored, each a class.
fn check_labels(labels: &[Option<usize>], b: usize, classes: usize) -> Result<()> {
    if labels.len() != b {
        return Err(Error::InvalidArgument(format!(
            "a batch of {b} rows needs {b} labels, found {}",
            labels.len()
        )));
    }
    if labels.iter().all(Option::is_none) {
        return Err(Error::InvalidArgument(
            "every label is -100 (ignored): there is nothing to compute a loss over".into(),
        ));
    }
    if let Some(bad) = labels.iter().flatten().find(|&&l| l >= classes) {
        return Err(Error::InvalidArgument(format!(
            "labels must be in [0, {classes}) or -100, found {bad}"
        )));
    }
    Ok(())
}

/// The parameters' index, where the written-out pass applies to this model and input.
fn applies(
    cfg: &Gpt2Config,
    names: &[&str],
    params: &[Tensor],
    head: &[&str],
) -> Option<ParamIndex> {
    let tanh_gelu = !matches!(cfg.activation_function.as_str(), "gelu" | "relu");
    // f32, or bf16 (its products in AMX tiles where the CPU has them, or widened to f32).
    let dtype = params.first().map(Tensor::dtype);
    let fits = matches!(dtype, Some(DType::F32 | DType::BF16));
    let same = params
        .iter()
        .all(|p| p.device().is_cpu() && Some(p.dtype()) == dtype);
    if !tanh_gelu || !fits || !same || params.len() != names.len() {
        return None;
    }
    ParamIndex::new(names, cfg.n_layer, head)
}

/// `(T, T)`, 1 where query `i` may see key `j`.
fn causal_mask(t: usize) -> Vec<u8> {
    (0..t)
        .flat_map(|i| (0..t).map(move |j| u8::from(j <= i)))
        .collect()
}

/// Rows of `t` token ids, checked against the context and the vocabulary.
fn check_ids(cfg: &Gpt2Config, ids: &[u32], t: usize) -> Result<()> {
    if t == 0 {
        return Err(Error::EmptyPrompt);
    }
    if t > cfg.n_positions {
        return Err(Error::ContextOverflow {
            len: t,
            max: cfg.n_positions,
        });
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
        return Err(Error::InvalidArgument(format!(
            "token id {bad} is not below the vocabulary size {}",
            cfg.vocab_size
        )));
    }
    Ok(())
}
