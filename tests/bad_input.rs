//! Bad input to the examples, as a user meets it (issue 27, "Smaller"): what a user named is
//! what runs or an error (only a default falls back), a dataset path 07 cannot use, limits of
//! 0, a token budget past the context, and a prompt too short for a loss. Each is refused at
//! once, in one message that names the value and what to do. Every run is offline, with an
//! empty Hugging Face cache, on the bundled model where one is loaded.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use gpt2_tutorial::data::{Imdb, ImdbSource};
use gpt2_tutorial::tutorial::greedy_loops::compare_loops;
use gpt2_tutorial::Error;

/// Runs example `name` with `args` from the crate root, the Hub forbidden and the Hugging Face
/// cache an empty folder of `scratch`, so that nothing can come from the network or a cache.
fn offline(name: &str, args: &[&str], scratch: &Path) -> Output {
    let bin = example_binary(name);
    let hf_home = scratch.join("hf-home");
    std::fs::create_dir_all(&hf_home).unwrap();
    Command::new(&bin)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &hf_home)
        .env("RUST_BACKTRACE", "0")
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// [`offline`], which must fail with an error, not a panic nor clap's usage error; its stderr.
fn refused(name: &str, args: &[&str], scratch: &Path) -> String {
    let out = offline(name, args, scratch);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name} {args:?} should fail with an error:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A fresh `--out` under `scratch` (the fine-tuning examples refuse a used one).
fn out_dir(scratch: &Path, tag: &str) -> String {
    scratch.join(tag).to_str().unwrap().to_string()
}

// ---- what the user named runs, or is an error ----

