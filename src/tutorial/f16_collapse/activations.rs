//! The largest activations of a model in f32, and whether f16 inference overflows.

use std::collections::HashMap;

use candle_core::{DType, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use serde::Serialize;

use super::values;
use crate::dropout::Dropout;
use crate::model::{causal_mask, Block, LayerNorm};
use crate::{Gpt2Config, Result, Weights};

#[derive(Debug, Clone, Serialize)]
pub struct Activations {
    pub model: String,
    pub tokens: usize,
    /// max |x| of the residual stream in f32: after the embeddings, then after each block.
    pub residual_max_f32: Vec<f64>,
    pub logits_max_f32: f64,
    /// The same prompt in f16: non-finite values anywhere in the residual stream or logits.
    pub non_finite_f16: usize,
    pub logits_max_f16: f64,
    /// Positions whose most likely next token is the same in f16 as in f32.
    pub argmax_agree: usize,
}

/// The residual stream after the embeddings and after each block, and the logits, in `dtype`.
fn trace(
    weights: &Weights,
    cfg: &Gpt2Config,
    ids: &[u32],
    dtype: DType,
) -> Result<(Vec<Tensor>, Tensor)> {
    let dev = weights.device();
    let tensors = weights
        .names()
        .into_iter()
        .map(|n| Ok((n.clone(), weights.get(&n).expect("named").to_dtype(dtype)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    let vb = VarBuilder::from_tensors(tensors, dtype, dev);
    let (c, t) = (cfg.n_embd, ids.len());
    let wte = vb.get((cfg.vocab_size, c), "wte.weight")?;
    let wpe = vb.get((cfg.n_positions, c), "wpe.weight")?;
    let ids_t = Tensor::new(ids, dev)?;
    let mut x = (wte.index_select(&ids_t, 0)? + wpe.i(0..t)?)?.unsqueeze(0)?; // (1, T, C)
    let mask = causal_mask(1, t, 0, None, dev)?;
    let dropout = Dropout::seeded(0); // off: inference
    let mut stream = vec![x.clone()];
    for i in 0..cfg.n_layer {
        let block = Block::load(vb.pp(format!("h.{i}")), cfg, &dropout)?;
        x = block.forward(&x, mask.as_ref(), None)?;
        stream.push(x.clone());
    }
    let ln_f = LayerNorm::load(vb.pp("ln_f"), c, cfg.layer_norm_epsilon)?;
    let logits = ln_f.forward(&x)?.squeeze(0)?.matmul(&wte.t()?)?; // (T, V)
    Ok((stream, logits))
}

fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(f64::from(
        t.to_dtype(DType::F32)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?,
    ))
}

fn non_finite(t: &Tensor) -> Result<usize> {
    Ok(values(t)?.iter().filter(|x| !x.is_finite()).count())
}

pub fn activations(
    name: &str,
    weights: &Weights,
    cfg: &Gpt2Config,
    ids: &[u32],
) -> Result<Activations> {
    let (stream, logits) = trace(weights, cfg, ids, DType::F32)?;
    let (stream16, logits16) = trace(weights, cfg, ids, DType::F16)?;
    let mut bad = non_finite(&logits16)?;
    for x in &stream16 {
        bad += non_finite(x)?;
    }
    let top = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let top16 = logits16
        .to_dtype(DType::F32)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    Ok(Activations {
        model: name.to_string(),
        tokens: ids.len(),
        residual_max_f32: stream.iter().map(max_abs).collect::<Result<_>>()?,
        logits_max_f32: max_abs(&logits)?,
        non_finite_f16: bad,
        logits_max_f16: max_abs(&logits16)?,
        argmax_agree: top.iter().zip(&top16).filter(|(a, b)| a == b).count(),
    })
}
