//! The example outputs the book shows, pinned as insta snapshots in `snapshots/`.
//!
//! Each test runs a compiled example on the bundled model, as a reader would run it, and
//! snapshots what it prints; the chapters include those snapshots. `cargo test` builds the
//! examples before it runs tests; with `cargo test --test book_outputs` alone, build them first
//! (`cargo build --examples`).

mod common;

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`: this test runs from `target/<profile>/deps/`.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built; run `cargo test` (which builds the examples) or `cargo build --example {name}` first",
        bin.display()
    );
    bin
}

/// Runs an example on the bundled model on the CPU and returns its standard output.
fn run_example(name: &str, extra: &[&str]) -> String {
    let bin = example_binary(name);
    let out = Command::new(&bin)
        .args(["--model", "bundled", "--device", "cpu"])
        .args(extra)
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the example prints UTF-8")
}

#[test]
fn architecture_example_output() {
    let out = run_example("01_architecture", &[]);
    // The two facts chapter 1 talks about, checked here as well as in the snapshot.
    assert!(out.contains("gpt2-xl           48     25   1600   1,557,611,200"));
    assert!(out.contains("Loaded model: bundled"));
    common::with_snapshots(|| insta::assert_snapshot!("01_architecture", out));
}
