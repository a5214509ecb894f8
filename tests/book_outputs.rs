//! The example outputs the book shows, pinned as insta snapshots in `snapshots/`.
//!
//! Each test runs a compiled example on the bundled model, as a reader would run it, and
//! snapshots what it prints; the chapters include those snapshots. `cargo test` builds the
//! examples before it runs tests; with `cargo test --test book_outputs` alone, build them first
//! (`cargo build --examples`).

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// Runs an example on the bundled model on the CPU and returns its standard output.

#[test]
fn architecture_example_output() {
    let out = common::run_example("01_architecture", &[]);
    // The two facts chapter 1 talks about, checked here as well as in the snapshot.
    assert!(out.contains("gpt2-xl           48     25   1600   1,557,611,200"));
    assert!(out.contains("Loaded model: bundled"));
    common::with_snapshots(|| insta::assert_snapshot!("01_architecture", out));
}

#[test]
fn architecture_example_json() {
    let out = common::run_example("01_architecture", &["--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints one object");
    let presets = json["presets"].as_array().expect("presets is a list");
    let counts: Vec<(&str, u64)> = presets
        .iter()
        .map(|p| {
            for key in ["name", "n_layer", "n_head", "n_embd", "parameters"] {
                assert!(p.get(key).is_some(), "preset without {key}: {p}");
            }
            (
                p["name"].as_str().unwrap(),
                p["parameters"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("gpt2", 124_439_808),
            ("gpt2-medium", 354_823_168),
            ("gpt2-large", 774_030_080),
            ("gpt2-xl", 1_557_611_200)
        ]
    );
    assert_eq!(json["model"]["name"], "bundled");
    common::with_snapshots(|| insta::assert_json_snapshot!("01_architecture_json", json));
}

/// Runs an example as a reader on a machine without network would: no `--model` (so the
/// default, openai-community/gpt2), the Hub forbidden, and an empty Hugging Face cache.
fn run_offline(name: &str, args: &[&str], hf_home: &Path) -> Output {
    let bin = common::example_binary(name);
    Command::new(&bin)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", hf_home)
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt2-tutorial-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The README's command, `cargo run --release --example 03_greedy`, on a fresh machine offline:
/// one line on stderr says why, and the run goes on with the bundled model, named in the output.
#[test]
fn readme_command_runs_offline_on_the_bundled_model() {
    let dir = temp_dir("offline-03");
    let figure = dir.join("top10.svg");
    let out = run_offline("03_greedy", &["--figure", figure.to_str().unwrap()], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "03_greedy failed offline:\n{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("Model: bundled\n"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of explanation, got:\n{stderr}");
    assert!(
        lines[0].starts_with("note: ")
            && lines[0].contains("openai-community/gpt2")
            && lines[0].contains("bundled"),
        "{stderr}"
    );
    assert!(figure.is_file(), "the figure goes where --figure says");
    std::fs::remove_dir_all(dir).ok();
}

/// A model named with `--model` is never replaced by the bundled one: it loads or is an error.
#[test]
fn a_named_model_that_cannot_be_had_is_an_error_not_a_fallback() {
    let dir = temp_dir("offline-named");
    let out = run_offline(
        "01_architecture",
        &["--model", "openai-community/gpt2-xl"],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it ran on something else:\n{stderr}");
    assert!(
        stderr.contains("openai-community/gpt2-xl") && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

/// `HF_HOME` moves the Hugging Face cache: a model laid out there as `huggingface_hub` lays it
/// out (refs/main naming a snapshot) loads by its Hub id, offline.
#[test]
fn hub_models_are_found_in_the_cache_hf_home_names() {
    let dir = temp_dir("hf-home");
    let repo = dir.join("hub").join("models--someone--tiny-gpt2");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), rev).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(
            common::root().join("data/tiny-gpt2").join(file),
            snapshot.join(file),
        )
        .unwrap();
    }
    let out = run_offline(
        "01_architecture",
        &["--model", "someone/tiny-gpt2", "--json"],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "no fallback note: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["model"]["name"], "someone/tiny-gpt2");
    std::fs::remove_dir_all(dir).ok();
}

/// The page "Using the crate in your own program": its example runs with no arguments, offline,
/// on the bundled model, and prints what the library's `generate` gives for the same settings.
#[test]
fn using_the_crate_example_output() {
    let bin = common::example_binary("using_the_crate");
    let out = Command::new(&bin)
        .env("HF_HUB_OFFLINE", "1")
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "using_the_crate failed:\n{stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");

    let model = common::bundled();
    let lm = gpt2_tutorial::Gpt2LmHeadModel::from_weights(&model.weights, &model.config).unwrap();
    let prompt = model
        .tokenizer
        .encode("The Rust programming language is")
        .unwrap();
    let settings = gpt2_tutorial::generation::GenerationConfig::greedy(20);
    let ids = gpt2_tutorial::generation::generate(&lm, &prompt, &settings).unwrap();
    assert_eq!(ids.sequences[0].len(), prompt.len() + 20, "20 new tokens");
    let want = model.tokenizer.decode(&ids.sequences[0]).unwrap();
    assert_eq!(text, format!("{want}\n"));
    common::with_snapshots(|| insta::assert_snapshot!("using_the_crate", text));
}

/// The fine-tuning program of "Using the crate": it runs offline and its loss falls.
#[test]
fn using_finetune_example_runs_and_learns() {
    let bin = common::example_binary("using_finetune");
    // Its run folder, `target/using-finetune`, lands in a scratch folder removed afterwards.
    let dir = common::Scratch::new("gpt2-using-finetune");
    let out = Command::new(&bin)
        .env("HF_HUB_OFFLINE", "1")
        .current_dir(&*dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().unwrap();
    // "loss 10.9 at step 1, 9.9 at step 8"
    let numbers: Vec<f64> = line
        .split([' ', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(numbers[2] < numbers[0] - 0.5, "{line}");
    assert!(
        stdout.contains("saved: ") && stdout.contains("final"),
        "{stdout}"
    );
}
