//! Chapter 6's loop as a user meets it: the same seed gives the same run, a run resumed from a
//! checkpoint continues bit for bit, a diverging run stops with the last good checkpoint
//! intact, the loss falls on the bundled jokes, and bad input is a clear error.

mod common;

use std::path::Path;

use common::*;
use gpt2_tutorial::data::{Jokes, JokesSource, Packer, PackingMode};
use gpt2_tutorial::train::{
    load_checkpoint, FineTuneReport, FineTuneSettings, History, LmFineTuner, RunDir, TrainPrecision,
};
use gpt2_tutorial::Error;

fn tokenized() -> Vec<Vec<u32>> {
    Jokes::load(&JokesSource::Bundled)
        .unwrap()
        .tokenize(&bundled().tokenizer)
        .unwrap()
}

fn temp_dir(tag: &str) -> common::Scratch {
    common::Scratch::new(&format!("gpt2-jokes-{tag}"))
}

/// Small sequences and steps, so a test trains many steps in seconds; dropout stays on (the
/// tiny model's 0.1), so the seed matters.
fn small(max_steps: usize) -> FineTuneSettings {
    FineTuneSettings {
        max_seq_len: 48,
        accumulate: 2,
        max_steps: Some(max_steps),
        ..FineTuneSettings::fixed()
    }
}

fn run(
    settings: FineTuneSettings,
    out: &Path,
    nan_at_step: Option<usize>,
) -> gpt2_tutorial::Result<FineTuneReport> {
    let m = bundled();
    let mut trainer = LmFineTuner::new(&m.weights, &m.config, tokenized(), settings)?
        .save_checkpoints(RunDir::fresh(out, false)?, &m.tokenizer);
    trainer.inject_nan_at_step(nan_at_step);
    trainer.run()
}

/// Breaks `text` into lines of at most `width` characters at spaces, for the book.
fn textwrap(text: &str, width: usize) -> String {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().unwrap();
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join("\n")
}

fn losses(report: &FineTuneReport) -> Vec<f64> {
    report.history.steps.iter().map(|r| r.loss).collect()
}

#[test]
fn the_same_seed_gives_the_same_first_20_losses() {
    let (a, b, c) = (temp_dir("seed-a"), temp_dir("seed-b"), temp_dir("seed-c"));
    let first = run(small(20), &a, None).unwrap();
    let again = run(small(20), &b, None).unwrap();
    assert_eq!(losses(&first).len(), 20);
    assert_eq!(
        losses(&first),
        losses(&again),
        "same seed, different losses"
    );
    let other = run(
        FineTuneSettings {
            seed: 7,
            ..small(20)
        },
        &c,
        None,
    )
    .unwrap();
    assert_ne!(losses(&first), losses(&other), "the seed changes nothing");
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    let (whole, part) = (temp_dir("resume-whole"), temp_dir("resume-part"));
    let settings = FineTuneSettings {
        save_steps: Some(5),
        ..small(12)
    };
    let uninterrupted = run(settings, &whole, None).unwrap();
    assert!(whole.join("checkpoint-5").is_dir() && whole.join("checkpoint-10").is_dir());

    // Continue from step 5 of that run into another directory.
    let from = whole.join("checkpoint-5");
    let mut resumed = LmFineTuner::resume(
        &from,
        tokenized(),
        RunDir::resumed(&*part, &from, false).unwrap(),
        bundled().weights.device(),
    )
    .unwrap();
    let report = resumed.run().unwrap();
    assert_eq!(report.optimizer_steps, 12);
    // The history carries the first 5 steps from the checkpoint; every step matches.
    assert_eq!(losses(&report), losses(&uninterrupted));
    assert_eq!(
        report.history.steps, uninterrupted.history.steps,
        "learning rates or epochs differ after resuming"
    );
    let a = load_checkpoint(&whole.join("checkpoint-12"), &candle_core::Device::Cpu).unwrap();
    let b = load_checkpoint(&part.join("checkpoint-12"), &candle_core::Device::Cpu).unwrap();
    for name in a.weights.names() {
        let d = max_abs_diff(a.weights.get(&name).unwrap(), b.weights.get(&name).unwrap());
        assert_eq!(d, 0.0, "{name} differs after resuming");
    }
    std::fs::remove_dir_all(whole).ok();
    std::fs::remove_dir_all(part).ok();
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let out = temp_dir("nan");
    let settings = FineTuneSettings {
        save_steps: Some(2),
        ..small(10)
    };
    let err = run(settings, &out, Some(4)).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    match &err {
        Error::TrainingDiverged {
            step, checkpoint, ..
        } => {
            assert_eq!(*step, 4);
            assert_eq!(
                checkpoint.as_deref(),
                Some(out.join("checkpoint-2").as_path())
            );
        }
        other => panic!("expected TrainingDiverged, got {other:?}"),
    }
    assert!(
        msg.contains("optimizer step 4") && msg.contains("checkpoint-2"),
        "{msg}"
    );
    assert!(
        msg.contains("lower learning rate"),
        "the message says how to go on: {msg}"
    );
    // The message as chapter 6 shows it, for a run whose --out is target/jokes-finetune.
    let shown = msg.replace(out.to_str().unwrap(), "target/jokes-finetune");
    with_snapshots(|| insta::assert_snapshot!("06_diverged", textwrap(&shown, 96)));
    assert!(!out.join("checkpoint-4").exists());
    let saved = load_checkpoint(&out.join("checkpoint-2"), &candle_core::Device::Cpu).unwrap();
    for name in saved.weights.names() {
        let t = saved.weights.get(&name).unwrap();
        let sum = t
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            sum.is_finite(),
            "{name} is not finite in the kept checkpoint"
        );
    }
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn the_loss_falls_on_the_bundled_jokes() {
    let out = temp_dir("falls");
    let report = run(
        FineTuneSettings {
            lr: 1e-3,
            ..small(40)
        },
        &out,
        None,
    )
    .unwrap();
    let l = report
        .history
        .steps
        .iter()
        .map(|r| r.mean_loss)
        .collect::<Vec<_>>();
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!("mean loss of the first 5 steps {first:.4}, of the last 5 {last:.4}");
    assert!(last < first - 0.5, "{first} -> {last}");
    std::fs::remove_dir_all(out).ok();
}

