//! The language-modelling micro-step written out by hand, llm.c's way: GPT-2's forward pass
//! over plain f32 buffers, keeping what the backward pass needs, then the backward pass layer by
//! layer, each weight's gradient added straight into the sum being accumulated.
//!
//! The same kernels as the model's graph, in the same order on the same numbers: the loss is
//! the graph's to the bit, and the gradients agree with its to float rounding (they are summed
//! in another order; `tests/lm_step.rs` compares them). What is left out is candle's
//! bookkeeping around the kernels: in its backward pass every tensor's gradient starts as a new
//! buffer of zeros that the gradient is then added to, each weight's gradient is a new buffer
//! added again to the micro-steps' sum, and the layer norms' and residual adds' gradients are a
//! few tensor operations each. Here the activations' gradients are written into a handful of
//! buffers reused from layer to layer, the residual stream's gradient is added to in place, and
//! the weights' gradients go into the sums by gemm's own accumulation.
//!
//! It applies to an f32 GPT-2 on the CPU with the tanh GELU (every GPT-2 checkpoint) - and to a
//! pure-bf16 one: its products then multiply the bf16 weights and the activations rounded to
//! bf16 with f32 sums (in AMX tiles where the CPU has them, `amx.rs`; elsewhere gemm's f32
//! products on those values widened, `gemm.rs`), everything between them in f32 - for the
//! language-modelling loss ([`lm_micro_step`], chapter 6) and the sequence classifier's
//! ([`classifier_micro_step`], chapter 7's `Trainer`); they say `None` to anything else, and the
//! step takes the graph. This file holds the entry points and their checks; `lm_pass.rs` the
//! pass.

use candle_core::{CpuStorage, DType, Storage, Tensor};

use super::dropout::Mask;
use super::gemm::Matrix;
use super::lm_pass::{Buffers, Head, MicroStep, Pass};
use crate::{Error, Gpt2Config, Result};

/// A block's parameters, in the order of [`LAYER_PARAMS`].
pub(super) const LN_1_W: usize = 0;
pub(super) const LN_1_B: usize = 1;
pub(super) const C_ATTN_W: usize = 2;
pub(super) const C_ATTN_B: usize = 3;
pub(super) const ATTN_PROJ_W: usize = 4;
pub(super) const ATTN_PROJ_B: usize = 5;
pub(super) const LN_2_W: usize = 6;
pub(super) const LN_2_B: usize = 7;
pub(super) const C_FC_W: usize = 8;
pub(super) const C_FC_B: usize = 9;
pub(super) const MLP_PROJ_W: usize = 10;
pub(super) const MLP_PROJ_B: usize = 11;

/// The checkpoint names of a block's parameters, under `h.{i}.`.
pub(super) const LAYER_PARAMS: [&str; 12] = [
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
];

/// The parameters outside the blocks, first in [`ParamIndex`]'s order.
pub(super) const WTE: usize = 0;
pub(super) const WPE: usize = 1;
pub(super) const LN_F_W: usize = 2;
pub(super) const LN_F_B: usize = 3;
pub(super) const OUTER_PARAMS: [&str; 4] = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"];

/// Where each parameter is in the caller's list: the four outer ones, then block by block.
pub(super) struct ParamIndex(Vec<usize>);

impl ParamIndex {
    /// `None` unless `names` are exactly GPT-2's parameters for `n_layer` blocks and the
    /// head's, `head` (after the blocks).
    pub(super) fn new(names: &[&str], n_layer: usize, head: &[&str]) -> Option<Self> {
        let wanted = OUTER_PARAMS
            .iter()
            .map(|p| p.to_string())
            .chain(
                (0..n_layer).flat_map(|i| LAYER_PARAMS.iter().map(move |p| format!("h.{i}.{p}"))),
            )
            .chain(head.iter().map(|p| p.to_string()));
        let index: Option<Vec<usize>> =
            wanted.map(|w| names.iter().position(|n| *n == w)).collect();
        index.filter(|i| i.len() == names.len()).map(Self)
    }

    pub(super) fn outer(&self, p: usize) -> usize {
        self.0[p]
    }

    pub(super) fn layer(&self, l: usize, p: usize) -> usize {
        self.0[OUTER_PARAMS.len() + l * LAYER_PARAMS.len() + p]
    }

    /// The head's first parameter.
    pub(super) fn head(&self, n_layer: usize) -> usize {
        self.0[OUTER_PARAMS.len() + n_layer * LAYER_PARAMS.len()]
    }
}

/// The gradients summed over micro-steps, one f32 buffer per parameter in the caller's order:
/// made zero at the first micro-step after [`GradSums::take`], added to by each.
#[derive(Default)]
pub struct GradSums {
    pub(super) sums: Vec<Vec<f32>>,
    /// The activations and scratch of the last micro-step, kept for the next one: buffers of
    /// the same size again are neither allocated nor zeroed.
    pub(super) buffers: Buffers,
}

