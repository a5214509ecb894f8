//! Chapter 6: fine-tuning GPT-2 on jokes - the tutorial's loop, and the one that works.
//!
//! Packs `"JOKE: " + joke + "<|endoftext|>"` texts into sequences, trains on one sequence at a
//! time with an optimizer step every `--accumulate` sequences, records loss and learning rate,
//! draws them, saves checkpoints, then continues "JOKE:" and "My dog is cute and" (greedy, 20
//! tokens with the prompt, in the tutorial's recipe, as its `model.generate`). By default: the
//! bundled tiny model (random weights) on the bundled 283 jokes, a few minutes on two cores.
//!
//! ```text
//! cargo run --release --example 06_jokes_finetune                       # fixed recipe, bundled model and jokes
//! cargo run --release --example 06_jokes_finetune -- --recipe tutorial  # the tutorial's loop, in f16
//! cargo run --release --example 06_jokes_finetune -- --recipe tutorial --dtype f32
//! cargo run --release --example 06_jokes_finetune -- --model gpt2-xl --data hub --recipe tutorial
//! cargo run --release --example 06_jokes_finetune -- --resume target/jokes-finetune/checkpoint-10
//! ```

// A program that trains: zeroed memory is written at once (see "Using the crate", memory).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
    gpt2_tutorial::memory::ZeroFilledAllocator;

use std::path::PathBuf;

