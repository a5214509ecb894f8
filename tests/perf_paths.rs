//! The fast paths the benchmark relies on compute what the plain paths compute, and the
//! benchmark's workloads do what they say. Nothing here is timed: `examples/bench.rs` measures
//! speed, these tests only check results.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;
use gpt2_tutorial::bench::{self, TrainStep};
use gpt2_tutorial::dropout::Dropout;
use gpt2_tutorial::kernels;
use gpt2_tutorial::weights::normal_tensor;
use gpt2_tutorial::{generation, Gpt2Config, Gpt2LmHeadModel, KvCache, Weights};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The fast paths compute the same dot products, but the matrix-vector kernel may sum a row in
/// another SIMD order depending on where its chunk starts: a few ulps of O(1) values, ~1e-6 at
/// GPT-2's widths (measured up to 2e-7 relative). 1e-5 on O(1) outputs leaves a 10x margin.
const FAST_PATH_TOL: f32 = 1e-5;

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], std: f64) -> Tensor {
    normal_tensor(rng, shape, std, &Device::Cpu).unwrap()
}

/// Inputs of unit scale and weights of std 1/sqrt(fan-in), so every output is O(1).
fn unit_input(rng: &mut ChaCha8Rng, n: usize) -> Tensor {
    randn(rng, &[1, n], 1.0)
}

fn input(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

#[test]
fn one_row_linear_equals_matmul_plus_bias() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Widths that are not multiples of the chunk alignment, and GPT-2's own.
    for (n_in, n_out) in [(70, 203), (768, 2304), (3, 1), (64, 17)] {
        let x = unit_input(&mut rng, n_in);
        let w = randn(&mut rng, &[n_in, n_out], 1.0 / (n_in as f64).sqrt());
        let b = randn(&mut rng, &[n_out], 1.0);
        let fast = kernels::linear_one_row(&x, &w, &b)
            .unwrap()
            .expect("eligible");
        let plain = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
        assert_close(
            &format!("linear {n_in}x{n_out}"),
            &fast,
            &plain,
            FAST_PATH_TOL,
        );
    }
}

#[test]
fn one_row_tied_head_equals_matmul_with_transposed_wte() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (v, c) in [(50257, 64), (1000, 768), (5, 3)] {
        let x = unit_input(&mut rng, c);
        let wte = randn(&mut rng, &[v, c], 1.0 / (c as f64).sqrt());
        let fast = kernels::tied_head_one_row(&x, &wte)
            .unwrap()
            .expect("eligible");
        let plain = x.matmul(&wte.t().unwrap()).unwrap();
        assert_close(&format!("head {v}x{c}"), &fast, &plain, FAST_PATH_TOL);
    }
}

#[test]
fn fast_paths_stand_aside_where_they_do_not_apply() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let w = randn(&mut rng, &[8, 4], 1.0);
    let b = randn(&mut rng, &[4], 1.0);
    // Two rows: the plain matmul is already threaded.
    let two = randn(&mut rng, &[2, 8], 1.0);
    assert!(kernels::linear_one_row(&two, &w, &b).unwrap().is_none());
    // Half precision, and anything that needs a gradient, take the plain path.
    let half = unit_input(&mut rng, 8).to_dtype(DType::F16).unwrap();
    let (w16, b16) = (
        w.to_dtype(DType::F16).unwrap(),
        b.to_dtype(DType::F16).unwrap(),
    );
    assert!(kernels::linear_one_row(&half, &w16, &b16)
        .unwrap()
        .is_none());
    let var = candle_core::Var::from_tensor(&w).unwrap();
    let one = unit_input(&mut rng, 8);
    assert!(kernels::linear_one_row(&one, var.as_tensor(), &b)
        .unwrap()
        .is_none());
    assert!(kernels::tied_head_one_row(&one, var.as_tensor())
        .unwrap()
        .is_none());
}