impl GradSums {
    /// Whether any micro-step has added to the sums since the last [`GradSums::take`].
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The sums, in the order of the parameters the micro-steps were given; the next
    /// micro-step starts from zeros.
    pub fn take(&mut self) -> Vec<Vec<f32>> {
        std::mem::take(&mut self.sums)
    }

    /// Drops the sums (the buffers stay for the next micro-step).
    pub fn clear(&mut self) {
        self.sums.clear();
    }
}

/// The parameters as the pass reads them (each contiguous on the CPU; `None` if one is not):
/// an f32 model's as they are; a bf16 model's product weights (`wte` and each block's four
/// Conv1D weights) as they are, for bf16 products, and the rest - biases, layer norms, `wpe`,
/// the classifier's `score` - widened to f32 for the element-wise code (a few MB).
fn with_params<R>(
    tensors: &[Tensor],
    index: &ParamIndex,
    n_layer: usize,
    f: impl FnOnce(&[Matrix]) -> R,
) -> Option<R> {
    let mut product_weight = vec![false; tensors.len()];
    product_weight[index.outer(WTE)] = true;
    for l in 0..n_layer {
        for p in [C_ATTN_W, ATTN_PROJ_W, C_FC_W, MLP_PROJ_W] {
            product_weight[index.layer(l, p)] = true;
        }
    }
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let widened: Vec<Option<Vec<f32>>> = guards
        .iter()
        .zip(&product_weight)
        .map(|((storage, layout), &product)| match &**storage {
            Storage::Cpu(CpuStorage::BF16(v)) if !product => {
                let (a, b) = layout.contiguous_offsets()?;
                Some(v[a..b].iter().map(|x| x.to_f32()).collect())
            }
            _ => None,
        })
        .collect();
    let params: Option<Vec<Matrix>> = guards
        .iter()
        .zip(&widened)
        .map(|((storage, layout), widened)| {
            if let Some(w) = widened {
                return Some(Matrix::F32(w));
            }
            let (a, b) = layout.contiguous_offsets()?;
            match &**storage {
                Storage::Cpu(CpuStorage::F32(v)) => Some(Matrix::F32(&v[a..b])),
                Storage::Cpu(CpuStorage::BF16(v)) => Some(Matrix::Bf16(&v[a..b])),
                _ => None,
            }
        })
        .collect();
    params.map(|p| f(&p))
}

