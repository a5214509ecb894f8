//! Text generation: greedy decoding with the key/value cache.

use candle_core::{Tensor, D};

use crate::{Error, Gpt2LmHeadModel, KvCache, Result};

/// Appends `max_new_tokens` greedily chosen tokens to `prompt` (batch of one) and returns the
/// prompt and the new ids, as transformers' `generate(do_sample=False)` does. The prompt is
/// run once; every later step feeds only the newest token through the cache.
pub fn greedy(model: &Gpt2LmHeadModel, prompt: &[u32], max_new_tokens: usize) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let n_positions = model.config().n_positions;
    if prompt.len() + max_new_tokens > n_positions {
        return Err(Error::ContextOverflow {
            len: prompt.len() + max_new_tokens,
            max: n_positions,
        });
    }
    let device = model.transformer.device();
    let mut cache = KvCache::new(model.config().n_layer);
    let mut ids = prompt.to_vec();
    let mut input = Tensor::new(prompt, device)?.unsqueeze(0)?; // (1, T)
    for _ in 0..max_new_tokens {
        let logits = model.forward_last(&input, None, Some(&mut cache))?; // (1, V)
        let next = logits.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
        ids.push(next);
        input = Tensor::new(&[next], device)?.unsqueeze(0)?; // (1, 1)
    }
    Ok(ids)
}
