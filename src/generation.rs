//! Text generation: what transformers' `generate` (and the `text-generation` pipeline on top of
//! it) does for GPT-2, greedy or sampled, with the key/value cache.
//!
//! The settings are those of transformers' `GenerationConfig` with its defaults: `max_length`
//! 20 *counting the prompt* (the limit transformers warns about in the tutorial), or
//! `max_new_tokens` instead; `do_sample` false (greedy); `temperature` 1, `top_k` 50, `top_p` 1
//! when sampling. Picking a token from the logits is candle-transformers'
//! [`LogitsProcessor`]: argmax for greedy, temperature → top-k → top-p → multinomial for sampling,
//! the order transformers applies its logits warpers in (see [`Sampler`] for the one step done
//! here rather than there).
//!
//! `num_return_sequences` rows are decoded as one batch: the prompt repeated `N` times, one
//! cache for all rows. A row that has produced `<|endoftext|>` is finished; like transformers,
//! it keeps receiving the pad token (which for GPT-2 is `<|endoftext|>` again) until every row
//! is finished or `max_length` is reached, so all rows come back with the same length.
//!
//! Two questions short of generating sit here too, since they read the same logits: which
//! tokens the model expects next ([`top_k_next_tokens`]), and how likely it finds a whole text
//! ([`Gpt2LmHeadModel::score`]: its loss and perplexity).

use candle_core::{DType, Tensor, D};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Serialize;

use crate::config::EOS_TOKEN_ID;
use crate::{Error, Gpt2LmHeadModel, KvCache, Result};

/// transformers' default `max_length`: the prompt *and* the new tokens.
pub const DEFAULT_MAX_LENGTH: usize = 20;
/// transformers' default `top_k` when sampling.
pub const DEFAULT_TOP_K: usize = 50;
/// The seed the examples use unless told otherwise. 42 is the seed of the `set_seed(42)` in
/// the example on the `gpt2` model card; the tutorial sets no seed, so its samples differ from
/// run to run.
pub const DEFAULT_SEED: u64 = 42;

// ANCHOR: config
/// How to generate, with the names and defaults of transformers' `GenerationConfig`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationConfig {
    /// Stop when a sequence (prompt included) has this many tokens.
    pub max_length: usize,
    /// If set, stop after this many new tokens instead (it overrides `max_length`).
    pub max_new_tokens: Option<usize>,
    /// Sample the next token (true) or take the most likely one (false: greedy).
    pub do_sample: bool,
    /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens.
    pub temperature: f64,
    /// Sample only among the `k` most likely tokens (`None`: all of them).
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to `top_p`.
    pub top_p: f64,
    /// Seed of the sampler's random number generator.
    pub seed: u64,
    /// How many sequences to generate from the one prompt.
    pub num_return_sequences: usize,
    /// A row that produces this token is finished (`None`: never stop early).
    pub eos_token_id: Option<u32>,
    /// What finished rows receive; `None` means `eos_token_id`, as transformers does for GPT-2.
    pub pad_token_id: Option<u32>,
}
// ANCHOR_END: config

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_length: DEFAULT_MAX_LENGTH,
            max_new_tokens: None,
            do_sample: false,
            temperature: 1.0,
            top_k: Some(DEFAULT_TOP_K),
            top_p: 1.0,
            seed: DEFAULT_SEED,
            num_return_sequences: 1,
            eos_token_id: Some(EOS_TOKEN_ID),
            pad_token_id: None,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens: Some(max_new_tokens),
            ..Self::default()
        }
    }

    /// What the `text-generation` pipeline does when told `do_sample=True`: transformers'
    /// sampling defaults (temperature 1, top-k 50, top-p 1).
    pub fn sampling() -> Self {
        Self {
            do_sample: true,
            ..Self::default()
        }
    }

    /// The total length generation stops at, for a prompt of `prompt_len` tokens.
    pub fn resolved_max_length(&self, prompt_len: usize) -> usize {
        self.max_new_tokens
            .map_or(self.max_length, |n| prompt_len + n)
    }

    /// Checks the settings against a prompt of `prompt_len` tokens and a context of
    /// `n_positions`, and returns the length generation stops at.
    pub fn validate(&self, prompt_len: usize, n_positions: usize) -> Result<usize> {
        if prompt_len == 0 {
            return Err(Error::EmptyPrompt);
        }
        if prompt_len > n_positions {
            return Err(Error::ContextOverflow {
                len: prompt_len,
                max: n_positions,
            });
        }
        if self.max_new_tokens == Some(0) {
            return Err(Error::InvalidArgument(
                "max_new_tokens is 0: ask for at least one new token".into(),
            ));
        }
        let max_length = self.resolved_max_length(prompt_len);
        if max_length <= prompt_len {
            return Err(Error::MaxLengthTooShort {
                max_length,
                prompt_len,
            });
        }
        if max_length > n_positions {
            return Err(Error::ContextOverflow {
                len: max_length,
                max: n_positions,
            });
        }
        // NaN fails every comparison, so it is named explicitly.
        let t = self.temperature;
        if t.is_nan() || t <= 0.0 || t.is_infinite() {
            return Err(Error::InvalidTemperature(t));
        }
        let p = self.top_p;
        if p.is_nan() || p <= 0.0 || p > 1.0 {
            return Err(Error::InvalidTopP(p));
        }
        if self.top_k == Some(0) {
            return Err(Error::InvalidArgument(
                "top_k is 0: give k >= 1, or no top_k to sample among all tokens".into(),
            ));
        }
        if self.num_return_sequences == 0 {
            return Err(Error::InvalidArgument(
                "num_return_sequences is 0: ask for at least one sequence".into(),
            ));
        }
        Ok(max_length)
    }

    /// The settings as candle-transformers' [`Sampling`]. A `top_p` of 1 keeps every token, so
    /// it is left out rather than applied. Top-k together with top-p is [`Sampling::TopP`] here:
    /// the top-k cut is made by [`Sampler`] first.
    pub fn sampling_strategy(&self) -> Sampling {
        let temperature = self.temperature;
        match (self.do_sample, self.top_k, self.top_p < 1.0) {
            (false, _, _) => Sampling::ArgMax,
            (true, None, false) => Sampling::All { temperature },
            (true, Some(k), false) => Sampling::TopK { k, temperature },
            (true, _, true) => Sampling::TopP {
                p: self.top_p,
                temperature,
            },
        }
    }

    /// A fresh sampler for these settings, seeded with `seed`.
    pub fn sampler(&self) -> Sampler {
        let strategy = self.sampling_strategy();
        let top_k_before_top_p = match strategy {
            Sampling::TopP { .. } => self.top_k,
            _ => None,
        };
        Sampler {
            processor: LogitsProcessor::from_sampling(self.seed, strategy),
            top_k_before_top_p,
        }
    }
}

