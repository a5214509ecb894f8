//! Chapter 6: fine-tuning GPT-2 on jokes - the tutorial's loop, and the one that works.
//!
//! Packs `"JOKE: " + joke + "<|endoftext|>"` texts into sequences, trains on one sequence at a
//! time with an optimizer step every `--accumulate` sequences, records loss and learning rate,
//! draws them, saves checkpoints, then continues "JOKE:" and "My dog is cute and" as the
//! tutorial does. By default: the bundled tiny model (random weights) on the bundled 283 jokes,
//! a few minutes on two cores.
//!
//! ```text
//! cargo run --release --example 06_jokes_finetune                       # fixed recipe, bundled model and jokes
//! cargo run --release --example 06_jokes_finetune -- --recipe tutorial  # the tutorial's numbers
//! cargo run --release --example 06_jokes_finetune -- --model gpt2-xl --data hub --recipe tutorial --dtype f16
//! cargo run --release --example 06_jokes_finetune -- --resume target/jokes-finetune/checkpoint-10
//! ```

// A program that trains: zeroed memory is written at once (see "Using the crate", memory).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
    gpt2_tutorial::memory::ZeroFilledAllocator;

use std::path::PathBuf;

use clap::Parser;
use gpt2_tutorial::cli::{noted, FinetuneArgs};
use gpt2_tutorial::data::{Jokes, JokesSource};
use gpt2_tutorial::plot::write_svg;
use gpt2_tutorial::train::{
    bars_wanted, continue_prompt, FineTuneReport, FineTuneSettings, LmFineTuner, Recipe,
};
use serde::Serialize;

/// Fine-tune GPT-2 on jokes with the tutorial's loop.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: FinetuneArgs,
    /// `tutorial`: every choice of the original; `fixed`: the loop that works.
    #[arg(long, value_enum, default_value_t = Recipe::Fixed, conflicts_with = "resume")]
    recipe: Recipe,
    /// f32, f16 or bf16 (pure half in the tutorial recipe, mixed in the fixed one),
    /// mixed-f16 or mixed-bf16.
    #[arg(long, default_value = "f32", conflicts_with = "resume")]
    dtype: String,
    #[arg(long, conflicts_with = "resume")]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long, conflicts_with = "resume")]
    max_steps: Option<usize>,
    /// Sequences per optimizer step [default: the recipe's, 32 tutorial, 8 fixed].
    #[arg(long, conflicts_with = "resume")]
    accumulate: Option<usize>,
    /// The longest packed sequence in tokens [default: the recipe's, 500 tutorial, 128 fixed].
    #[arg(long, conflicts_with = "resume")]
    max_seq_len: Option<usize>,
    #[arg(long, conflicts_with = "resume")]
    lr: Option<f64>,
    /// Warm-up steps [default: the recipe's, 5000 tutorial, a tenth of the steps fixed].
    #[arg(long, conflicts_with = "resume")]
    warmup: Option<usize>,
    /// Keep the jokes in file order (to compare with other implementations).
    #[arg(long, conflicts_with = "resume")]
    no_shuffle: bool,
    #[arg(long, default_value_t = 42, conflicts_with = "resume")]
    seed: u64,
    /// Save a checkpoint every N optimizer steps (one is always saved at the end).
    #[arg(long, conflicts_with = "resume")]
    save_steps: Option<usize>,
    /// Continue the run saved in this checkpoint directory, with its own settings and model
    /// (the flags that would change them are refused).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where the checkpoints, the history and the figure go.
    #[arg(long, default_value = "target/jokes-finetune")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Testing the guard against divergence: make this optimizer step's gradients NaN.
    #[arg(long, hide = true)]
    nan_at_step: Option<usize>,
}

impl Args {
    /// The recipe's settings with the flags that were given.
    fn settings(&self) -> anyhow::Result<FineTuneSettings> {
        let mut s = FineTuneSettings::for_recipe(self.recipe);
        s.set_dtype(&self.dtype)?;
        s.epochs = self.epochs.unwrap_or(s.epochs);
        s.accumulate = self.accumulate.unwrap_or(s.accumulate);
        s.max_seq_len = self.max_seq_len.unwrap_or(s.max_seq_len);
        s.lr = self.lr.unwrap_or(s.lr);
        s.warmup = self.warmup.or(s.warmup);
        s.shuffle = !self.no_shuffle;
        s.seed = self.seed;
        s.max_steps = self.max_steps;
        s.save_steps = self.save_steps;
        Ok(s)
    }
}

