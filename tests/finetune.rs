//! The jokes fine-tune against PyTorch (tests/fixtures/jokes.json, written by
//! `scripts/reference/make_jokes_fixtures.py`): the bundled tiny model, dropout off, trained
//! for 3 optimizer steps of 4 packed jokes sequences (max_seq_len 64) - once as the tutorial
//! trains (transformers 4's AdamW, summed gradients, warm-up only, so the first step runs at
//! lr 0) and once as the fixed recipe (torch's AdamW, averaged gradients, clipping at 1.0,
//! warm-up then decay). Every sequence's loss, every step's lr and gradient norm, and a few
//! parameters after steps 1 and 3 must agree within 1e-5.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use gpt2_tutorial::data::{epoch_order, Jokes, JokesSource, Packer, PackingMode};
use gpt2_tutorial::train::{
    AdamWConfig, FineTuneSettings, LinearSchedule, LmFineTuner, TrainPrecision, TrainSettings,
    TrainStep,
};
use gpt2_tutorial::{Gpt2Tokenizer, Weights};
use serde_json::Value;

const REGENERATE_JOKES: &str = "python scripts/reference/make_jokes_fixtures.py";

// Tolerances (llm.c style: |got - want| <= ABS + REL·|want|).
/// Losses: a mean of ~50 cross-entropies of O(10) in f32, summed in different orders on the
/// two sides; measured up to 2.9e-6.
const LOSS_ABS: f64 = 1e-5;
/// Parameters: O(0.01..1) values moved by up to 3·lr = 3e-3; measured up to 6e-8 (a LayerNorm
/// gain near 1, one f32 ULP) and ~1e-9 elsewhere. AdamW's first steps move every weight by
/// about ±lr whatever the size of its gradient, so a gradient within rounding of 0 could flip
/// a step by 2e-3 - none does here, and this tolerance would catch one.
const PARAM_ABS: f64 = 1e-5;
const REL: f64 = 1e-5;

fn fixture() -> Value {
    versioned_fixture("jokes", REGENERATE_JOKES)
}

/// Compares `got` with `want` within `abs + REL·|want|`, printing the evidence first.
fn check(name: &str, got: &[f64], want: &[f64], abs: f64) {
    check_close(name, got, want, abs, REL, REGENERATE_JOKES);
}

/// The fixture's packed sequences, rebuilt with the data module: the bundled jokes in file
/// order, packed at max_seq_len 64 in `mode`.
fn sequences(mode: PackingMode, max_seq_len: usize) -> Vec<Vec<u32>> {
    let jokes = Jokes::load(&JokesSource::Bundled).unwrap();
    let tokenizer = Gpt2Tokenizer::bundled().unwrap();
    let tokenized = jokes.tokenize(&tokenizer).unwrap();
    let mut packer = Packer::new(mode, max_seq_len).unwrap();
    let order = epoch_order(tokenized.len(), 0, 0, false);
    let mut out = packer.pack_epoch(&tokenized, &order).unwrap();
    out.extend(packer.finish());
    out
}

/// A parameter's probe values as the fixture takes them: the first 8, the 8 at a stride, and
/// the f64 sum.
fn probe(weights: &Weights, name: &str, want: &Value) -> (Vec<f64>, Vec<f64>, f64) {
    let key = name.strip_prefix("transformer.").unwrap_or(name);
    let t = weights
        .get(key)
        .unwrap_or_else(|| panic!("no parameter {key}"));
    assert_eq!(
        t.dims().iter().map(|&d| d as u64).collect::<Vec<_>>(),
        want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect::<Vec<_>>(),
        "{name}: shape"
    );
    let flat = common::flat_f32(t);
    let stride = want["stride"].as_u64().unwrap() as usize;
    let first = flat.iter().take(8).map(|&x| f64::from(x)).collect();
    let strided = (0..8).map(|i| f64::from(flat[i * stride])).collect();
    let sum = flat.iter().map(|&x| f64::from(x)).sum();
    (first, strided, sum)
}

fn check_probes(recipe: &str, at: &str, weights: &Weights, want: &Value) {
    for (name, p) in want.as_object().unwrap() {
        let (first, strided, sum) = probe(weights, name, p);
        check(
            &format!("{recipe} {at} {name} first"),
            &first,
            &floats(&p["first"]),
            PARAM_ABS,
        );
        check(
            &format!("{recipe} {at} {name} strided"),
            &strided,
            &floats(&p["strided"]),
            PARAM_ABS,
        );
        // The sum of n values, each within ~1e-8 of PyTorch's: allow n·1e-8 (0.5 for wte).
        let n = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap())
            .product::<f64>();
        check(
            &format!("{recipe} {at} {name} sum"),
            &[sum],
            &[p["sum_f64"].as_f64().unwrap()],
            (n * 1e-8).max(PARAM_ABS),
        );
    }
}

