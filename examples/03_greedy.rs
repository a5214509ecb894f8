//! Chapter 3: greedy generation, one token at a time, taken apart.
//!
//! Tokenize the prompt (ids and attention mask), run one forward pass, look at the logits of
//! the last position, turn them into probabilities, pick the most likely token; then loop: the
//! tutorial's naive loop (re-tokenize the growing text, run the whole sequence every step)
//! against the KV-cached loop, with both texts, whether their token ids agree, and their times.
//! Also draws the top-10 next-token probabilities as an SVG (`--figure`, by default under
//! `target/figures/`; the book's copy is made by `scripts/book_figures.sh`).
//!
//! ```text
//! cargo run --release --example 03_greedy                        # openai-community/gpt2, or bundled offline
//! cargo run --release --example 03_greedy -- --model gpt2-xl     # the tutorial's model (6 GB download)
//! cargo run --release --example 03_greedy -- --model bundled --json
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use gpt2_tutorial::cli::PromptArgs;
use gpt2_tutorial::generation::{GenerationConfig, Generator};
use gpt2_tutorial::plot::write_svg;
use gpt2_tutorial::stream::TokenOutputStream;
use gpt2_tutorial::tutorial::greedy_loops::{compare_loops, LoopComparison};
use gpt2_tutorial::tutorial::next_token::{format_prob, next_token, NextToken};
use gpt2_tutorial::tutorial::top_tokens::top_tokens_chart;
use gpt2_tutorial::{Gpt2LmHeadModel, LoadedModel};
use serde::Serialize;

/// Greedy generation step by step: one forward pass, softmax, the naive and the cached loop.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: PromptArgs,
    /// How many tokens each loop adds (the tutorial's function uses 20).
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    /// Where to write the top-10 chart [default: target/figures/03_top10-<model>.svg].
    #[arg(long)]
    figure: Option<PathBuf>,
}

/// The `--json` output.
#[derive(Serialize)]
struct Report {
    model: String,
    prompt: String,
    input_ids: Vec<u32>,
    logits_shape: Vec<usize>,
    next_token_id: u32,
    next_token_text: String,
    next_token_prob: f32,
    generated_ids: Vec<u32>,
    generated_text: String,
    naive_generated_ids: Vec<u32>,
    seconds_cached: f64,
    seconds_naive: f64,
}