/// Picks tokens from logits: candle-transformers' [`LogitsProcessor`], plus transformers' way of
/// combining top-k with top-p. transformers cuts to the `k` most likely tokens, *renormalises*,
/// and then keeps the smallest set whose probabilities reach `p`; candle's `TopKThenTopP`
/// measures `p` against the un-renormalised top-k probabilities, which keeps more tokens (and
/// none are cut when the top k hold less than `p`). So the top-k cut is made here, and
/// candle's top-p does the rest on the renormalised probabilities.
pub struct Sampler {
    processor: LogitsProcessor,
    top_k_before_top_p: Option<usize>,
}

impl Sampler {
    /// The next token for one row of logits `(V)`.
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let Some(k) = self.top_k_before_top_p else {
            return Ok(self.processor.sample(logits)?);
        };
        Ok(self
            .processor
            .sample_f(logits, |probs| keep_top_k(probs, k))?)
    }
}

/// Zeroes all but the `k` largest of `probs` and rescales those to sum to 1.
fn keep_top_k(probs: &mut [f32], k: usize) {
    if k >= probs.len() {
        return;
    }
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.select_nth_unstable_by(k, |&i, &j| probs[j].total_cmp(&probs[i]));
    for &i in &order[k..] {
        probs[i] = 0.0;
    }
    let kept: f32 = order[..k].iter().map(|&i| probs[i]).sum();
    if kept > 0.0 {
        for &i in &order[..k] {
            probs[i] /= kept;
        }
    }
}

/// The result of [`generate`]: `num_return_sequences` rows, each the prompt followed by the new
/// tokens, all of the same length (finished rows padded), as transformers returns them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The prompt's length in tokens: where the new tokens of each row start.
    pub prompt_len: usize,
    /// `num_return_sequences` rows of token ids, prompt first.
    pub sequences: Vec<Vec<u32>>,
}

impl Generation {
    /// The new tokens of row `i` (padding included).
    pub fn new_tokens(&self, i: usize) -> &[u32] {
        &self.sequences[i][self.prompt_len..]
    }
}

