//! Losses: cross-entropy that skips ignored labels, the shifted language-modelling loss
//! (`GPT2LMHeadModel` with `labels`) and the classification losses of
//! `GPT2ForSequenceClassification` and `GPT2ForTokenClassification` (transformers'
//! `modeling_gpt2.py`, chapter 5 of the tutorial).
//!
//! candle's `cross_entropy` has no `ignore_index`, and the tutorial's loss needs one: labels of
//! -100 (padding, or prompt tokens one does not want to learn) must count for nothing, and the
//! mean is over the tokens that do count - exactly as PyTorch's `CrossEntropyLoss` does.

use candle_core::{DType, Tensor, D};

use crate::{kernels, Error, Result};

/// The label PyTorch's cross-entropy ignores by default.
pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits` `(N, V)` against `targets` `(N,)` (i64), skipping targets equal
/// to [`IGNORE_INDEX`].
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.dims() != [n] {
        return Err(Error::InvalidArgument(format!(
            "targets have shape {:?} but logits {:?} need [{n}]",
            targets.dims(),
            logits.dims()
        )));
    }
    // ANCHOR: cross_entropy
    let targets = targets.to_dtype(DType::I64)?;
    let keep = targets.ne(IGNORE_INDEX)?; // (N) 1 where the token counts
    let counted = keep.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if counted == 0.0 {
        return Err(Error::InvalidArgument(
            "every label is -100 (ignored): there is nothing to compute a loss over".into(),
        ));
    }
    // ANCHOR_END: cross_entropy
    let zeros = targets.zeros_like()?;
    let safe = keep.where_cond(&targets, &zeros)?; // ignored → class 0, masked out below
    let max = safe.max_all()?.to_scalar::<i64>()?;
    let min = safe.min_all()?.to_scalar::<i64>()?;
    if min < 0 || max >= v as i64 {
        return Err(Error::InvalidArgument(format!(
            "labels must be in [0, {v}) or -100, found {}",
            if min < 0 { min } else { max }
        )));
    }
    if let Some(loss) = kernels::cross_entropy(
        logits,
        &safe.to_dtype(DType::U32)?,
        &(keep.to_dtype(DType::F32)? / counted as f64)?,
    )? {
        return Ok(loss); // on the CPU: the same in one pass (src/kernels/cross_entropy.rs)
    }
    // ANCHOR: masked_mean
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?; // (N, V)
    let picked = log_probs
        .gather(&safe.to_dtype(DType::U32)?.unsqueeze(1)?, 1)? // (N, 1)
        .squeeze(1)?; // (N)
    let keep = keep.to_dtype(log_probs.dtype())?;
    Ok((picked.mul(&keep)?.sum_all()?.neg()? / counted as f64)?)
    // ANCHOR_END: masked_mean
}

/// The causal language-modelling loss, as `GPT2LMHeadModel` computes it from `labels`:
/// position `t` predicts token `t + 1`, so the logits at `t` are scored against the label at
/// `t + 1`. transformers drops the last logits and the first label; here the labels move one
/// place left instead and the last position gets -100 (ignored) - the same loss, without
/// copying the `(B, T, V)` logits, which hold V = 50,257 numbers for every label.
pub fn lm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    check_label_shape(labels, &[b, t], PER_TOKEN)?;
    if t < 2 {
        return Err(Error::InvalidArgument(format!(
            "a language-modelling loss needs at least 2 tokens (one to read, one to predict), but each row has {t}: give a longer text"
        )));
    }
    // ANCHOR: lm_loss
    let labels = labels.to_dtype(DType::I64)?;
    let nothing_to_predict = Tensor::full(IGNORE_INDEX, (b, 1), labels.device())?; // (B, 1)
    let shift_labels = Tensor::cat(&[labels.narrow(1, 1, t - 1)?, nothing_to_predict], 1)?; // (B, T)
    let flat_logits = logits.reshape((b * t, v))?; // (B*T, V)
    cross_entropy(&flat_logits, &shift_labels.flatten_all()?)
    // ANCHOR_END: lm_loss
}

const PER_TOKEN: &str =
    "give one label per input token, the same [batch, tokens] shape as input_ids";
pub(crate) const PER_SEQUENCE: &str = "give one class per sequence, a [batch] tensor";

pub(crate) fn check_label_shape(
    labels: &Tensor,
    expected: &[usize],
    what: &'static str,
) -> Result<()> {
    if labels.dims() != expected {
        return Err(Error::LabelShape {
            labels: labels.dims().to_vec(),
            expected: expected.to_vec(),
            what,
        });
    }
    Ok(())
}

/// The loss of `GPT2ForSequenceClassification` with `num_labels > 1` (transformers'
/// "single_label_classification"): cross-entropy of the pooled logits `(B, N)` against one class
/// per sequence `(B)`. With one label transformers switches to regression, which we refuse.
pub fn sequence_classification_loss(pooled_logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, n) = pooled_logits.dims2()?;
    // ANCHOR: sequence_classification_loss
    match n {
        0 => return Err(Error::NoLabels),
        1 => return Err(Error::RegressionUnsupported),
        _ => {}
    }
    check_label_shape(labels, &[b], PER_SEQUENCE)?;
    cross_entropy(pooled_logits, labels)
    // ANCHOR_END: sequence_classification_loss
}

/// The loss of `GPT2ForTokenClassification`: cross-entropy of every token's logits `(B, T, N)`
/// against its label `(B, T)`, -100 ignored. Unlike the LM loss there is no shift: a token's
/// label is about the token itself, not the next one.
pub fn token_classification_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, t, n) = logits.dims3()?;
    check_label_shape(labels, &[b, t], PER_TOKEN)?;
    let flat_logits = logits.reshape((b * t, n))?; // (B*T, N)
    cross_entropy(&flat_logits, &labels.flatten_all()?)
}
