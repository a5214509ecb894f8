//! The example outputs the book shows, pinned as insta snapshots in `snapshots/`.
//!
//! Each test runs a compiled example on the bundled model, as a reader would run it, and
//! snapshots what it prints; the chapters include those snapshots. `cargo test` builds the
//! examples before it runs tests; with `cargo test --test book_outputs` alone, build them first
//! (`cargo build --examples`).

mod common;

use std::process::Command;

/// Runs an example on the bundled model on the CPU and returns its standard output.
fn run_example(name: &str, extra: &[&str]) -> String {
    let bin = common::example_binary(name);
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
