//! Chapter 3's two greedy loops, side by side.
//!
//! The tutorial's loop is the obvious one: tokenize the text, run the model over all of it,
//! append the decoded most likely token to the *text*, repeat. It does two avoidable things:
//! it runs the whole sequence through the model at every step (the keys and values of the old
//! tokens are recomputed each time), and it round-trips through text (decode, then encode
//! again), which need not give back the same tokens: `","` `","` decodes to `",,"`, which GPT-2
//! encodes as a single token. The cached loop ([`crate::generation::greedy`]) keeps the ids and
//! feeds the model one new token per step.

use std::time::Instant;

use candle_core::{Tensor, D};
use serde::Serialize;

use crate::config::EOS_TOKEN_ID;
use crate::generation;
use crate::{Error, Gpt2LmHeadModel, Gpt2Tokenizer, Result};

// ANCHOR: naive_loop
/// The tutorial's loop: re-tokenize the growing text and run the whole sequence every step.
/// One addition: it stops at `<|endoftext|>`, which the tutorial's loop does not check for (it
/// always runs `max_new_tokens` steps; after an `<|endoftext|>` it would go on writing a new
/// document).
pub fn naive_greedy(
    model: &Gpt2LmHeadModel,
    tokenizer: &Gpt2Tokenizer,
    prompt: &str,
    max_new_tokens: usize,
) -> Result<String> {
    let device = model.transformer.device();
    let mut text = prompt.to_string();
    for _ in 0..max_new_tokens {
        let ids = tokenizer.encode(&text)?;
        let input = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?; // (1, T)
        let logits = model.forward_last(&input, None, None)?; // (1, V)
        let next = logits.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
        text.push_str(&tokenizer.decode(&[next])?);
        if next == EOS_TOKEN_ID {
            break;
        }
    }
    Ok(text)
}
// ANCHOR_END: naive_loop

/// One timed run of a loop.
#[derive(Debug, Clone, Serialize)]
pub struct LoopRun {
    /// Prompt and new tokens.
    pub ids: Vec<u32>,
    pub text: String,
    pub seconds: f64,
}

/// Where the naive loop's ids first part from the cached loop's, with the pieces of text
/// either side (for the explanation).
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    /// Index of the first differing id.
    pub position: usize,
    /// The cached loop's next few tokens from there: (id, text).
    pub cached: Vec<(u32, String)>,
    /// The naive loop's next few tokens from there.
    pub naive: Vec<(u32, String)>,
}

/// Both loops on one prompt, timed.
#[derive(Debug, Clone, Serialize)]
pub struct LoopComparison {
    pub naive: LoopRun,
    pub cached: LoopRun,
    /// `None` when both loops end with the same ids.
    pub divergence: Option<RoundTrip>,
}

impl LoopComparison {
    pub fn texts_agree(&self) -> bool {
        self.naive.text == self.cached.text
    }

    pub fn ids_agree(&self) -> bool {
        self.naive.ids == self.cached.ids
    }

    /// How many times faster the cached loop was.
    pub fn speed_up(&self) -> f64 {
        self.naive.seconds / self.cached.seconds
    }
}

/// How many tokens either side of a divergence are shown.
const SHOWN: usize = 3;

/// Runs the naive loop and the cached loop on `prompt` and compares them. The naive loop's ids
/// are its final text tokenized once more, which is all that loop keeps.
pub fn compare_loops(
    model: &Gpt2LmHeadModel,
    tokenizer: &Gpt2Tokenizer,
    prompt: &str,
    max_new_tokens: usize,
) -> Result<LoopComparison> {
    if max_new_tokens == 0 {
        return Err(Error::InvalidArgument(
            "max_new_tokens is 0: ask for at least one new token".into(),
        ));
    }
    let prompt_ids = tokenizer.encode(prompt)?;
    check_room(model, prompt_ids.len(), max_new_tokens)?;

    // ANCHOR: timing
    let start = Instant::now();
    let naive_text = naive_greedy(model, tokenizer, prompt, max_new_tokens)?;
    let naive_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let cached_ids = generation::greedy(model, &prompt_ids, max_new_tokens)?;
    let cached_seconds = start.elapsed().as_secs_f64();
    // ANCHOR_END: timing

    let naive = LoopRun {
        ids: tokenizer.encode(&naive_text)?,
        text: naive_text,
        seconds: naive_seconds,
    };
    let cached = LoopRun {
        text: tokenizer.decode(&cached_ids)?,
        ids: cached_ids,
        seconds: cached_seconds,
    };
    let divergence = first_divergence(tokenizer, &cached.ids, &naive.ids)?;
    Ok(LoopComparison {
        naive,
        cached,
        divergence,
    })
}

/// Refuses a prompt and token budget that do not fit the context before either loop starts:
/// the naive loop would otherwise generate up to the context's end and only then fail, after
/// seconds (minutes on a large model), with a message that names neither number.
fn check_room(model: &Gpt2LmHeadModel, prompt_len: usize, max_new_tokens: usize) -> Result<()> {
    let config = generation::GenerationConfig::greedy(max_new_tokens);
    match config.validate(prompt_len, model.config().n_positions) {
        Err(Error::ContextOverflow { len, max }) if prompt_len < max => {
            Err(Error::InvalidArgument(format!(
                "the {prompt_len}-token prompt plus max_new_tokens {max_new_tokens} is {len} tokens, more than the model's context of {max} (n_positions): set --max-new-tokens to {} or less, or shorten the prompt",
                max - prompt_len
            )))
        }
        other => other.map(|_| ()),
    }
}

fn first_divergence(tokenizer: &Gpt2Tokenizer, a: &[u32], b: &[u32]) -> Result<Option<RoundTrip>> {
    let Some(position) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) else {
        return Ok(None);
    };
    let pieces = |ids: &[u32]| -> Result<Vec<(u32, String)>> {
        ids.iter()
            .skip(position)
            .take(SHOWN)
            .map(|&id| Ok((id, tokenizer.decode(&[id])?)))
            .collect()
    };
    Ok(Some(RoundTrip {
        position,
        cached: pieces(a)?,
        naive: pieces(b)?,
    }))
}