/// Generates from `prompt` (token ids) as transformers' `generate` does.
pub fn generate(
    model: &Gpt2LmHeadModel,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> Result<Generation> {
    let mut generator = Generator::new(model, prompt, cfg)?;
    while generator.step()?.is_some() {}
    Ok(generator.finish())
}

/// [`generate`] one step at a time, for callers that want each token as it comes (streaming).
pub struct Generator<'a> {
    model: &'a Gpt2LmHeadModel,
    eos: Option<u32>,
    pad: Option<u32>,
    sampler: Sampler,
    cache: KvCache,
    max_length: usize,
    prompt_len: usize,
    sequences: Vec<Vec<u32>>,
    unfinished: Vec<bool>,
    /// What the next forward pass runs: the prompt at first, then the newest token of each row.
    input: Tensor,
}

impl<'a> Generator<'a> {
    /// Checks the settings and prepares a batch of `num_return_sequences` copies of `prompt`.
    pub fn new(model: &'a Gpt2LmHeadModel, prompt: &[u32], cfg: &GenerationConfig) -> Result<Self> {
        let max_length = cfg.validate(prompt.len(), model.config().n_positions)?;
        let n = cfg.num_return_sequences;
        // Every row starts from the same prompt, so the first input is the prompt N times.
        let input = Tensor::new(prompt, model.transformer.device())?
            .unsqueeze(0)? // (1, T)
            .repeat((n, 1))?; // (N, T)
        Ok(Self {
            model,
            eos: cfg.eos_token_id,
            pad: cfg.pad_token_id.or(cfg.eos_token_id),
            sampler: cfg.sampler(),
            cache: KvCache::new(model.config().n_layer),
            max_length,
            prompt_len: prompt.len(),
            sequences: vec![prompt.to_vec(); n],
            unfinished: vec![true; n],
            input,
        })
    }

    // ANCHOR: step
    /// Adds one token to every row and returns them, or `None` once generation is over
    /// (`max_length` reached, or every row finished with `<|endoftext|>`).
    pub fn step(&mut self) -> Result<Option<Vec<u32>>> {
        let done = !self.unfinished.contains(&true);
        if done || self.sequences[0].len() >= self.max_length {
            return Ok(None);
        }
        // The first step runs the whole prompt; every later one only the newest token per row,
        // the cache holding the keys and values of everything before it.
        let logits = self
            .model
            .forward_last(&self.input, None, Some(&mut self.cache))?; // (N, V)
        let mut tokens = Vec::with_capacity(self.sequences.len());
        for (row, seq) in self.sequences.iter_mut().enumerate() {
            // Every row draws, finished or not, as transformers does: a row's samples then do
            // not depend on when the other rows finish. A finished row keeps the pad token.
            let sampled = self.sampler.sample(&logits.get(row)?)?;
            let token = match (self.unfinished[row], self.pad) {
                (false, Some(pad)) => pad,
                _ => sampled,
            };
            if self.eos == Some(token) {
                self.unfinished[row] = false;
            }
            seq.push(token);
            tokens.push(token);
        }
        self.input = Tensor::new(tokens.as_slice(), self.input.device())?.unsqueeze(1)?; // (N, 1)
        Ok(Some(tokens))
    }
    // ANCHOR_END: step

    /// The rows generated so far.
    pub fn finish(self) -> Generation {
        Generation {
            prompt_len: self.prompt_len,
            sequences: self.sequences,
        }
    }
}

/// Appends up to `max_new_tokens` greedily chosen tokens to `prompt` (batch of one), stopping
/// early at `<|endoftext|>`, and returns the prompt and the new ids, as transformers'
/// `generate(do_sample=False, max_new_tokens=...)` does.
pub fn greedy(model: &Gpt2LmHeadModel, prompt: &[u32], max_new_tokens: usize) -> Result<Vec<u32>> {
    let mut generation = generate(model, prompt, &GenerationConfig::greedy(max_new_tokens))?;
    Ok(generation.sequences.swap_remove(0))
}

/// Greedy decoding *without* a cache: every step runs the whole sequence again and keeps the
/// last position's logits. The same tokens as [`generate`] with the cache (a test checks it),
/// quadratically more work. Stops at `cfg.eos_token_id` if it is set.
pub fn uncached_greedy(
    model: &Gpt2LmHeadModel,
    prompt: &[u32],
    cfg: &GenerationConfig,
) -> Result<Vec<u32>> {
    let max_length = cfg.validate(prompt.len(), model.config().n_positions)?;
    let device = model.transformer.device();
    let mut ids = prompt.to_vec();
    while ids.len() < max_length {
        let input = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?; // (1, T)
        let logits = model.forward_last(&input, None, None)?; // (1, V)
        let next = logits.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
        ids.push(next);
        if Some(next) == cfg.eos_token_id {
            break;
        }
    }
    Ok(ids)
}