/// The tutorial's loop on one epoch in file order at max_seq_len 64: the fixture's 113
/// sequences, 28 full steps of 4, and what it never trains (the last sequence, the buffer).
#[test]
fn the_tutorial_loop_drops_what_the_tutorial_drops() {
    let settings = FineTuneSettings {
        epochs: 1,
        max_seq_len: 64,
        accumulate: 4,
        shuffle: false,
        // What is dropped does not depend on the precision; f32 is the faster on a CPU.
        precision: TrainPrecision::F32,
        ..FineTuneSettings::tutorial()
    };
    let m = bundled();
    let mut trainer = LmFineTuner::new(&m.weights, &m.config, tokenized(), settings).unwrap();
    let report = trainer.run().unwrap();
    assert_eq!(report.sequences, 113);
    assert_eq!(report.optimizer_steps, 28);
    assert_eq!(report.untrained_sequences, 1);
    assert!(report.untrained_texts >= 1);
    // Warm-up over 5,000 steps from 0: step k runs at 3e-6 · ((k-1)/5000), as LambdaLR computes
    // it, and the history keeps what the tutorial's `lrs` list does - get_last_lr() after
    // scheduler.step(), the next step's rate - so it starts at 3e-6/5000, and step 28
    // records 28/5000.
    let lrs: Vec<f64> = report.history.steps.iter().map(|r| r.lr).collect();
    assert_eq!(lrs[0], 3e-6 * (1.0 / 5000.0));
    assert_eq!(lrs[27], 3e-6 * (28.0 / 5000.0));
    // The optimizer itself ran step 28 at 27/5000.
    assert_eq!(
        trainer.train_step().optimizer().lr(),
        3e-6 * (27.0 / 5000.0)
    );
}

// ---- bad input, through the example as a user meets it ----

