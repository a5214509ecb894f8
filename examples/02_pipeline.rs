//! Chapter 2: text generation in one call, like the tutorial's
//! `pipeline("text-generation", model=...)(prompt, max_length=30, num_return_sequences=5)`.
//!
//! Five continuations of one prompt, sampled as one batch with transformers' sampling
//! defaults (top-k 50, temperature 1) from a fixed seed.
//!
//! ```text
//! cargo run --release --example 02_pipeline                      # openai-community/gpt2, or bundled offline
//! cargo run --release --example 02_pipeline -- --seed 7 --top-p 0.9 --temperature 0.8
//! cargo run --release --example 02_pipeline -- --model bundled --json
//! ```

use clap::Parser;
use gpt2_tutorial::cli::PromptArgs;
use gpt2_tutorial::generation::{self, GenerationConfig, DEFAULT_SEED, DEFAULT_TOP_K};
use serde::Serialize;

/// Sample several continuations of a prompt, as the text-generation pipeline does.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: PromptArgs,
    /// Length of each output in tokens, prompt included (transformers' max_length).
    #[arg(long, default_value_t = 30)]
    max_length: usize,
    /// How many continuations to sample.
    #[arg(long, default_value_t = 5)]
    num_return_sequences: usize,
    /// Divides the logits before sampling: below 1 is more conservative, above 1 wilder.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample among the k most likely tokens only; 0 turns top-k off, as in transformers.
    #[arg(long, default_value_t = DEFAULT_TOP_K)]
    top_k: usize,
    /// Sample among the most likely tokens whose probabilities add up to p; 1 keeps all.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampler, so that a run can be repeated exactly.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    prompt: String,
    config: GenerationConfig,
    outputs: Vec<Output>,
}

#[derive(Serialize)]
struct Output {
    generated_text: String,
    token_ids: Vec<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (loaded, model) = args.common.load_lm()?;

    // ANCHOR: pipeline
    let config = GenerationConfig {
        max_length: args.max_length,
        do_sample: true,
        temperature: args.temperature,
        top_k: (args.top_k > 0).then_some(args.top_k),
        top_p: args.top_p,
        seed: args.seed,
        num_return_sequences: args.num_return_sequences,
        ..GenerationConfig::default()
    };
    let prompt_ids = loaded.tokenizer.encode(&args.common.prompt)?;
    let generation = generation::generate(&model, &prompt_ids, &config)?;
    // ANCHOR_END: pipeline
    let outputs = generation
        .sequences
        .iter()
        .map(|ids| {
            Ok(Output {
                generated_text: loaded.tokenizer.decode(ids)?,
                token_ids: ids.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    if args.common.json {
        let report = Report {
            model: loaded.name,
            prompt: args.common.prompt,
            config,
            outputs,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Model: {}", loaded.name);
    println!(
        "Sampling {} continuations of {:?}, max_length {} (prompt included), temperature {}, top_k {}, top_p {}, seed {}\n",
        config.num_return_sequences,
        args.common.prompt,
        config.max_length,
        config.temperature,
        config.top_k.map_or("off".to_string(), |k| k.to_string()),
        config.top_p,
        config.seed
    );
    for (i, output) in outputs.iter().enumerate() {
        println!("Output {}: {}", i + 1, output.generated_text);
    }
    Ok(())
}
