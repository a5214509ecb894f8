//! Chapter 7: sentiment classification of movie reviews with a Trainer - the tutorial's
//! `GPT2ForSequenceClassification` + `TrainingArguments` + `Trainer` on IMDB, then
//! `get_sentiment("I hate this movie!")`.
//!
//! Tokenizes the reviews as the tutorial does (pad = eos, truncation, padding to
//! `--max-length`), adds a new `score` head to the checkpoint, trains with the tutorial's
//! arguments (or the flags'), evaluates accuracy after every epoch, saves `checkpoint-N/` after
//! every epoch, prints transformers' `TrainOutput` and the evaluation, classifies two sentences
//! and draws the training loss and the eval accuracy. By default: the bundled tiny model on the
//! bundled 240 + 80 sentences with the tutorial's arguments.
//!
//! ```text
//! cargo run --release --example 07_imdb_finetune                   # the tutorial's arguments, bundled model and data
//! cargo run --release --example 07_imdb_finetune -- --lr 1e-3 --epochs 6 --padding longest --max-length 64   # the book's run
//! cargo run --release --example 07_imdb_finetune -- --model openai-community/gpt2 --data hub --train-limit 1000 --eval-limit 500
//! cargo run --release --example 07_imdb_finetune -- --resume latest   # continue from the newest checkpoint under --out
//! cargo run --release --example 07_imdb_finetune -- --dtype f16 --max-steps 3 --logging-steps 1   # the tutorial's model.half(): NaN at step 2
//! ```

// A program that trains: zeroed memory is written at once (see "Using the crate", memory).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
    gpt2_tutorial::memory::ZeroFilledAllocator;

use std::path::{Path, PathBuf};

use clap::Parser;
use gpt2_tutorial::cli::{stop_on_ctrl_c, FinetuneArgs, Start};
use gpt2_tutorial::data::{tokenize_truncated, Imdb, ImdbSource, Padding, Split, IMDB_LABEL_NAMES};
use gpt2_tutorial::heads::{for_sequence_classification, HEAD_SEED};
use gpt2_tutorial::plot::{train_eval_chart, write_svg};
use gpt2_tutorial::train::{
    bars_wanted, check_checkpoint, get_sentiment, latest_checkpoint, Collator, EvalOutput,
    Interval, LabelledRows, Logged, ResumeChanges, RunDir, Sentiment, TrainOutput, Trainer,
    TrainerState, TrainingArguments,
};
use gpt2_tutorial::LoadedModel;
use serde::Serialize;
use std::fmt;