/// `--model openai-community/gpt2` is the default's own name, but named: offline and not
/// cached, it is an error, not the bundled model; without `--model` the same run falls back.
#[test]
fn a_named_hub_model_is_never_replaced_only_the_default_falls_back() {
    let scratch = Scratch::new("bad-input-model");
    let stderr = refused(
        "05_loss_shift",
        &[
            "--model",
            "openai-community/gpt2",
            "--device",
            "cpu",
            "--json",
        ],
        &scratch,
    );
    assert!(
        stderr.contains("Hub model openai-community/gpt2 is not available")
            && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
    assert!(!stderr.contains("note:"), "no fallback: {stderr}");

    let out = offline("05_loss_shift", &["--device", "cpu", "--json"], &scratch);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the default falls back:\n{stderr}");
    assert!(
        stderr.starts_with("note: ") && stderr.lines().count() == 1,
        "one line of note: {stderr}"
    );

    // The fine-tuning examples' default is the bundled model: a Hub model is always named.
    for example in ["06_jokes_finetune", "07_imdb_finetune"] {
        let out = out_dir(&scratch, example);
        let stderr = refused(
            example,
            &[
                "--model",
                "openai-community/gpt2",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                &out,
            ],
            &scratch,
        );
        assert!(
            stderr.contains("Hub model openai-community/gpt2 is not available"),
            "{example}: {stderr}"
        );
    }
}

/// `--data hub` offline with nothing cached stops, naming the dataset and what to do; it never
/// trains on the bundled sample instead.
#[test]
fn named_hub_data_that_cannot_be_had_is_an_error() {
    let scratch = Scratch::new("bad-input-data-07");
    let out = out_dir(&scratch, "out");
    let stderr = refused(
        "07_imdb_finetune",
        &["--data", "hub", "--device", "cpu", "--quiet", "--out", &out],
        &scratch,
    );
    assert!(
        stderr.contains("Hub dataset stanfordnlp/imdb is not available")
            && stderr.contains("HF_HUB_OFFLINE")
            && stderr.contains("download it once while online"),
        "{stderr}"
    );
    assert!(!stderr.contains("bundled sample"), "no fallback: {stderr}");
}

/// As [`named_hub_data_that_cannot_be_had_is_an_error`], for chapter 6.
#[test]
fn named_hub_jokes_that_cannot_be_had_are_an_error() {
    let scratch = Scratch::new("bad-input-data-06");
    let out = out_dir(&scratch, "out");
    let stderr = refused(
        "06_jokes_finetune",
        &["--data", "hub", "--device", "cpu", "--quiet", "--out", &out],
        &scratch,
    );
    assert!(
        stderr.contains("Hub dataset Maximofn/short-jokes-dataset is not available")
            && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
    assert!(!stderr.contains("bundled sample"), "no fallback: {stderr}");
}

// ---- chapter 7's data ----

/// 07 needs two splits, so a single parquet file is refused up front in one line that says
/// what is needed; a directory without a test file names the missing split; `--help` says what
/// is accepted.
#[test]
fn imdb_data_must_be_a_directory_of_both_splits() {
    let scratch = Scratch::new("bad-input-imdb-path");
    let out = out_dir(&scratch, "out");
    let needed = "a directory holding train-*.parquet and test-*.parquet";

    let file = root().join("data/imdb-sample/train.parquet");
    let file = file.to_str().unwrap();
    let stderr = refused(
        "07_imdb_finetune",
        &["--data", file, "--device", "cpu", "--quiet", "--out", &out],
        &scratch,
    );
    assert!(
        stderr.contains(&format!("{file} is a single file")) && stderr.contains(needed),
        "{stderr}"
    );
    assert!(
        !stderr.contains("is empty") && !stderr.contains("pass a parquet file"),
        "no advice that contradicts itself: {stderr}"
    );

    let err = Imdb::load(&ImdbSource::Local(scratch.join("no-such-dir"))).unwrap_err();
    assert!(
        err.to_string().contains("no-such-dir does not exist") && err.to_string().contains(needed),
        "{err}"
    );
    let only_train = scratch.join("only-train");
    std::fs::create_dir_all(&only_train).unwrap();
    std::fs::copy(file, only_train.join("train-00000-of-00001.parquet")).unwrap();
    let err = Imdb::load(&ImdbSource::Local(only_train.clone())).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("has no test-*.parquet file") && text.contains(needed),
        "{text}"
    );
    assert!(!text.contains("is empty"), "{text}");

    let help = Command::new(example_binary("07_imdb_finetune"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("for chapter 7 a directory holding train-*.parquet and test-*.parquet"),
        "{help}"
    );
}

/// `--train-limit 0` and `--eval-limit 0` name the limit, not an empty dataset.
#[test]
fn a_limit_of_zero_is_named_as_a_limit() {
    let scratch = Scratch::new("bad-input-limits");
    for (flag, name) in [
        ("--train-limit", "train_limit"),
        ("--eval-limit", "eval_limit"),
    ] {
        let out = out_dir(&scratch, name);
        let stderr = refused(
            "07_imdb_finetune",
            &[
                "--model", "bundled", "--device", "cpu", "--quiet", flag, "0", "--out", &out,
            ],
            &scratch,
        );
        assert!(
            stderr.contains(&format!("{name} is 0: a limit of 0 rows leaves nothing"))
                && stderr.contains("--train-limit and --eval-limit"),
            "{flag}: {stderr}"
        );
        assert!(!stderr.contains("is empty"), "{stderr}");
    }
    let imdb = Imdb::load(&ImdbSource::Bundled).unwrap();
    let err = imdb.test.subset(0, 42).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ZeroSize {
                what: "eval_limit",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        imdb.train.subset(1000, 42).unwrap(),
        imdb.train,
        "all of it"
    );
}

// ---- chapters 3 and 5 ----

/// A token budget past the context is refused before the loops generate anything, naming
/// the prompt's length, the budget, the context and the largest budget that fits.
#[test]
fn a_token_budget_past_the_context_is_refused_before_generating() {
    let scratch = Scratch::new("bad-input-03");
    let figure = scratch.join("top10.svg");
    let start = Instant::now();
    let stderr = refused(
        "03_greedy",
        &[
            "--model",
            "bundled",
            "--device",
            "cpu",
            "--max-new-tokens",
            "2000",
            "--figure",
            figure.to_str().unwrap(),
        ],
        &scratch,
    );
    // Generating up to the context took minutes in a debug build; refusing takes a moment.
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "refused only after {:?}",
        start.elapsed()
    );
    assert!(
        stderr.contains(
            "the 8-token prompt plus max_new_tokens 2000 is 2008 tokens, more than the model's context of 1024 (n_positions): set --max-new-tokens to 1016 or less, or shorten the prompt"
        ),
        "{stderr}"
    );
    // The function behind the example says the same, one token past the context.
    let m = bundled();
    let lm = bundled_lm();
    let prompt = "Hello, I'm a language model,";
    let e = compare_loops(&lm, &m.tokenizer, prompt, 1017).unwrap_err();
    assert!(
        e.to_string()
            .contains("set --max-new-tokens to 1016 or less"),
        "{e}"
    );
    let help = Command::new(example_binary("03_greedy"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("--max-new-tokens <MAX_NEW_TOKENS>"), "{help}");
}

/// A one-token prompt has nothing to predict; the error says so and which flag to change.
#[test]
fn a_one_token_prompt_names_the_fix() {
    let scratch = Scratch::new("bad-input-05");
    let stderr = refused(
        "05_loss_shift",
        &["--model", "bundled", "--device", "cpu", "--prompt", "Hello"],
        &scratch,
    );
    assert!(
        stderr.contains(
            "the prompt \"Hello\" is 1 token, but the loss needs at least 2 (one to read, one to predict): pass a longer --prompt"
        ),
        "{stderr}"
    );
    let help = Command::new(example_binary("05_loss_shift"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("--prompt <PROMPT>"), "{help}");
}