use clap::Parser;
use gpt2_tutorial::cli::{stop_on_ctrl_c, FinetuneArgs, Start};
use gpt2_tutorial::data::{Jokes, JokesSource};
use gpt2_tutorial::plot::write_svg;
use gpt2_tutorial::train::{
    bars_wanted, check_checkpoint, continue_prompt, FineTuneReport, FineTuneSettings, LmFineTuner,
    Recipe, ResumeChanges, RunDir,
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
    /// mixed-f16 or mixed-bf16 [default: the recipe's, f16 tutorial (its `model.half()`), f32
    /// fixed].
    #[arg(long, conflicts_with = "resume")]
    dtype: Option<String>,
    /// Epochs [default: the recipe's, 5]; with --resume, to extend the run.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps (with --resume: in all, to extend the run).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Sequences per optimizer step [default: the recipe's, 32 tutorial, 8 fixed].
    #[arg(long, conflicts_with = "resume")]
    accumulate: Option<usize>,
    /// The longest packed sequence in tokens [default: the recipe's, 500 tutorial, 128 fixed].
    #[arg(long, conflicts_with = "resume")]
    max_seq_len: Option<usize>,
    /// The peak learning rate [default: the recipe's, 3e-6 tutorial, 1e-4 fixed]; with
    /// --resume, from the next step on.
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps [default: the recipe's, 5000 tutorial, a tenth of the steps fixed].
    #[arg(long)]
    warmup: Option<usize>,
    /// Keep the jokes in file order (to compare with other implementations).
    #[arg(long, conflicts_with = "resume")]
    no_shuffle: bool,
    #[arg(long, default_value_t = 42, conflicts_with = "resume")]
    seed: u64,
    /// Save a checkpoint every N optimizer steps (one is always saved at the end).
    #[arg(long, conflicts_with = "resume")]
    save_steps: Option<usize>,
    /// Continue the run saved in this checkpoint directory, with its own model, data and
    /// packing (the flags that would change them are refused); --lr, --warmup, --max-steps
    /// and --epochs change its schedule from the next step on.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Where the checkpoints, the history and the figure go: one run's folder.
    #[arg(long, default_value = "target/jokes-finetune")]
    out: PathBuf,
    /// Let a fresh run replace another run's checkpoints and history in --out.
    #[arg(long)]
    overwrite: bool,
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
    /// What --resume may change: the schedule.
    fn schedule_changes(&self) -> ResumeChanges {
        ResumeChanges {
            lr: self.lr,
            warmup: self.warmup,
            max_steps: self.max_steps,
            epochs: self.epochs,
        }
    }

    /// The recipe's settings with the flags that were given.
    fn settings(&self) -> anyhow::Result<FineTuneSettings> {
        let mut s = FineTuneSettings::for_recipe(self.recipe);
        if let Some(dtype) = &self.dtype {
            s.set_dtype(dtype)?;
        }
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
    // The output folder first: a folder in use, or one that cannot be written, fails before
    // a model is loaded.
    let out = take_out_dir(&args)?;
    // A resumed run's model and tokenizer are the checkpoint's: --model is not loaded.
    let start = Start::new(args.resume.as_deref(), &args.common)?;
    let tokenizer = start.tokenizer()?;
    let model_name = start.name();

    // ANCHOR: data
    let source: JokesSource = args.common.data.parse()?;
    let jokes = Jokes::load(&source)?; // what --data names, or an error: never another dataset
    let tokenized = jokes.tokenize(&tokenizer)?;
    // ANCHOR_END: data

    let mut trainer = match start {
        Start::Resume(dir) => {
            let mut trainer = LmFineTuner::resume(&dir, tokenized, out, &args.common.device()?)?;
            trainer.change_schedule(args.schedule_changes())?;
            trainer
        }
        Start::Fresh(m) => LmFineTuner::new(&m.weights, &m.config, tokenized, args.settings()?)?
            .save_checkpoints(out, &m.tokenizer),
    };
    let settings = trainer.settings().clone();
    if !args.json {
        println!("Model: {model_name}");
        println!("Data: {jokes}");
        println!("{}", settings.describe(trainer.state().total_steps));
    }
    trainer = trainer
        .show_progress(bars_wanted(args.quiet || args.json))
        .stop_when(stop_on_ctrl_c()?);
    trainer.inject_nan_at_step(args.nan_at_step);
    // ANCHOR: run
    let report = trainer.run()?;
    let history = &report.history;
    history.write(&args.out)?;
    let figure = args.out.join("loss_lr.svg");
    if !history.steps.is_empty() {
        write_svg(&figure, &history.chart()?)?; // a run stopped before its first step has none
    }
    // ANCHOR_END: run
    if report.interrupted {
        stopped(&report, &args.out);
    }

    let weights = trainer.weights()?;
    let cfg = trainer.config().clone();
    let mut generated = Vec::new();
    for prompt in ["JOKE:", "My dog is cute and"] {
        let text = continue_prompt(&weights, &cfg, &tokenizer, prompt, &settings.generation())?;
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

/// The run's folder, taken for this run: a fresh run refuses another run's files there unless
/// --overwrite; a resumed one may find its own.
fn take_out_dir(args: &Args) -> anyhow::Result<RunDir> {
    let taken = match &args.resume {
        Some(dir) => {
            check_checkpoint(dir).and_then(|()| RunDir::resumed(&args.out, dir, args.overwrite))
        }
        None => RunDir::fresh(&args.out, args.overwrite),
    };
    taken.map_err(|e| match e {
        gpt2_tutorial::Error::OutputHoldsAnotherRun { .. } => anyhow::anyhow!(
            "{e}\n(--resume {}/checkpoint-N continues it; --overwrite starts afresh)",
            args.out.display()
        ),
        other => other.into(),
    })
}

/// A run stopped by Ctrl-C: where it is saved, how to go on, and exit status 130.
fn stopped(report: &FineTuneReport, out: &std::path::Path) -> ! {
    eprintln!(
        "Stopped after optimizer step {}; history in {}.",
        report.optimizer_steps,
        out.display()
    );
    match &report.checkpoint {
        Some(dir) => eprintln!(
            "Saved {0}. Continue with:\n  cargo run --release --example 06_jokes_finetune -- --resume {0} --out {1}",
            dir.display(),
            out.display()
        ),
        None => eprintln!("No checkpoint: the run stopped before its first optimizer step."),
    }
    std::process::exit(130)
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