/// Fine-tune GPT-2 to classify movie reviews, with transformers' Trainer.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: FinetuneArgs,
    /// Training epochs (the tutorial's num_train_epochs) [default: 3]; with --resume, in all,
    /// to extend the run.
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many optimizer steps (with --resume: in all, to extend the run).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Pad every row to --max-length (the tutorial) or each batch to its longest row.
    #[arg(long, value_enum, default_value_t = Padding::MaxLength, conflicts_with = "resume")]
    padding: Padding,
    /// Tokens per review at most (longer ones are cut); GPT-2's context is 1,024.
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// f32, mixed-f16, mixed-bf16, or f16/bf16 (pure half, the tutorial's `.half()`).
    #[arg(long, default_value = "f32", conflicts_with = "resume")]
    dtype: String,
    /// Training rows per batch (per_device_train_batch_size).
    #[arg(long, default_value_t = 16, conflicts_with = "resume")]
    batch_size: usize,
    /// Evaluation rows per batch (per_device_eval_batch_size).
    #[arg(long, default_value_t = 64, conflicts_with = "resume")]
    eval_batch_size: usize,
    /// Batches per optimizer step (gradient_accumulation_steps).
    #[arg(long, default_value_t = 1, conflicts_with = "resume")]
    accumulate: usize,
    /// The peak learning rate (the tutorial's 2e-5) [default: 2e-5]; with --resume, from the
    /// next step on.
    #[arg(long)]
    lr: Option<f64>,
    /// When to evaluate during training: `epoch` (this crate's choice), `no` (transformers'
    /// default, what the tutorial ran) or every N optimizer steps.
    #[arg(long, default_value = "epoch", conflicts_with = "resume")]
    eval_strategy: Interval,
    /// When to save a checkpoint: `epoch`, `no` or every N optimizer steps (transformers'
    /// default is 500).
    #[arg(long, default_value = "epoch", conflicts_with = "resume")]
    save_strategy: Interval,
    /// Keep the training rows in file order (to compare with other implementations).
    #[arg(long, conflicts_with = "resume")]
    no_shuffle: bool,
    /// Train on this many rows of the training split, drawn with --seed.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on this many rows of the test split, drawn with --seed.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Print the mean training loss every N optimizer steps.
    #[arg(long, default_value_t = 500, conflicts_with = "resume")]
    logging_steps: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue from this checkpoint directory, or `latest` for the newest one under --out,
    /// with its own model, data and batches (the flags that would change them are refused);
    /// --lr, --epochs and --max-steps change its schedule from the next step on.
    #[arg(long)]
    resume: Option<String>,
    /// Where the checkpoints, the history and the figure go (TrainingArguments' output_dir):
    /// one run's folder.
    #[arg(long, default_value = "target/imdb-finetune")]
    out: PathBuf,
    /// Let a fresh run replace another run's checkpoints and history in --out
    /// (overwrite_output_dir).
    #[arg(long)]
    overwrite: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// What --resume may change: the schedule.
    fn schedule_changes(&self) -> ResumeChanges {
        ResumeChanges {
            lr: self.lr,
            epochs: self.epochs,
            max_steps: self.max_steps,
            warmup: None,
        }
    }
}

/// The `--json` output.
#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    data: String,
    num_labels: usize,
    new_weights: Vec<String>,
    args: &'a TrainingArguments,
    padding: Padding,
    max_length: usize,
    train_output: &'a TrainOutput,
    eval: &'a EvalOutput,
    /// The loss of every optimizer step (the mean over its batch).
    losses: Vec<f64>,
    eval_history: &'a [gpt2_tutorial::train::EvalLog],
    sentiments: &'a [Sentiment],
    checkpoint: Option<PathBuf>,
}

