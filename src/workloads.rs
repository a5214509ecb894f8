//! The benchmark's workloads, shared by `examples/bench.rs` (which times them) and the tests
//! (which check that they compute what they claim, never how fast).
//!
//! Each workload is the Rust twin of one figure in `scripts/reference/bench_transformers.py`:
//! greedy decoding with the KV cache (transformers' `generate`), the naive loop that re-reads the
//! whole sequence every step (the tutorial's first generation loop), one forward pass over a long
//! input (prefill), and one training step (forward, backward, AdamW: [`crate::train`]). The models are random
//! GPT-2s of the released sizes, written by the crate's own initialisation, so nothing needs the
//! Hub and both sides read the very same `model.safetensors`.

use std::path::Path;

use candle_core::Device;

use crate::generation::{self, GenerationConfig};
use crate::{Error, Gpt2Config, Gpt2LmHeadModel, Result, Weights};

/// New tokens per decoding run.
pub const DECODE_TOKENS: usize = 64;
/// Length of the prefill and training inputs.
pub const LONG_TOKENS: usize = 500;
/// Seed of the random benchmark weights.
pub const SEED: u64 = 2019;

/// Writes a random GPT-2 of shape `cfg` into `dir` (`config.json` + `model.safetensors`) unless
/// the directory already holds one with this very config. Returns whether it wrote anything.
pub fn prepare_model(dir: &Path, cfg: &Gpt2Config, seed: u64) -> Result<bool> {
    let config = dir.join("config.json");
    let weights = dir.join("model.safetensors");
    if weights.exists() && Gpt2Config::from_file(&config).ok().as_ref() == Some(cfg) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    Weights::init(cfg, seed, &Device::Cpu)?.save(&weights)?;
    std::fs::write(&config, cfg.to_json()).map_err(|e| Error::io(&config, e))?;
    Ok(true)
}

/// A deterministic long input: token `i` is `(1009 i + 17) mod V`, which the Python side
/// computes the same way. Random weights make the content irrelevant; only the length counts.
pub fn long_input(len: usize, vocab_size: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((1009 * i + 17) % vocab_size) as u32)
        .collect()
}

/// Greedy decoding of exactly `max_new_tokens` new tokens: no end-of-text stop (random weights
/// may well pick `<|endoftext|>`, and a benchmark must do the same work every run).
fn exact_greedy(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        eos_token_id: None,
        ..GenerationConfig::greedy(max_new_tokens)
    }
}

/// Greedy decoding with the KV cache, exactly `max_new_tokens` new tokens: the library's
/// [`generation::generate`] with no end-of-text stop.
pub fn cached_greedy(
    model: &Gpt2LmHeadModel,
    prompt: &[u32],
    max_new_tokens: usize,
) -> Result<Vec<u32>> {
    let cfg = exact_greedy(max_new_tokens);
    Ok(generation::generate(model, prompt, &cfg)?
        .sequences
        .swap_remove(0))
}

/// Greedy decoding *without* a cache, exactly `max_new_tokens` new tokens (no end-of-text stop,
/// as [`cached_greedy`]).
pub fn naive_greedy(
    model: &Gpt2LmHeadModel,
    prompt: &[u32],
    max_new_tokens: usize,
) -> Result<Vec<u32>> {
    generation::uncached_greedy(model, prompt, &exact_greedy(max_new_tokens))
}

/// The peak resident memory of this process so far (`VmHWM` in `/proc/self/status`), in bytes.
pub fn peak_rss_bytes() -> Result<u64> {
    let path = Path::new("/proc/self/status");
    let status = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| Error::InvalidArgument("no VmHWM line in /proc/self/status".into()))
}
