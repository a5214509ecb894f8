//! Shared test helpers: the transformers fixtures and one tolerance checker.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use gpt2_tutorial::{Gpt2LmHeadModel, LoadedModel, ModelSource};

/// The fixture format these tests understand; `scripts/reference/make_fixtures.py` writes it.
pub const FIXTURE_FORMAT: u64 = 1;
pub const REGENERATE: &str = "python scripts/reference/make_fixtures.py";

// Tolerances, each with why it is what it is.
/// Logits: float32 on both sides, different summation orders in matmul and softmax; the tiny
/// model's logits are O(1), so 1e-4 absolute leaves a margin of ~100x over what we observe.
pub const LOGITS_TOL: f32 = 1e-4;
/// Hidden states: same reasoning as logits, values O(1).
pub const HIDDEN_TOL: f32 = 1e-4;
/// Mean cross-entropy: a mean of 10^1..10^2 terms, each exact to ~1e-6.
pub const LOSS_TOL: f32 = 1e-5;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures")
}

/// Reads `tests/fixtures/NAME.json` and checks its format version.
pub fn fixture_json(name: &str) -> serde_json::Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with `{REGENERATE}`", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["format_version"].as_u64(),
        Some(FIXTURE_FORMAT),
        "{} has another format version; regenerate with `{REGENERATE}`",
        path.display()
    );
    v
}

/// Reads `tests/fixtures/NAME.safetensors`.
pub fn fixture_tensors(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures_dir().join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with `{REGENERATE}`", path.display()))
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The bundled model, loaded once per test binary.
pub fn bundled() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        LoadedModel::load(&ModelSource::Bundled, &Device::Cpu, candle_core::DType::F32)
            .expect("the bundled model loads")
    })
}

pub fn bundled_lm() -> Gpt2LmHeadModel {
    let m = bundled();
    Gpt2LmHeadModel::from_weights(&m.weights, &m.config).unwrap()
}

/// Compares two tensors element-wise; on failure prints the evidence (max difference, where,
/// the first few pairs) before failing, as llm.c's test_gpt2 does.
/// The largest absolute difference between two tensors of one shape (any float dtype).
/// Every element of `t`, whatever its float type, as f32, flattened.
pub fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    (f32(a) - f32(b))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Saves the bundled model as transformers' `GPT2Model` saves it (no `transformer.` prefix)
/// into `dir`, config included.
pub fn save_unprefixed_bundled(dir: &Path) {
    let m = bundled();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), m.config.to_json()).unwrap();
    let tensors: HashMap<String, Tensor> = m
        .weights
        .names()
        .into_iter()
        .map(|n| (n.clone(), m.weights.get(&n).unwrap().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{name}: shapes differ");
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let w: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (a - b).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    if worst.is_nan() || worst > tol {
        let pairs: Vec<String> = g
            .iter()
            .zip(&w)
            .take(5)
            .map(|(a, b)| format!("{a:.6} vs {b:.6}"))
            .collect();
        panic!(
            "{name}: max |diff| {worst:e} at flat index {at} ({} vs {}) exceeds {tol:e}; first: {}",
            g[at],
            w[at],
            pairs.join(", ")
        );
    }
    eprintln!("ok {name}: max |diff| {worst:e} <= {tol:e}");
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `f` with insta writing to `snapshots/` at the repository root (where the book includes
/// them from), without the module prefix or the expression in the header.
pub fn with_snapshots<R>(f: impl FnOnce() -> R) -> R {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s.bind(f)
}

/// `target/<profile>/examples/<name>`: the test binaries run from `target/<profile>/deps/`, and
/// `cargo test` builds the examples beside them (with `--test X` alone, `cargo build --examples`
/// first).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built; run `cargo test` (which builds the examples) or `cargo build --example {name}` first",
        bin.display()
    );
    bin
}

/// Runs example `name` on the bundled model on the CPU, from the crate root.
pub fn example(name: &str, extra: &[&str]) -> std::process::Output {
    let bin = example_binary(name);
    std::process::Command::new(&bin)
        .args(["--model", "bundled", "--device", "cpu"])
        .args(extra)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// [`example`], which must succeed; its standard output.
pub fn run_example(name: &str, extra: &[&str]) -> String {
    let out = example(name, extra);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the example prints UTF-8")
}

/// Reads `tests/fixtures/NAME.json` of format version 1, written by `regenerate` (named in the
/// failure message).
pub fn versioned_fixture(name: &str, regenerate: &str) -> serde_json::Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with `{regenerate}`", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["format_version"].as_u64(),
        Some(1),
        "{} has another format version; regenerate with `{regenerate}`",
        path.display()
    );
    v
}

/// A JSON array of numbers.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of numbers, got {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// llm.c's checker: `got` against `want` element by element within `abs + rel·|want|`,
/// the evidence (worst difference, first pairs) printed before the verdict.
pub fn check_close(name: &str, got: &[f64], want: &[f64], abs: f64, rel: f64, regenerate: &str) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    let (mut worst, mut at, mut bad) = (0f64, 0usize, false);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d.is_nan() || d > worst {
            (worst, at) = (d, i);
        }
        bad |= d.is_nan() || d > abs + rel * w.abs();
    }
    let pairs: Vec<String> = got
        .iter()
        .zip(want)
        .take(4)
        .map(|(g, w)| format!("{g:.8} vs {w:.8}"))
        .collect();
    eprintln!(
        "{} {name}: max |diff| {worst:.2e} at {at}; first: {}",
        if bad { "NOT OK" } else { "ok" },
        pairs.join(", ")
    );
    assert!(
        !bad,
        "{name}: beyond {abs:e} + {rel:e}·|want| (regenerate with `{regenerate}` if the reference changed)"
    );
}

/// A scratch folder of the system's temp dir, made empty, and removed with what the test wrote
/// into it when the test is done (the trainer's checkpoints are hundreds of MB a run).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A figure the book's prose quotes, held in `chapters/generated/{name}` and included by the
/// page (`{{#include generated/NAME}}`, inline in a sentence if need be), so no test asserts a
/// sentence and no number is typed by hand. Fails when the committed fragment is not what the
/// code computes now; `GPT2_TUTORIAL_WRITE_FRAGMENTS=1 cargo test` writes it instead.
pub fn fragment(name: &str, value: &str) {
    let path = root().join("chapters/generated").join(name);
    if std::env::var_os("GPT2_TUTORIAL_WRITE_FRAGMENTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, value).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        committed,
        value,
        "{} is not what the code computes now; rewrite it with \
         `GPT2_TUTORIAL_WRITE_FRAGMENTS=1 cargo test` and review the diff",
        path.display()
    );
}