/// A token the model may produce next, with its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NextTokenProb {
    /// The token's id (decode it with [`Gpt2Tokenizer::decode`](crate::Gpt2Tokenizer::decode)).
    pub id: u32,
    /// Its probability of coming next: the softmax of the last position's logits, in f32.
    pub prob: f32,
}

/// The `k` most likely tokens to follow `ids`, most likely first, with their probabilities:
/// one forward pass, the last position's logits, a softmax, and a sort (equal probabilities in
/// id order, so the result does not depend on the sort). `k` larger than the vocabulary gives
/// every token. An empty prompt is [`Error::EmptyPrompt`], `k` 0 is [`Error::ZeroSize`], and a
/// prompt longer than the context is [`Error::ContextOverflow`].
pub fn top_k_next_tokens(
    model: &Gpt2LmHeadModel,
    ids: &[u32],
    k: usize,
) -> Result<Vec<NextTokenProb>> {
    if ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    check_k(k)?;
    let n_positions = model.config().n_positions;
    if ids.len() > n_positions {
        return Err(Error::ContextOverflow {
            len: ids.len(),
            max: n_positions,
        });
    }
    let input = Tensor::new(ids, model.transformer.device())?.unsqueeze(0)?; // (1, T)
    let logits = model.forward_last(&input, None, None)?.squeeze(0)?; // (V)
    top_k_of_logits(&logits, k)
}

/// The `k` most likely tokens of one row of logits `(V)`, most likely first: softmax (in f32),
/// then [`top_k_next_tokens`]' order. For a caller that already has the logits.
pub fn top_k_of_logits(logits: &Tensor, k: usize) -> Result<Vec<NextTokenProb>> {
    check_k(k)?;
    let logits = logits.to_dtype(DType::F32)?.unsqueeze(0)?; // (1, V)
    let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&logits)?
        .squeeze(0)?
        .to_vec1()?;
    let k = k.min(probs.len());
    // Most likely first, ties by id: a total order, so the partial selection is deterministic.
    let rank = |a: &u32, b: &u32| {
        probs[*b as usize]
            .total_cmp(&probs[*a as usize])
            .then(a.cmp(b))
    };
    let mut order: Vec<u32> = (0..probs.len() as u32).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k, rank);
        order.truncate(k);
    }
    order.sort_unstable_by(rank);
    Ok(order
        .into_iter()
        .map(|id| NextTokenProb {
            id,
            prob: probs[id as usize],
        })
        .collect())
}

/// `k` 0 asks for nothing, which is surely a mistake rather than a wish for an empty list.
fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::ZeroSize {
            what: "k",
            why: "ask for at least one next token",
        });
    }
    Ok(())
}

/// How well the language model predicts a text: [`Gpt2LmHeadModel::score`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TextScore {
    /// The mean next-token cross-entropy in nats over the text's `tokens - 1` predictions:
    /// transformers' `model(ids, labels=ids).loss`.
    pub loss: f64,
    /// `exp(loss)`: as if the model chose uniformly among this many tokens at each step, so
    /// lower is better; GPT-2's vocabulary of 50257 is what a model that knows nothing scores.
    pub perplexity: f64,
    /// The text's tokens, the first of which is read but not predicted.
    pub tokens: usize,
}

impl Gpt2LmHeadModel {
    /// The loss and perplexity of the text `ids` under the model, as transformers computes
    /// `model(ids, labels=ids).loss` and the perplexity guide takes `exp` of it: every token
    /// after the first is predicted from those before it. Fewer than 2 tokens leave nothing to
    /// predict ([`Error::EmptyPrompt`] for none, [`Error::InvalidArgument`] for one); more than
    /// the context is [`Error::ContextOverflow`]. Dropout is on if the model is training, so
    /// score a model in inference mode.
    pub fn score(&self, ids: &[u32]) -> Result<TextScore> {
        match ids.len() {
            0 => return Err(Error::EmptyPrompt),
            1 => {
                return Err(Error::InvalidArgument(
                    "the text has 1 token and nothing after it to predict: score needs at least 2 tokens".into(),
                ))
            }
            _ => {}
        }
        let device = self.transformer.device();
        let input = Tensor::new(ids, device)?.unsqueeze(0)?; // (1, T)
        let labels = input.to_dtype(DType::I64)?; // (1, T): the text predicts itself, shifted inside
        let loss = self.forward_with_labels(&input, None, &labels)?.loss;
        let loss = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        Ok(TextScore {
            loss,
            perplexity: loss.exp(),
            tokens: ids.len(),
        })
    }
}