fn fails(args: &[&str]) -> String {
    let bin = example_binary("06_jokes_finetune");
    let out = std::process::Command::new(&bin)
        .args(["--quiet", "--device", "cpu"])
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = temp_dir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let out = out.to_str().unwrap();

    let msg = fails(&["--data", "no/such/jokes.parquet", "--out", out]);
    assert!(
        msg.contains("no/such/jokes.parquet") && msg.contains("does not exist"),
        "{msg}"
    );

    let msg = fails(&["--max-seq-len", "3", "--out", out]);
    assert!(
        msg.contains("max_seq_len") || msg.contains("max-seq-len"),
        "{msg}"
    );
    assert!(msg.contains("shortest"), "{msg}");

    let not_a_checkpoint = dir.join("empty");
    std::fs::create_dir_all(&not_a_checkpoint).unwrap();
    let msg = fails(&["--resume", not_a_checkpoint.to_str().unwrap(), "--out", out]);
    assert!(msg.contains("not a training checkpoint"), "{msg}");

    let msg = fails(&["--accumulate", "0", "--out", out]);
    assert!(msg.contains("accumulate is 0"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

// ---- the book's run ----

const BOOK_HISTORY: &str = "chapters/figures/06_history.csv";
const BOOK_FIGURE: &str = "chapters/figures/06_loss_lr.svg";

/// The example's output with what varies from run to run replaced: times, the output
/// directory, the crate's path, and the generated texts (word salad from a near-uniform model,
/// whose tokens move with the last bits of the arithmetic).
fn redact(text: &str, out: &Path) -> String {
    let text = text
        .replace(out.to_str().unwrap(), "[out]")
        .replace(root().to_str().unwrap(), "[crate]");
    text.lines()
        .map(|line| {
            if line.starts_with('"') && line.contains(" → ") {
                let (prompt, _) = line.split_once(" → ").unwrap();
                format!("{prompt} → [generated]")
            } else if let Some((head, _)) = line.split_once(" jokes in ") {
                format!("{head} jokes in [time]")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The default run - the one the book shows - printed, recorded and drawn. Its steps, epochs and
/// learning rates must be the committed history's exactly, its losses within 1e-4 (they are
/// sums of many float products, whose last bits may differ between CPUs).
#[test]
fn the_default_run_is_the_books() {
    let out = temp_dir("book");
    let stdout = run_example(
        "06_jokes_finetune",
        &["--quiet", "--out", out.to_str().unwrap()],
    );
    with_snapshots(|| insta::assert_snapshot!("06_jokes_finetune", redact(&stdout, &out)));

    let fresh = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let fresh = History::from_csv(&fresh, &out).unwrap();
    let committed_path = root().join(BOOK_HISTORY);
    let committed = History::from_csv(
        &std::fs::read_to_string(&committed_path).unwrap(),
        &committed_path,
    )
    .unwrap();
    assert_eq!(
        fresh.steps.len(),
        committed.steps.len(),
        "regenerate with scripts/book_figures.sh"
    );
    for (f, c) in fresh.steps.iter().zip(&committed.steps) {
        assert_eq!(
            (f.step, f.epoch, f.lr),
            (c.step, c.epoch, c.lr),
            "regenerate with scripts/book_figures.sh"
        );
        assert!(
            (f.loss - c.loss).abs() < 1e-4 && (f.mean_loss - c.mean_loss).abs() < 1e-4,
            "step {}: loss {} vs committed {}; regenerate with scripts/book_figures.sh",
            f.step,
            f.loss,
            c.loss
        );
    }
    std::fs::remove_dir_all(out).ok();
}

/// The book's figure is what the example draws from the committed history.
#[test]
fn the_books_figure_is_drawn_from_the_committed_history() {
    let path = root().join(BOOK_HISTORY);
    let history = History::from_csv(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    let drawn = history.chart().unwrap();
    let committed = std::fs::read_to_string(root().join(BOOK_FIGURE)).unwrap();
    assert!(
        drawn == committed,
        "{BOOK_FIGURE} is not what {BOOK_HISTORY} draws; regenerate with scripts/book_figures.sh"
    );
    let doc = roxmltree::Document::parse(&drawn).expect("well-formed SVG");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for label in ["loss", "learning rate", "optimizer step"] {
        assert!(
            texts.iter().any(|t| t.contains(label)),
            "no {label:?} in the figure"
        );
    }
}

/// The numbers chapter 6 derives, as fragments its page includes: "JOKE:" is three tokens;
/// the bundled jokes' mean length; the tutorial's run in tokens at that mean; the optimizer steps
/// the tutorial's printed learning rates imply; and the joke length those steps imply.
#[test]
fn the_chapters_numbers() {
    let tok = &bundled().tokenizer;
    assert_eq!(tok.encode("JOKE:").unwrap(), [45006, 7336, 25]);
    assert_eq!(tok.decode(&[45006]).unwrap(), "JO");
    assert_eq!(tok.decode(&[7336]).unwrap(), "KE");
    let jokes = tokenized();
    let tokens: usize = jokes.iter().map(Vec::len).sum();
    let mean = tokens as f64 / jokes.len() as f64;
    fragment("06_mean_tokens.md", &format!("{mean:.0}"));
    let total = TUTORIAL_JOKES * mean * 5.0;
    fragment(
        "06_tutorial_tokens_millions.md",
        &format!("{:.0}", total / 1e6),
    );

    // The optimizer steps behind each learning rate the tutorial printed (three significant
    // digits): every k whose scheduler value rounds to it.
    let schedule = FineTuneSettings::tutorial().schedule(0);
    let steps_for = |printed: &str| -> Vec<usize> {
        (0..5000)
            .filter(|&k| format!("{:.2e}", schedule.lr(k)) == printed)
            .collect()
    };
    let first = steps_for("2.31e-7");
    assert_eq!(first, [385], "the first epoch's lr pins its steps");
    fragment("06_steps_epoch_1.md", &first[0].to_string());
    let last = steps_for("1.16e-6");
    let range = format!(
        "{}-{}",
        with_commas(last[0]),
        with_commas(*last.last().unwrap())
    );
    fragment("06_steps_last_range.md", &range);

    // The mean joke length those 385 steps per epoch imply: 385 x 32 sequences, each as full as
    // the bundled jokes pack into 500 tokens with the tutorial's packing, over 231,657 jokes.
    let mut packer = Packer::new(PackingMode::Tutorial, 500).unwrap();
    let order: Vec<usize> = (0..jokes.len()).collect();
    let packed = packer.pack_epoch(&jokes, &order).unwrap();
    let fill = packed.iter().map(Vec::len).sum::<usize>() as f64 / packed.len() as f64;
    let implied = (first[0] * 32) as f64 * fill / TUTORIAL_JOKES;
    eprintln!(
        "bundled mean {mean:.2} tokens; packed sequences of {fill:.1} tokens imply {implied:.2}"
    );
    fragment("06_implied_tokens.md", &format!("{implied:.0}"));
}

/// The tutorial's dataset: jokes in its CSV (a quotation of the tutorial).
const TUTORIAL_JOKES: f64 = 231_657.0;

fn with_commas(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// transformers opens a checkpoint the loop writes and computes what the crate computes from it
/// (tests/fixtures/checkpoint.json, by `scripts/reference/make_checkpoint_fixture.py`, which
/// trains the same two steps with the example and loads `checkpoint-2` with
/// `GPT2LMHeadModel.from_pretrained`).
#[test]
fn transformers_reads_our_checkpoints_as_we_do() {
    use candle_core::{DType, Device, Tensor, D};
    let fx = fixture_json("checkpoint");
    let out = temp_dir("hf-checkpoint");
    let settings = FineTuneSettings {
        max_seq_len: 48,
        accumulate: 2,
        max_steps: Some(2),
        shuffle: false,
        ..FineTuneSettings::fixed()
    };
    run(settings, &out, None).unwrap();
    let dir = out.join(fx["checkpoint"].as_str().unwrap());
    let loaded = gpt2_tutorial::LoadedModel::load(
        &gpt2_tutorial::ModelSource::Local(dir),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let model =
        gpt2_tutorial::Gpt2LmHeadModel::from_weights(&loaded.weights, &loaded.config).unwrap();
    let input = ids(&fx["input_ids"]);
    let input = Tensor::new(input.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let labels = input.to_dtype(DType::I64).unwrap();
    let got = model.forward_with_labels(&input, None, &labels).unwrap();
    let loss = got.loss.to_scalar::<f32>().unwrap();
    let want_loss = fx["loss"].as_f64().unwrap() as f32;
    eprintln!("loss: ours {loss}, transformers {want_loss}");
    assert!((loss - want_loss).abs() < LOSS_TOL * 10.0);
    let logits = got.logits.squeeze(0).unwrap(); // (T, V)
    let t = logits.dim(0).unwrap();
    let last: Vec<f32> = logits
        .get(t - 1)
        .unwrap()
        .narrow(0, 0, 16)
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f32> = fx["last_logits_first16"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let worst = last
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("last logits: max |diff| {worst:e}");
    assert!(worst < LOGITS_TOL, "{last:?} vs {want:?}");
    let argmax: Vec<u32> = logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    assert_eq!(argmax, ids(&fx["argmax"]));
    std::fs::remove_dir_all(out).ok();
}