fn default_figure(model_name: &str) -> PathBuf {
    let last = model_name.trim_end_matches('/').rsplit('/').next();
    let slug: String = last
        .unwrap_or(model_name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    Path::new("target/figures").join(format!("03_top10-{slug}.svg"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (loaded, model) = args.common.load_lm()?;
    let tokenizer = &loaded.tokenizer;

    // ANCHOR: one_step
    let step = next_token(&model, tokenizer, &args.common.prompt, 10)?;
    // ANCHOR_END: one_step
    let figure = args
        .figure
        .clone()
        .unwrap_or_else(|| default_figure(&loaded.name));
    let title = format!(
        "Top-10 next tokens after {:?} ({})",
        args.common.prompt, loaded.name
    );
    write_svg(&figure, &top_tokens_chart(&title, &step.top)?)?;

    // ANCHOR: loops
    let loops = compare_loops(&model, tokenizer, &args.common.prompt, args.max_new_tokens)?;
    // ANCHOR_END: loops

    if args.common.json {
        let report = Report {
            model: loaded.name,
            prompt: args.common.prompt,
            input_ids: step.input_ids,
            logits_shape: step.logits_shape,
            next_token_id: step.next.id,
            next_token_text: step.next.text,
            next_token_prob: step.next.prob,
            generated_ids: loops.cached.ids,
            generated_text: loops.cached.text,
            naive_generated_ids: loops.naive.ids,
            seconds_cached: loops.cached.seconds,
            seconds_naive: loops.naive.seconds,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Model: {}", loaded.name);
    println!("Prompt: {:?}\n", args.common.prompt);
    print_one_step(&step, &figure);
    print_loops(&loops, args.max_new_tokens);
    stream(&model, &loaded, &args)?;
    Ok(())
}

fn print_one_step(step: &NextToken, figure: &Path) {
    println!("1. Tokenize");
    println!("   input_ids:      {:?}", step.input_ids);
    println!("   attention_mask: {:?}", step.attention_mask);
    println!("   tokens:         {:?}\n", step.tokens);
    println!("2. One forward pass");
    println!(
        "   logits shape: {:?}  (batch, tokens, vocabulary: a score for every possible next token at every position)\n",
        step.logits_shape
    );
    println!("3. The last position's logits: the scores for what follows the whole prompt");
    println!("   logits[0, -1, :3] = {:.4?}\n", step.last_logits);
    println!("4. Softmax turns the scores into probabilities; the most likely next token:");
    println!(
        "   {} {:?} with p = {}",
        step.next.id,
        step.next.text,
        format_prob(step.next.prob)
    );
    println!("   top 10 (chart: {}):", figure.display());
    for t in &step.top {
        let text = format!("{:?}", t.text);
        println!("     {:>6} {text:<16} {}", t.id, format_prob(t.prob));
    }
    println!();
}

fn print_loops(loops: &LoopComparison, max_new_tokens: usize) {
    println!("5. Greedy generation, up to {max_new_tokens} new tokens, two ways");
    println!("   naive loop (re-tokenize the text, run the whole sequence every step):");
    println!("     {:?}", loops.naive.text);
    println!("   cached loop (keep the ids; the KV cache lets each step run only the new token):");
    println!("     {:?}", loops.cached.text);
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!(
        "   texts agree: {}; token ids agree: {}",
        yes_no(loops.texts_agree()),
        yes_no(loops.ids_agree())
    );
    if let Some(d) = &loops.divergence {
        let show = |pieces: &[(u32, String)]| {
            pieces
                .iter()
                .map(|(id, text)| format!("{text:?} ({id})"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "   The ids part at position {}: the cached loop has {}, while re-tokenizing the naive\n   loop's text gives {}.",
            d.position,
            show(&d.cached),
            show(&d.naive)
        );
        println!(
            "   Decoding tokens to text and encoding that text again need not give the same tokens"
        );
        println!("   back: byte-level BPE merges neighbouring pieces into one token where its vocabulary has");
        println!("   one. So the naive loop's model saw other tokens than it had chosen, and it may continue");
        println!("   differently from then on. The cached loop never leaves token ids.");
    }
    println!("   time, naive loop:  {:.4} s", loops.naive.seconds);
    println!("   time, cached loop: {:.4} s", loops.cached.seconds);
    println!("   speed-up: {:.1}x\n", loops.speed_up());
}

/// The cached loop once more, printing each piece of text as soon as its characters are whole.
fn stream(model: &Gpt2LmHeadModel, loaded: &LoadedModel, args: &Args) -> anyhow::Result<()> {
    println!("6. The cached loop again, streamed piece by piece as characters complete:");
    print!("   ");
    let prompt_ids = loaded.tokenizer.encode(&args.common.prompt)?;
    let mut stream = TokenOutputStream::new(&loaded.tokenizer);
    let mut out = std::io::stdout();
    for &id in &prompt_ids {
        if let Some(text) = stream.next_token(id)? {
            write!(out, "{text}")?;
        }
    }
    let config = GenerationConfig::greedy(args.max_new_tokens);
    let mut generator = Generator::new(model, &prompt_ids, &config)?;
    // ANCHOR: stream
    while let Some(tokens) = generator.step()? {
        if let Some(text) = stream.next_token(tokens[0])? {
            write!(out, "{text}")?;
            out.flush()?;
        }
    }
    // ANCHOR_END: stream
    if let Some(rest) = stream.finish()? {
        write!(out, "{rest}")?;
    }
    println!();
    Ok(())
}