/// Replays one of the fixture's runs and compares everything it recorded.
fn replay(recipe: &str) {
    let fx = fixture();
    let run = &fx["training"][recipe];
    let s = &run["settings"];
    let (max_seq_len, accumulate, steps) = (
        s["max_seq_len"].as_u64().unwrap() as usize,
        s["accumulate"].as_u64().unwrap() as usize,
        s["optimizer_steps"].as_u64().unwrap() as usize,
    );
    let mode = match s["packing"].as_str().unwrap() {
        "tutorial" => PackingMode::Tutorial,
        _ => PackingMode::Full,
    };
    let seqs = sequences(mode, max_seq_len);
    let want_seqs =
        &fx["packing"][max_seq_len.to_string()][s["packing"].as_str().unwrap()]["sequences"];
    for (i, want) in want_seqs
        .as_array()
        .unwrap()
        .iter()
        .take(accumulate * steps)
        .enumerate()
    {
        assert_eq!(seqs[i], ids(want), "{recipe}: packed sequence {i}");
    }
    let lens: Vec<f64> = seqs
        .iter()
        .take(accumulate * steps)
        .map(|s| s.len() as f64)
        .collect();
    assert_eq!(
        lens,
        floats(&run["sequence_lens"]),
        "{recipe}: sequence lengths"
    );

    // The bundled model with dropout off, in f32, as the fixture's model.
    let m = bundled();
    let mut cfg = m.config.clone();
    (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) = (0.0, 0.0, 0.0);
    let lr = s["lr"].as_f64().unwrap();
    let (adamw, average, clip) = match s["optimizer"].as_str().unwrap() {
        "transformers4_AdamW" => (AdamWConfig::tutorial(lr), false, None),
        "torch.optim.AdamW" => (AdamWConfig::torch(lr), true, s["clip_grad_norm"].as_f64()),
        other => panic!("unknown optimizer {other} in the fixture"),
    };
    let betas = floats(&s["betas"]);
    let adamw = AdamWConfig {
        beta1: betas[0],
        beta2: betas[1],
        eps: s["eps"].as_f64().unwrap(),
        weight_decay: s["weight_decay"].as_f64().unwrap(),
        ..adamw
    };
    assert_eq!(s["average_gradients"].as_bool(), Some(average));
    let total = s["num_training_steps"].as_i64().unwrap();
    let schedule = LinearSchedule::new(
        lr,
        s["warmup"].as_u64().unwrap() as usize,
        (total >= 0).then_some(total as usize),
    );
    let mut train = TrainStep::new(
        &m.weights,
        &cfg,
        TrainSettings::new(TrainPrecision::F32, adamw).seed(0),
    )
    .unwrap();
    let weight = if average {
        1.0 / accumulate as f64
    } else {
        1.0
    };

    let (mut seq_losses, mut losses, mut lrs, mut norms) = (vec![], vec![], vec![], vec![]);
    let mut next = seqs.iter();
    for step in 0..steps {
        for _ in 0..accumulate {
            let ids = Tensor::new(next.next().unwrap().as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            seq_losses.push(f64::from(train.accumulate(&ids, weight).unwrap()));
        }
        losses.push(*seq_losses.last().unwrap());
        lrs.push(schedule.lr(step));
        let report = train.apply(schedule.lr(step), clip).unwrap();
        norms.push(report.grad_norm.unwrap());
        if step == 0 || step == 2 {
            let at = format!("after_step_{}", step + 1);
            check_probes(recipe, &at, &train.weights().unwrap(), &run["probes"][&at]);
        }
    }
    check(
        &format!("{recipe} sequence losses"),
        &seq_losses,
        &floats(&run["sequence_losses"]),
        LOSS_ABS,
    );
    check(
        &format!("{recipe} step losses"),
        &losses,
        &floats(&run["losses"]),
        LOSS_ABS,
    );
    check(
        &format!("{recipe} step lrs"),
        &lrs,
        &floats(&run["step_lrs"]),
        0.0,
    );
    if run.get("grad_norms").is_some() {
        // The exact norm of PyTorch's gradients (summed in f64) closely: the crate sums the
        // squares in f32 lanes chunk by chunk and the chunks in f64. clip_grad_norm_'s own
        // value, which sums in f32 lanes over whole tensors, reads a few parts in a million low
        // (2.8e-5 relative at the worst step here): within that of it.
        check_close(
            &format!("{recipe} grad norms, exact"),
            &norms,
            &floats(&run["grad_norms_exact"]),
            0.0,
            1e-6,
            REGENERATE_JOKES,
        );
        check_close(
            &format!("{recipe} grad norms, clip_grad_norm_'s"),
            &norms,
            &floats(&run["grad_norms"]),
            0.0,
            5e-5,
            REGENERATE_JOKES,
        );
    }
}

/// The tutorial's recipe: transformers 4's AdamW (eps 1e-6 beside sqrt(v)), gradients summed
/// over 4 sequences, warm-up only - its first step at lr 0 leaves the weights as they were.
#[test]
fn tutorial_recipe_matches_pytorch() {
    replay("tutorial");
}

/// The fixed recipe: torch's AdamW, gradients averaged over 4 sequences and clipped at 1.0,
/// warm-up then linear decay.
#[test]
fn fixed_recipe_matches_pytorch() {
    replay("fixed");
}

/// The fixture's schedule values: the tutorial's epoch ends, past its warm-up, and warm-up
/// then decay.
#[test]
fn schedule_matches_transformers() {
    let fx = fixture();
    for (name, case) in fx["schedule"].as_object().unwrap() {
        if name == "note" {
            continue;
        }
        let total = case["num_training_steps"].as_i64().unwrap();
        let s = LinearSchedule::new(
            case["base_lr"].as_f64().unwrap(),
            case["num_warmup_steps"].as_u64().unwrap() as usize,
            (total >= 0).then_some(total as usize),
        );
        let got: Vec<f64> = case["k"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| s.lr(k.as_u64().unwrap() as usize))
            .collect();
        // The same f64 operations in the same order: equal to the last bit.
        check(&format!("schedule {name}"), &got, &floats(&case["lr"]), 0.0);
        if let Some(printed) = case.get("printed") {
            for (g, p) in got.iter().zip(floats(printed)) {
                assert_eq!(format!("{g:.2e}"), format!("{p:.2e}"), "{name}");
            }
        }
    }
}

/// The same two runs through chapter 6's loop itself (`LmFineTuner`, as the example runs it):
/// file order, the fixture's sizes, 3 optimizer steps; its history and weights must agree.
fn replay_loop(recipe: &str) {
    let fx = fixture();
    let run = &fx["training"][recipe];
    let s = &run["settings"];
    let m = bundled();
    let mut cfg = m.config.clone();
    (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) = (0.0, 0.0, 0.0);
    let lr = s["lr"].as_f64().unwrap();
    let mut settings = match recipe {
        "tutorial" => FineTuneSettings::tutorial(),
        _ => FineTuneSettings::fixed(),
    };
    settings.lr = lr;
    settings.warmup = Some(s["warmup"].as_u64().unwrap() as usize);
    settings.accumulate = s["accumulate"].as_u64().unwrap() as usize;
    settings.max_seq_len = s["max_seq_len"].as_u64().unwrap() as usize;
    settings.max_steps = Some(s["optimizer_steps"].as_u64().unwrap() as usize);
    settings.shuffle = false;
    let tokenized = Jokes::load(&JokesSource::Bundled)
        .unwrap()
        .tokenize(&m.tokenizer)
        .unwrap();
    // Nothing saved: the loop's own arithmetic is what is checked.
    let mut trainer = LmFineTuner::new(&m.weights, &cfg, tokenized, settings).unwrap();
    let report = trainer.run().unwrap();
    let losses: Vec<f64> = report.history.steps.iter().map(|r| r.loss).collect();
    let lrs: Vec<f64> = report.history.steps.iter().map(|r| r.lr).collect();
    check(
        &format!("loop {recipe} step losses"),
        &losses,
        &floats(&run["losses"]),
        LOSS_ABS,
    );
    check(
        &format!("loop {recipe} step lrs"),
        &lrs,
        &floats(&run["step_lrs"]),
        0.0,
    );
    let weights = trainer.weights().unwrap();
    check_probes(
        recipe,
        "after_step_3",
        &weights,
        &run["probes"]["after_step_3"],
    );
}

#[test]
fn tutorial_loop_matches_pytorch() {
    replay_loop("tutorial");
}

#[test]
fn fixed_loop_matches_pytorch() {
    replay_loop("fixed");
}
