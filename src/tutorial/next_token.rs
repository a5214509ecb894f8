//! One step of generation, taken apart as the tutorial does it: tokenize the prompt, run one
//! forward pass, take the last position's logits, softmax them, and read off the most likely
//! next token.
//!
//! In Python that is `tokenizer(prompt, return_tensors="pt")`, `model(**inputs).logits`,
//! `logits[0, -1]`, `torch.softmax(..., dim=-1)` and `argmax()`.

use candle_core::{DType, IndexOp, Tensor};
use serde::Serialize;

use crate::generation::{top_k_of_logits, NextTokenProb};
use crate::{Error, Gpt2LmHeadModel, Gpt2Tokenizer, Result};

/// How many of the last position's logits are shown (the tutorial prints three).
pub const LOGITS_SHOWN: usize = 3;

/// A probability for people: four decimals, or three significant digits in scientific notation
/// when it is too small for that (the bundled random model spreads ~1/50257 over every token).
pub fn format_prob(p: f32) -> String {
    if p >= 0.001 {
        format!("{p:.4}")
    } else {
        format!("{p:.3e}")
    }
}

/// A token with its probability of coming next: the library's [`NextTokenProb`] with the
/// token's text, which the chapter prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenProb {
    /// The token's id.
    pub id: u32,
    /// What it decodes to.
    pub text: String,
    /// Its probability of coming next.
    pub prob: f32,
}

impl TokenProb {
    /// `next` with its text decoded by `tokenizer`.
    pub fn new(next: NextTokenProb, tokenizer: &Gpt2Tokenizer) -> Result<Self> {
        Ok(Self {
            id: next.id,
            text: tokenizer.decode(&[next.id])?,
            prob: next.prob,
        })
    }
}

/// Everything the one-step walk-through shows.
#[derive(Debug, Clone, Serialize)]
pub struct NextToken {
    /// The prompt's token ids.
    pub input_ids: Vec<u32>,
    /// 1 for each prompt token (one prompt has no padding).
    pub attention_mask: Vec<u32>,
    /// The text of each prompt token.
    pub tokens: Vec<String>,
    /// `[batch, tokens, vocabulary]`.
    pub logits_shape: Vec<usize>,
    /// The first [`LOGITS_SHOWN`] logits of the last position, `logits[0, -1, :3]`.
    pub last_logits: Vec<f32>,
    /// The most likely next token.
    pub next: TokenProb,
    /// The `top_k` most likely next tokens, most likely first.
    pub top: Vec<TokenProb>,
}

/// Runs the prompt through the model once and reports the next-token distribution.
pub fn next_token(
    model: &Gpt2LmHeadModel,
    tokenizer: &Gpt2Tokenizer,
    prompt: &str,
    top_k: usize,
) -> Result<NextToken> {
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let device = model.transformer.device();
    // ANCHOR: tokenize
    let encoding = tokenizer
        .inner()
        .encode(prompt, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let input_ids = encoding.get_ids().to_vec();
    let attention_mask = encoding.get_attention_mask().to_vec();
    // ANCHOR_END: tokenize
    let tokens = input_ids
        .iter()
        .map(|&id| tokenizer.decode(&[id]))
        .collect::<Result<Vec<_>>>()?;

    // ANCHOR: forward
    let input = Tensor::new(input_ids.as_slice(), device)?.unsqueeze(0)?; // (1, T)
    let mask = Tensor::new(attention_mask.as_slice(), device)?.unsqueeze(0)?; // (1, T)
    let logits = model.forward(&input, Some(&mask), None)?; // (1, T, V)
                                                            // ANCHOR_END: forward

    // ANCHOR: last_position
    // The last position's logits score every token as the continuation of the whole prompt; a
    // softmax makes them probabilities, ranked most likely first (the first is the argmax).
    let t = input_ids.len();
    let last = logits.i((0, t - 1))?.to_dtype(DType::F32)?; // (V)
    let ranked = top_k_of_logits(&last, top_k.max(1))?;
    let next = ranked[0];
    // ANCHOR_END: last_position

    Ok(NextToken {
        logits_shape: logits.dims().to_vec(),
        last_logits: last.narrow(0, 0, LOGITS_SHOWN)?.to_vec1()?,
        next: TokenProb::new(next, tokenizer)?,
        top: ranked
            .into_iter()
            .take(top_k)
            .map(|p| TokenProb::new(p, tokenizer))
            .collect::<Result<_>>()?,
        input_ids,
        attention_mask,
        tokens,
    })
}