#[test]
fn cached_decoding_with_fast_paths_equals_the_plain_model() {
    // The trainable model's weights are Vars, which keep it on the plain path throughout; the
    // inference model takes the fast paths for every single-token step.
    let m = bundled();
    let fast = bundled_lm();
    let varmap = m.weights.to_varmap().unwrap();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let plain = Gpt2LmHeadModel::load(vb, &m.config, &Dropout::seeded(0)).unwrap();
    let ids = m.tokenizer.encode(bench::PROMPT).unwrap();
    let (mut fc, mut pc) = (
        KvCache::new(m.config.n_layer),
        KvCache::new(m.config.n_layer),
    );
    let mut x = input(&ids);
    for step in 0..12 {
        let a = fast.forward_last(&x, None, Some(&mut fc)).unwrap();
        let b = plain
            .forward_last(&x, None, Some(&mut pc))
            .unwrap()
            .detach();
        assert_close(&format!("step {step} logits"), &a, &b, FAST_PATH_TOL);
        let next = a
            .argmax(1)
            .unwrap()
            .i(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        x = input(&[next]);
    }
}

#[test]
fn cached_and_naive_loops_pick_the_same_tokens() {
    let m = bundled();
    let model = bundled_lm();
    let prompt = m.tokenizer.encode(bench::PROMPT).unwrap();
    assert_eq!(prompt.len(), 8, "the tutorial's prompt is 8 tokens");
    let cached = bench::cached_greedy(&model, &prompt, bench::DECODE_TOKENS).unwrap();
    let naive = bench::naive_greedy(&model, &prompt, bench::DECODE_TOKENS).unwrap();
    // Exactly 64 new tokens whatever they are: a benchmark must do the same work every run.
    assert_eq!(cached.len(), prompt.len() + bench::DECODE_TOKENS);
    assert_eq!(cached, naive);
    // The library's `greedy` (which would stop at <|endoftext|>) picks the same tokens.
    let stops = generation::greedy(&model, &prompt, bench::DECODE_TOKENS).unwrap();
    assert_eq!(cached[..stops.len()], stops[..]);
}

#[test]
fn long_input_is_the_formula_the_python_side_uses() {
    let ids = bench::long_input(bench::LONG_TOKENS, 50257);
    assert_eq!(ids.len(), 500);
    assert_eq!(&ids[..4], &[17, 1026, 2035, 3044]);
    assert_eq!(ids[499], ((1009 * 499 + 17) % 50257) as u32);
}

#[test]
fn a_training_step_lowers_the_loss_it_reports() {
    let m = bundled();
    let ids = input(&bench::long_input(32, m.config.vocab_size));
    let mut train = TrainStep::new(&m.weights, &m.config, 1e-2, 0).unwrap();
    // The loss reported is the one of the weights before the update: with dropout on it is not
    // the eval-mode loss, so check instead that repeated steps on one sequence learn it.
    let first = train.step(&ids).unwrap();
    let mut last = first;
    for _ in 0..4 {
        last = train.step(&ids).unwrap();
    }
    assert!(first.is_finite() && last < first, "loss {first} -> {last}");
    // The updates reach the VarMap the model reads from.
    let after = Weights::from_varmap(&train.varmap).unwrap();
    let before = m.weights.get("h.0.attn.c_attn.weight").unwrap();
    let moved = (after.get("h.0.attn.c_attn.weight").unwrap() - before)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 0.0);
}

#[test]
fn prepared_model_loads_and_is_kept_when_unchanged() {
    let dir = std::env::temp_dir().join(format!("gpt2-bench-prepare-{}", std::process::id()));
    let cfg = Gpt2Config::tiny();
    assert!(bench::prepare_model(&dir, &cfg, 5).unwrap());
    assert!(
        !bench::prepare_model(&dir, &cfg, 5).unwrap(),
        "second call rewrites"
    );
    let back = Weights::load(
        &dir.join("model.safetensors"),
        &cfg,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let fresh = Weights::init(&cfg, 5, &Device::Cpu).unwrap();
    assert_eq!(back.names(), fresh.names());
    assert_close(
        "prepared wte",
        back.get("wte.weight").unwrap(),
        fresh.get("wte.weight").unwrap(),
        0.0,
    );
    // Another shape in the same place is written anew.
    let wider = Gpt2Config {
        n_embd: 128,
        ..Gpt2Config::tiny()
    };
    assert!(bench::prepare_model(&dir, &wider, 5).unwrap());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn peak_rss_is_read_from_proc_in_bytes() {
    let before = bench::peak_rss_bytes().unwrap();
    // Touch 64 MiB: the high-water mark, in bytes (not kB), has to be at least that.
    let big = vec![1u8; 64 << 20];
    let after = bench::peak_rss_bytes().unwrap();
    assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    assert!(after >= before && after >= 64 << 20, "{before} -> {after}");
}