/// The sentences the tutorial asks about, and one it could have.
const SENTENCES: [&str; 2] = ["I hate this movie!", "I love this movie!"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = args.common.device()?;
    // The output folder first: a folder in use, or one that cannot be written, fails before
    // a model is loaded.
    let resume = resume_dir(&args)?;
    let out = take_out_dir(&args, resume.as_deref())?;
    // A resumed run's model and tokenizer are the checkpoint's: --model is not loaded.
    let start = Start::new(resume.as_deref(), &args.common)?;
    let tokenizer = start.tokenizer()?;

    // ANCHOR: data
    let source: ImdbSource = args.common.data.parse()?;
    let imdb = Imdb::load(&source)?; // what --data names, or an error: never another dataset
    let limit = |split: &Split, n: Option<usize>| {
        n.map_or(Ok(split.clone()), |n| split.subset(n, args.seed))
    };
    let (train_split, test_split) = (
        limit(&imdb.train, args.train_limit)?,
        limit(&imdb.test, args.eval_limit)?,
    );
    // ANCHOR_END: data

    // ANCHOR: tokenize
    // The tutorial's tokenizer: GPT-2's one special token, <|endoftext|> (50256), as its
    // bos_token, its eos_token and - `tokenizer.pad_token = tokenizer.eos_token`, since GPT-2
    // has no padding token - its pad_token.
    let special_tokens = SpecialTokens {
        bos_token: "<|endoftext|>",
        eos_token: "<|endoftext|>",
        pad_token: "<|endoftext|>",
    };
    let pad_token = special_tokens.pad_token;
    let pad_token_id = tokenizer // 50256
        .token_to_id(pad_token)
        .ok_or_else(|| anyhow::anyhow!("the tokenizer has no pad token {pad_token:?}"))?;
    // `tokenizer(text, padding="max_length", truncation=True)`: cut at max_length here, padded
    // with pad_token_id when batched.
    if let Start::Fresh(m) = &start {
        if args.max_length > m.config.n_positions {
            anyhow::bail!(
                "--max-length {} is longer than the model's context ({} positions): use at most {1}",
                args.max_length,
                m.config.n_positions
            );
        }
    }
    let tokenize = |split: &Split| -> anyhow::Result<LabelledRows> {
        Ok(LabelledRows {
            ids: tokenize_truncated(&tokenizer, &split.texts, args.max_length)?,
            labels: split.labels.clone(),
        })
    };
    let (train_rows, test_rows) = (tokenize(&train_split)?, tokenize(&test_split)?);
    // ANCHOR_END: tokenize

    let model_name = start.name();
    let (mut trainer, new_weights) = match &start {
        Start::Resume(dir) => {
            let mut trainer = Trainer::resume(dir, &train_rows, Some(&test_rows), &device)?;
            trainer.change_schedule(args.schedule_changes())?;
            (trainer, Vec::new())
        }
        Start::Fresh(m) => fresh_trainer(
            &args,
            m,
            imdb.num_labels,
            pad_token_id,
            &train_rows,
            &test_rows,
        )?,
    };
    // The trainer keeps its own trainable copy: the loaded weights would only hold a model's
    // worth of memory through the run.
    drop(start);
    // A resumed run writes where this command says, with or without bars as it says.
    trainer.set_output(out, bars_wanted(args.quiet || args.json));
    trainer.stop_when(stop_on_ctrl_c()?);

    if !args.json {
        println!("Model: {model_name}");
        println!("Data: {imdb}");
        println!(
            "Training on {} rows, evaluating on {} ({} padding, max_length {})",
            train_rows.len(),
            test_rows.len(),
            trainer.state().collator.padding,
            trainer.state().collator.max_length
        );
        println!("Tokenizer: {special_tokens}");
        if resume.is_none() {
            println!("Newly initialized: {new_weights:?}");
        }
        let a = &trainer.state().args;
        println!(
            "{} optimizer steps: lr {:e} decaying linearly to 0, batch {}, weight decay {}, grad norm clipped at {:?}, {}",
            trainer.state().max_steps,
            a.learning_rate,
            a.per_device_train_batch_size,
            a.weight_decay,
            a.max_grad_norm.unwrap_or(f64::INFINITY),
            a.precision
        );
    }
    let json = args.json;
    // ANCHOR: train
    let train_output = trainer
        .train_with(&mut |logged| {
            if !json {
                print_logged(logged);
            }
        })
        .map_err(|e| explain_pure_f16(e, &trainer.state().args.precision))?;
    if trainer.interrupted() {
        write_history(trainer.state(), &args.out)?;
        stopped(&trainer, &args.out);
    }
    let eval = trainer.evaluate()?;
    let model = trainer.model()?;
    let sentiments = SENTENCES
        .iter()
        .map(|s| get_sentiment(&model, &tokenizer, s, &IMDB_LABEL_NAMES))
        .collect::<gpt2_tutorial::Result<Vec<_>>>()?;
    // ANCHOR_END: train

    let state = trainer.state();
    let (history, figure) = write_history(state, &args.out)?;
    let losses: Vec<f64> = state.log_history.iter().map(|l| l.loss).collect();

    if json {
        let report = Report {
            model: &model_name,
            data: imdb.to_string(),
            num_labels: imdb.num_labels,
            new_weights,
            args: &state.args,
            padding: state.collator.padding,
            max_length: state.collator.max_length,
            train_output: &train_output,
            eval: &eval,
            losses,
            eval_history: &state.eval_history,
            sentiments: &sentiments,
            checkpoint: latest_checkpoint(&args.out),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{train_output}");
    println!("{eval}");
    for s in &sentiments {
        println!(
            "get_sentiment({:?}) = {:?}  (logits {:?})",
            s.text, s.sentiment, s.logits
        );
    }
    println!(
        "History: {}, figure: {}",
        history.display(),
        figure.display()
    );
    Ok(())
}

/// The history (`history.json`: each step's loss, each evaluation's accuracy and loss, as
/// `[losses, accuracies, eval_losses]` of `(step, value)` pairs) and its figure.
fn write_history(state: &TrainerState, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let losses: Vec<(usize, f64)> = state.log_history.iter().map(|l| (l.step, l.loss)).collect();
    let accuracy: Vec<(usize, f64)> = state
        .eval_history
        .iter()
        .filter_map(|e| Some((e.step, e.eval_accuracy?)))
        .collect();
    let eval_losses: Vec<(usize, f64)> = state
        .eval_history
        .iter()
        .map(|e| (e.step, e.eval_loss))
        .collect();
    let history = out.join("history.json");
    std::fs::write(
        &history,
        serde_json::to_string_pretty(&(&losses, &accuracy, &eval_losses))?,
    )?;
    let figure = out.join("loss_accuracy.svg");
    let title = "Training and eval loss, eval accuracy";
    let svg = train_eval_chart(title, &losses, &eval_losses, &accuracy)?;
    write_svg(&figure, &svg)?;
    Ok((history, figure))
}

/// The run's folder, taken for this run: a fresh run refuses another run's files there unless
/// --overwrite; a resumed one may find its own.
fn take_out_dir(args: &Args, resume: Option<&Path>) -> anyhow::Result<RunDir> {
    let taken = match resume {
        Some(dir) => {
            check_checkpoint(dir).and_then(|()| RunDir::resumed(&args.out, dir, args.overwrite))
        }
        None => RunDir::fresh(&args.out, args.overwrite),
    };
    taken.map_err(|e| match e {
        gpt2_tutorial::Error::OutputHoldsAnotherRun { .. } => {
            anyhow::anyhow!("{e}\n(--resume latest continues it; --overwrite starts afresh)")
        }
        other => other.into(),
    })
}

/// `--resume`'s checkpoint: the directory given, or with `latest` the newest under --out.
fn resume_dir(args: &Args) -> anyhow::Result<Option<PathBuf>> {
    Ok(match args.resume.as_deref() {
        Some("latest") => Some(latest_checkpoint(&args.out).ok_or_else(|| {
            anyhow::anyhow!(
                "--resume latest: no checkpoint-N directory under {}",
                args.out.display()
            )
        })?),
        other => other.map(PathBuf::from),
    })
}

/// A run stopped by Ctrl-C: where it is saved, how to go on, and exit status 130.
fn stopped(trainer: &Trainer, out: &Path) -> ! {
    let step = trainer.state().log_history.last().map_or(0, |l| l.step);
    eprintln!(
        "Stopped after optimizer step {step}; history in {}.",
        out.display()
    );
    match trainer.last_checkpoint() {
        Some(dir) => eprintln!(
            "Saved {0}. Continue with:\n  cargo run --release --example 07_imdb_finetune -- --resume {0} --out {1}",
            dir.display(),
            out.display()
        ),
        None => eprintln!("No checkpoint was saved (--save-strategy no, or no optimizer step yet)."),
    }
    std::process::exit(130)
}

/// A fresh run's Trainer: the classifier on the loaded checkpoint, the collator, the
/// arguments; and which weights are new.
fn fresh_trainer<'a>(
    args: &Args,
    loaded: &LoadedModel,
    num_labels: usize,
    pad_token_id: u32,
    train_rows: &'a LabelledRows,
    test_rows: &'a LabelledRows,
) -> anyhow::Result<(Trainer<'a>, Vec<String>)> {
    // ANCHOR: model
    // GPT2ForSequenceClassification.from_pretrained(model, num_labels=imdb.num_labels): a new
    // `score` unless the checkpoint has one; then `model.config.pad_token_id =
    // tokenizer.pad_token_id` (eos).
    let (weights, mut cfg, report) =
        for_sequence_classification(&loaded.weights, &loaded.config, num_labels, HEAD_SEED)?;
    let pad_token_id = *cfg.pad_token_id.get_or_insert(pad_token_id);
    // ANCHOR_END: model
    // DataCollatorWithPadding(tokenizer): batches padded with the model's pad token (eos, unless
    // a classification checkpoint brings its own).
    let collator = Collator {
        padding: args.padding,
        max_length: args.max_length,
        pad_token_id,
    };

    // ANCHOR: arguments
    let training_args = TrainingArguments {
        num_train_epochs: args.epochs.unwrap_or(3),
        max_steps: args.max_steps,
        learning_rate: args.lr.unwrap_or(2e-5),
        per_device_train_batch_size: args.batch_size,
        per_device_eval_batch_size: args.eval_batch_size,
        gradient_accumulation_steps: args.accumulate,
        precision: args.dtype.clone(),
        shuffle: !args.no_shuffle,
        seed: args.seed,
        logging_steps: args.logging_steps,
        eval_strategy: args.eval_strategy,
        save_strategy: args.save_strategy,
        progress_bars: bars_wanted(args.quiet || args.json),
        overwrite_output_dir: args.overwrite,
        ..TrainingArguments::tutorial(&args.out)
    };
    // ANCHOR_END: arguments
    let trainer = Trainer::new(
        &weights,
        &cfg,
        num_labels,
        training_args,
        collator,
        train_rows,
        Some(test_rows),
        &loaded.tokenizer,
    )?;
    Ok((trainer, report.new_weights))
}

fn print_logged(logged: &Logged) {
    match logged {
        Logged::Train { step, epoch, loss, grad_norm, learning_rate } => println!(
            "step {step}: {{'loss': {loss:.4}, 'grad_norm': {grad_norm:.4}, 'learning_rate': {learning_rate:.3e}, 'epoch': {epoch:.2}}}"
        ),
        Logged::Eval(e) => println!(
            "step {}: {{'eval_loss': {:.4}, 'eval_accuracy': {}, 'epoch': {:.2}}}",
            e.step,
            e.eval_loss,
            e.eval_accuracy.map_or("-".into(), |a| format!("{a:.4}")),
            e.epoch
        ),
        Logged::Saved(dir) => println!("saved {}", dir.display()),
    }
}

/// The tokenizer's special tokens, as the tutorial names them.
struct SpecialTokens {
    bos_token: &'static str,
    eos_token: &'static str,
    pad_token: &'static str,
}

impl fmt::Display for SpecialTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bos_token {:?}, eos_token {:?}, pad_token {:?}",
            self.bos_token, self.eos_token, self.pad_token
        )
    }
}

/// A pure-f16 run that diverged, with why: PyTorch's AdamW on a `.half()` model computes its
/// denominator `sqrt(v) + eps` in f16, where eps 1e-8 is 0 and `v` of a gradient under 5.5e-3
/// is 0 too, so its first update divides by zero (chapter 7, "Half precision").
fn explain_pure_f16(e: gpt2_tutorial::Error, precision: &str) -> anyhow::Error {
    let diverged = matches!(
        e,
        gpt2_tutorial::Error::TrainingDiverged { .. }
            | gpt2_tutorial::Error::NonFiniteWeights { .. }
    );
    if precision != "f16" || !diverged {
        return e.into();
    }
    anyhow::Error::new(e).context(
        "pure f16 (the tutorial's model.half() with adamw_torch): in f16 AdamW's eps (1e-8) rounds to 0, \
         and so does the second moment of every gradient below about 5.5e-3, so the first update divides \
         by zero and leaves the weights inf or NaN - PyTorch computes the same. Train with --dtype bf16, \
         mixed-f16 or f32",
    )
}