/// The `--json` output.
#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    data: &'a str,
    recipe: String,
    settings: &'a FineTuneSettings,
    jokes_read: usize,
    jokes_skipped: usize,
    sequences: usize,
    optimizer_steps: usize,
    losses: Vec<f64>,
    mean_losses: Vec<f64>,
    lrs: Vec<f64>,
    jokes_per_second: f64,
    untrained_sequences: usize,
    untrained_jokes: usize,
    checkpoint: Option<PathBuf>,
    generated: Vec<Generated>,
}

#[derive(Serialize)]
struct Generated {
    prompt: &'static str,
    text: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let loaded = args.common.load()?;

    // ANCHOR: data
    let source: JokesSource = args.common.data.parse()?;
    let jokes = noted(Jokes::load_or_bundled(&source)?);
    let tokenized = jokes.tokenize(&loaded.tokenizer)?;
    // ANCHOR_END: data

    // ANCHOR: train
    let mut trainer = match &args.resume {
        Some(dir) => LmFineTuner::resume(dir, tokenized, &args.out, &args.common.device()?)?,
        None => LmFineTuner::new(&loaded.weights, &loaded.config, tokenized, args.settings()?)?
            .save_checkpoints(&args.out, &loaded.tokenizer)?,
    };
    // ANCHOR_END: train
    // The trainer keeps its own trainable copy: the loaded weights would only hold a model's
    // worth of memory through the run.
    drop(loaded.weights);
    let settings = trainer.settings().clone();
    let model_name = match &args.resume {
        Some(dir) => format!("checkpoint {}", dir.display()),
        None => loaded.name.clone(),
    };
    if !args.json {
        println!("Model: {model_name}");
        println!("Data: {jokes}");
        println!("{}", settings.describe(trainer.state().total_steps));
    }
    trainer = trainer.show_progress(bars_wanted(args.quiet));
    trainer.inject_nan_at_step(args.nan_at_step);
    // ANCHOR: run
    let report = trainer.run()?;
    let history = &report.history;
    history.write(&args.out)?;
    let figure = args.out.join("loss_lr.svg");
    write_svg(&figure, &history.chart()?)?;
    // ANCHOR_END: run

    let weights = trainer.weights()?;
    let cfg = trainer.config().clone();
    let mut generated = Vec::new();
    for prompt in ["JOKE:", "My dog is cute and"] {
        let text = continue_prompt(&weights, &cfg, &loaded.tokenizer, prompt, 40, settings.seed)?;
        generated.push(Generated { prompt, text });
    }

    if args.json {
        let report_json = Report {
            model: &model_name,
            data: &jokes.origin,
            recipe: settings.recipe.to_string(),
            settings: &settings,
            jokes_read: jokes.len(),
            jokes_skipped: jokes.skipped + report.texts_too_long,
            sequences: report.sequences,
            optimizer_steps: report.optimizer_steps,
            losses: history.steps.iter().map(|r| r.loss).collect(),
            mean_losses: history.steps.iter().map(|r| r.mean_loss).collect(),
            lrs: history.steps.iter().map(|r| r.lr).collect(),
            jokes_per_second: report.texts_per_second,
            untrained_sequences: report.untrained_sequences,
            untrained_jokes: report.untrained_texts,
            checkpoint: report.checkpoint.clone(),
            generated,
        };
        println!("{}", serde_json::to_string_pretty(&report_json)?);
        return Ok(());
    }
    print_summary(&report);
    println!(
        "History: {}, figure: {}",
        args.out.join("history.csv").display(),
        figure.display()
    );
    for g in &generated {
        println!("{:?} → {:?}", g.prompt, g.text);
    }
    Ok(())
}

fn print_summary(report: &FineTuneReport) {
    for e in &report.history.epochs {
        println!(
            "epoch {}: {} sequences, {} optimizer steps, lr {:.3e}",
            e.epoch + 1,
            e.sequences,
            e.optimizer_steps,
            e.lr
        );
    }
    println!(
        "{} sequences through forward and backward, {} optimizer steps; {} jokes in {:.1} s ({:.1} jokes/s)",
        report.sequences,
        report.optimizer_steps,
        report.texts_seen,
        report.seconds,
        report.texts_per_second
    );
    if report.texts_too_long > 0 {
        let too_long = report.texts_too_long;
        println!("Skipped {too_long} jokes longer than the longest sequence");
    }
    if report.untrained_sequences + report.untrained_texts > 0 {
        println!(
            "Never trained (the tutorial's loop drops them): {} sequences of an unfinished step, {} jokes in the packing buffer",
            report.untrained_sequences, report.untrained_texts
        );
    }
    if let Some(dir) = &report.checkpoint {
        println!("Checkpoint: {}", dir.display());
    }
}
