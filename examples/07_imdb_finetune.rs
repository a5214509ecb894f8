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
//! ```

// A program that trains: zeroed memory is written at once (see "Using the crate", memory).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
    gpt2_tutorial::memory::ZeroFilledAllocator;

use std::path::PathBuf;

use clap::Parser;
use gpt2_tutorial::cli::{noted, FinetuneArgs};
use gpt2_tutorial::config::EOS_TOKEN_ID;
use gpt2_tutorial::data::{tokenize_truncated, Imdb, ImdbSource, Padding, Split, IMDB_LABEL_NAMES};
use gpt2_tutorial::heads::{for_sequence_classification, HEAD_SEED};
use gpt2_tutorial::plot::{loss_accuracy_chart, write_svg};
use gpt2_tutorial::train::{
    bars_wanted, get_sentiment, latest_checkpoint, Collator, EvalOutput, Interval, LabelledRows,
    Logged, Sentiment, TrainOutput, Trainer, TrainingArguments,
};
use serde::Serialize;

/// Fine-tune GPT-2 to classify movie reviews, with transformers' Trainer.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: FinetuneArgs,
    /// Training epochs (the tutorial's num_train_epochs).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Pad every row to --max-length (the tutorial) or each batch to its longest row.
    #[arg(long, value_enum, default_value_t = Padding::MaxLength)]
    padding: Padding,
    /// Tokens per review at most (longer ones are cut); GPT-2's context is 1,024.
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// f32, mixed-f16, mixed-bf16, or f16/bf16 (pure half, the tutorial's `.half()`).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Training rows per batch (per_device_train_batch_size).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Evaluation rows per batch (per_device_eval_batch_size).
    #[arg(long, default_value_t = 64)]
    eval_batch_size: usize,
    /// Batches per optimizer step (gradient_accumulation_steps).
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// The peak learning rate (the tutorial's 2e-5).
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    /// When to evaluate during training: `epoch` (this crate's choice), `no` (transformers'
    /// default, what the tutorial ran) or every N optimizer steps.
    #[arg(long, default_value = "epoch")]
    eval_strategy: Interval,
    /// When to save a checkpoint: `epoch`, `no` or every N optimizer steps (transformers'
    /// default is 500).
    #[arg(long, default_value = "epoch")]
    save_strategy: Interval,
    /// Keep the training rows in file order (to compare with other implementations).
    #[arg(long)]
    no_shuffle: bool,
    /// Train on this many rows of the training split, drawn with --seed.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on this many rows of the test split, drawn with --seed.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Print the mean training loss every N optimizer steps.
    #[arg(long, default_value_t = 500)]
    logging_steps: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue from this checkpoint directory, or `latest` for the newest one under --out.
    #[arg(long)]
    resume: Option<String>,
    /// Where the checkpoints, the history and the figure go (TrainingArguments' output_dir).
    #[arg(long, default_value = "target/imdb-finetune")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
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
    let loaded = args.common.load()?;

    // ANCHOR: data
    let source: ImdbSource = args.common.data.parse()?;
    let imdb = noted(Imdb::load_or_bundled(&source)?);
    let limit =
        |split: &Split, n: Option<usize>| n.map_or(split.clone(), |n| split.subset(n, args.seed));
    let (train_split, test_split) = (
        limit(&imdb.train, args.train_limit),
        limit(&imdb.test, args.eval_limit),
    );
    // ANCHOR_END: data

    // ANCHOR: tokenize
    // The tutorial's `tokenizer.pad_token = tokenizer.eos_token` and
    // `tokenizer(text, padding="max_length", truncation=True)`: cut at max_length here, padded
    // with 50256 when batched.
    if args.max_length > loaded.config.n_positions {
        anyhow::bail!(
            "--max-length {} is longer than the model's context ({} positions): use at most {1}",
            args.max_length,
            loaded.config.n_positions
        );
    }
    let tokenize = |split: &Split| -> anyhow::Result<LabelledRows> {
        Ok(LabelledRows {
            ids: tokenize_truncated(&loaded.tokenizer, &split.texts, args.max_length)?,
            labels: split.labels.clone(),
        })
    };
    let (train_rows, test_rows) = (tokenize(&train_split)?, tokenize(&test_split)?);
    // ANCHOR_END: tokenize

    // ANCHOR: model
    // GPT2ForSequenceClassification.from_pretrained(model, num_labels=imdb.num_labels): a new
    // `score` unless the checkpoint has one; then `model.config.pad_token_id = eos`.
    let (weights, mut cfg, report) =
        for_sequence_classification(&loaded.weights, &loaded.config, imdb.num_labels, HEAD_SEED)?;
    let pad_token_id = *cfg.pad_token_id.get_or_insert(EOS_TOKEN_ID);
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
        num_train_epochs: args.epochs,
        max_steps: args.max_steps,
        learning_rate: args.lr,
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
        ..TrainingArguments::tutorial(&args.out)
    };
    // ANCHOR_END: arguments

    std::fs::create_dir_all(&args.out)?;
    // ANCHOR: trainer
    let resume = match args.resume.as_deref() {
        Some("latest") => Some(latest_checkpoint(&args.out).ok_or_else(|| {
            anyhow::anyhow!(
                "--resume latest: no checkpoint-N directory under {}",
                args.out.display()
            )
        })?),
        other => other.map(PathBuf::from),
    };
    let mut trainer = match &resume {
        Some(dir) => Trainer::resume(dir, &train_rows, Some(&test_rows), &device)?,
        None => Trainer::new(
            &weights,
            &cfg,
            imdb.num_labels,
            training_args,
            collator,
            &train_rows,
            Some(&test_rows),
            &loaded.tokenizer,
        )?,
    };
    // ANCHOR_END: trainer
    // The trainer keeps its own trainable copy: the loaded weights would only hold a model's
    // worth of memory through the run.
    drop((weights, loaded.weights));
    // A resumed run writes where this command says, with or without bars as it says.
    trainer.set_output(&args.out, bars_wanted(args.quiet));

    let model_name = match &resume {
        Some(dir) => format!("checkpoint {}", dir.display()),
        None => loaded.name.clone(),
    };
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
        if resume.is_none() {
            println!("Newly initialized: {:?}", report.new_weights);
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
    let train_output = trainer.train_with(&mut |logged| {
        if !json {
            print_logged(logged);
        }
    })?;
    let eval = trainer.evaluate()?;
    let model = trainer.model()?;
    let sentiments = SENTENCES
        .iter()
        .map(|s| get_sentiment(&model, &loaded.tokenizer, s, &IMDB_LABEL_NAMES))
        .collect::<gpt2_tutorial::Result<Vec<_>>>()?;
    // ANCHOR_END: train

    // ANCHOR: figure
    let state = trainer.state();
    let losses: Vec<(usize, f64)> = state.log_history.iter().map(|l| (l.step, l.loss)).collect();
    let accuracy: Vec<(usize, f64)> = state
        .eval_history
        .iter()
        .filter_map(|e| Some((e.step, e.eval_accuracy?)))
        .collect();
    let history = args.out.join("history.json");
    std::fs::write(
        &history,
        serde_json::to_string_pretty(&(&losses, &accuracy))?,
    )?;
    let figure = args.out.join("loss_accuracy.svg");
    let title = "Training loss and eval accuracy";
    write_svg(&figure, &loss_accuracy_chart(title, &losses, &accuracy)?)?;
    // ANCHOR_END: figure

    if json {
        let report = Report {
            model: &model_name,
            data: imdb.to_string(),
            num_labels: imdb.num_labels,
            new_weights: report.new_weights,
            args: &state.args,
            padding: state.collator.padding,
            max_length: state.collator.max_length,
            train_output: &train_output,
            eval: &eval,
            losses: losses.iter().map(|l| l.1).collect(),
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