/// One micro-step of the language-modelling loss of `ids` `(B, T)` predicting themselves,
/// shifted by one, for GPT-2 `cfg` with parameters `params` named `names` (the checkpoint's
/// names, in any order): the forward pass, then `proceed(loss)`, which says whether to go on
/// (an error stops everything with nothing added), then the backward pass with the gradients of
/// `loss * loss_weight` added into `sums`. `draw(p)` gives the mask of a dropout layer of
/// probability `p` (`None`: no dropout), called in the order the model's layers draw theirs.
/// Returns the loss, or `None`, with nothing drawn or computed, where this does not apply:
/// parameters not all f32 on the CPU, other parameters than GPT-2's, or an activation other
/// than the tanh GELU.
#[allow(clippy::too_many_arguments)]
pub fn lm_micro_step(
    cfg: &Gpt2Config,
    names: &[&str],
    params: &[Tensor],
    ids: &Tensor,
    loss_weight: f32,
    draw: &dyn Fn(f32) -> Option<Mask>,
    sums: &mut GradSums,
    proceed: impl FnOnce(f32) -> Result<bool>,
) -> Result<Option<f32>> {
    let Some(index) = applies(cfg, names, params, ids, &[]) else {
        return Ok(None);
    };
    let (b, t) = ids.dims2()?;
    if t < 2 {
        return Err(Error::InvalidArgument(format!(
            "a sequence of {t} token has no next token to predict: the loss needs at least 2"
        )));
    }
    let ids = checked_ids(cfg, ids)?;
    let causal = causal_mask(t);
    let micro = MicroStep {
        loss_weight,
        draw,
        proceed,
    };
    with_params(params, &index, cfg.n_layer, |p| {
        Pass::new(cfg, p, &index, &ids, (b, t), &causal, Head::NextToken).run(sums, micro)
    })
    .transpose()
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

/// [`lm_micro_step`] for `GPT2ForSequenceClassification`: the mean cross-entropy of the `score`
/// head's logits at each row's position against the row's class, over the rows not ignored.
#[allow(clippy::too_many_arguments)]
pub fn classifier_micro_step(
    cfg: &Gpt2Config,
    names: &[&str],
    params: &[Tensor],
    batch: LabelledBatch,
    loss_weight: f32,
    draw: &dyn Fn(f32) -> Option<Mask>,
    sums: &mut GradSums,
    proceed: impl FnOnce(f32) -> Result<bool>,
) -> Result<Option<f32>> {
    let LabelledBatch {
        ids,
        attention_mask,
        positions,
        labels,
    } = batch;
    let Some(input) = ClassifierInput::read(cfg, names, params, ids, attention_mask, &positions)?
    else {
        return Ok(None);
    };
    let (b, classes) = (input.b, input.classes);
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
    let head = Head::Classify {
        positions,
        labels,
        classes,
    };
    let micro = MicroStep {
        loss_weight,
        draw,
        proceed,
    };
    let index = &input.index;
    with_params(params, index, cfg.n_layer, |p| {
        Pass::new(cfg, p, index, &input.ids, (b, input.t), &input.mask, head).run(sums, micro)
    })
    .transpose()
}

/// A classifier's logits `(B, classes)` at each row's position (its last real token), dropout
/// off, by the written-out forward pass: only each row's tokens up to that position are
/// computed, which under causal attention are all the logits depend on (transformers
/// computes the padding after them too). `None` where the pass does not apply.
pub fn classifier_logits(
    cfg: &Gpt2Config,
    names: &[&str],
    params: &[Tensor],
    ids: &Tensor,
    attention_mask: Option<&Tensor>,
    positions: Vec<usize>,
) -> Result<Option<Vec<f32>>> {
    let Some(input) = ClassifierInput::read(cfg, names, params, ids, attention_mask, &positions)?
    else {
        return Ok(None);
    };
    let head = Head::Classify {
        positions,
        labels: vec![None; input.b],
        classes: input.classes,
    };
    let index = &input.index;
    Ok(with_params(params, index, cfg.n_layer, |p| {
        let (b, t) = (input.b, input.t);
        Pass::new(cfg, p, index, &input.ids, (b, t), &input.mask, head).class_logits()
    }))
}

/// A classifier's batch read and checked for the written-out pass.
struct ClassifierInput {
    index: ParamIndex,
    ids: Vec<u32>,
    b: usize,
    t: usize,
    classes: usize,
    /// The model's mask `(B or 1, T, T)`: causal, and no query sees a padding key.
    mask: Vec<u8>,
}

impl ClassifierInput {
    /// `None` where the pass does not apply.
    fn read(
        cfg: &Gpt2Config,
        names: &[&str],
        params: &[Tensor],
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        positions: &[usize],
    ) -> Result<Option<Self>> {
        let Some(index) = applies(cfg, names, params, ids, &["score.weight"]) else {
            return Ok(None);
        };
        let (b, t) = ids.dims2()?;
        let (classes, c) = params[index.head(cfg.n_layer)].dims2()?;
        if c != cfg.n_embd || classes < 2 {
            return Ok(None); // no classes, or regression: the graph's errors say which
        }
        let ids_v = checked_ids(cfg, ids)?;
        if positions.len() != b || positions.iter().any(|&p| p >= t) {
            return Err(Error::InvalidArgument(format!(
                "a batch of {b} rows of {t} tokens needs {b} positions below {t}"
            )));
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
        Ok(Some(Self {
            index,
            ids: ids_v,
            b,
            t,
            classes,
            mask,
        }))
    }
}

/// The parameters' index, where the written-out pass applies to this model and input.
fn applies(
    cfg: &Gpt2Config,
    names: &[&str],
    params: &[Tensor],
    ids: &Tensor,
    head: &[&str],
) -> Option<ParamIndex> {
    let tanh_gelu = !matches!(cfg.activation_function.as_str(), "gelu" | "relu");
    // f32, or bf16 (its products in AMX tiles where the CPU has them, or widened to f32).
    let dtype = params.first().map(Tensor::dtype);
    let fits = matches!(dtype, Some(DType::F32 | DType::BF16));
    let same = params
        .iter()
        .all(|p| p.device().is_cpu() && Some(p.dtype()) == dtype);
    if !tanh_gelu || !fits || !same || params.len() != names.len() || !ids.device().is_cpu() {
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

/// `ids` `(B, T)` flattened, checked against the context and the vocabulary.
fn checked_ids(cfg: &Gpt2Config, ids: &Tensor) -> Result<Vec<u32>> {
    let (_, t) = ids.dims2()?;
    if t == 0 {
        return Err(Error::EmptyPrompt);
    }
    if t > cfg.n_positions {
        return Err(Error::ContextOverflow {
            len: t,
            max: cfg.n_positions,
        });
    }
    let ids: Vec<u32> = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
        return Err(Error::InvalidArgument(format!(
            "token id {bad} is not below the vocabulary size {}",
            cfg.vocab_size
        )));
    }
    Ok(ids)
}
