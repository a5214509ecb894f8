//! The parts of the fine-tuning loops (src/train/): the schedule against the tutorial's printed
//! learning rates, the weight-decay groups, clipping and both AdamWs against hand computations,
//! gradient accumulation, and state that resumes bit for bit - optimizer, dropout generator,
//! whole checkpoints, written so that a failed save never costs the last good one.

mod common;

use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use gpt2_tutorial::dropout::Dropout;
use gpt2_tutorial::train::{
    clip_grad_norm, decays, load_checkpoint, save_checkpoint, AdamW, AdamWConfig, AdamWVariant,
    HalfMoments, LinearSchedule, TrainPrecision, TrainSettings, TrainStep,
};
use gpt2_tutorial::{Error, Gpt2Tokenizer, LoadedModel, ModelSource, Weights};

/// A fresh, empty directory under the system's temp dir, unique to this test and process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gpt2-tutorial-train-parts-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tokenizer() -> Gpt2Tokenizer {
    Gpt2Tokenizer::from_file(&root().join("data/gpt2-tokenizer/tokenizer.json")).unwrap()
}

/// Token ids of `len` made-up tokens, `(1, len)`; `offset` makes different sequences.
fn seq(len: usize, offset: u32) -> Tensor {
    let ids: Vec<u32> = (0..len as u32)
        .map(|i| (i * 7919 + offset * 104_729) % 50_000)
        .collect();
    Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

/// The tutorial prints `scheduler.get_last_lr()` at the end of each of its 5 epochs, with lr
/// 3e-6 and 5000 warm-up steps; it does not print the step counts. 385, 770, 1155, 1541 and
/// 1933 are inferred (one epoch of 385 steps, five of them), and give its printed rates.
#[test]
fn the_schedule_gives_the_tutorials_epoch_end_learning_rates() {
    let schedule = LinearSchedule::new(3e-6, 5000, None);
    let got: Vec<String> = [385, 770, 1155, 1541, 1933]
        .iter()
        .map(|&k| format!("{:.2e}", schedule.lr(k)))
        .collect();
    assert_eq!(got, ["2.31e-7", "4.62e-7", "6.93e-7", "9.25e-7", "1.16e-6"]);
    assert_eq!(schedule.lr(0), 0.0, "the first optimizer step runs at lr 0");
}

/// Warm-up then linear decay, and transformers' `num_training_steps=-1` (here `None`), which
/// drops to 0 once warm-up is over.
#[test]
fn the_schedule_warms_up_and_decays_as_transformers() {
    let s = LinearSchedule::new(1.0, 2, Some(6));
    let got: Vec<f64> = (0..8).map(|k| s.factor(k)).collect();
    assert_eq!(got, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
    let s = LinearSchedule::new(2.0, 3, None);
    let got: Vec<f64> = (0..5).map(|k| s.lr(k)).collect();
    assert_eq!(got, [0.0, 2.0 / 3.0, 4.0 / 3.0, 0.0, 0.0]);
    // No warm-up: transformers' Trainer default; full lr at once, 0 at the end.
    let s = LinearSchedule::new(1.0, 0, Some(4));
    let got: Vec<f64> = (0..5).map(|k| s.factor(k)).collect();
    assert_eq!(got, [1.0, 0.75, 0.5, 0.25, 0.0]);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<LinearSchedule>(&json).unwrap(), s);
}

/// transformers' Trainer decays every parameter except biases and LayerNorm parameters.
#[test]
fn weight_decay_groups_follow_the_trainer_on_every_parameter() {
    let names: Vec<String> = bundled().weights.names();
    assert_eq!(names.len(), 2 + 12 * 2 + 2);
    let mut decayed = Vec::new();
    for name in &names {
        let want = !(name.ends_with(".bias") || name.contains("ln_"));
        assert_eq!(decays(name), want, "{name}");
        if want {
            decayed.push(name.as_str());
        }
    }
    assert_eq!(
        decayed,
        [
            "h.0.attn.c_attn.weight",
            "h.0.attn.c_proj.weight",
            "h.0.mlp.c_fc.weight",
            "h.0.mlp.c_proj.weight",
            "h.1.attn.c_attn.weight",
            "h.1.attn.c_proj.weight",
            "h.1.mlp.c_fc.weight",
            "h.1.mlp.c_proj.weight",
            "wpe.weight",
            "wte.weight"
        ]
    );
    assert!(decays("score.weight"));
    assert!(!decays("transformer.ln_f.weight"));
    assert!(!decays("score.bias"));
}

/// Gradients equal to constants: `loss = Σ w·c` has gradient `c`.
fn constant_grads(pairs: &[(&Var, &[f32])]) -> GradStore {
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (w, c) in pairs {
        let c = Tensor::new(*c, &Device::Cpu).unwrap();
        let term = (w.as_tensor() * c).unwrap().sum_all().unwrap();
        loss = (loss + term).unwrap();
    }
    loss.backward().unwrap()
}

fn values(v: &Var) -> Vec<f32> {
    v.as_tensor().to_vec1().unwrap()
}

/// Gradients (3, 4) and (12,) have a joint norm of 13: clipped to 6.5 they halve (up to the
/// 1e-6 PyTorch adds), clipped to 100 nothing changes.
#[test]
fn clipping_scales_all_gradients_by_their_joint_norm() {
    let a = Var::new(&[0f32, 0.0], &Device::Cpu).unwrap();
    let b = Var::new(&[0f32], &Device::Cpu).unwrap();
    let vars = [a.clone(), b.clone()];
    let mut grads = constant_grads(&[(&a, &[3.0, 4.0]), (&b, &[12.0])]);
    let total = clip_grad_norm(&mut grads, &vars, 100.0).unwrap();
    assert_eq!(total, 13.0);
    assert_eq!(grads.get(&a).unwrap().to_vec1::<f32>().unwrap(), [3.0, 4.0]);
    let total = clip_grad_norm(&mut grads, &vars, 6.5).unwrap();
    assert_eq!(total, 13.0);
    let coef = 6.5f32 / (13.0 + 1e-6);
    assert_eq!(
        grads.get(&a).unwrap().to_vec1::<f32>().unwrap(),
        [3.0 * coef, 4.0 * coef]
    );
    assert_eq!(
        grads.get(&b).unwrap().to_vec1::<f32>().unwrap(),
        [12.0 * coef]
    );
    let mut grads = constant_grads(&[(&a, &[f32::NAN, 0.0]), (&b, &[1.0])]);
    assert!(clip_grad_norm(&mut grads, &vars, 1.0).unwrap().is_nan());
}

/// Both AdamWs by hand, in f64, from their PyTorch source: `w` decays (a weight), `b` does not
/// (a bias). A large eps makes the variants' difference, where eps goes, plain to see.
fn hand_adamw(variant: AdamWVariant, steps: usize, w0: f64, g: f64, decay: bool) -> f64 {
    let (lr, b1, b2, eps): (f64, f64, f64, f64) = (0.1, 0.9, 0.999, 1e-2);
    let wd = if decay { 0.5 } else { 0.0 };
    let (mut w, mut m, mut v) = (w0, 0.0, 0.0);
    for t in 1..=steps as i32 {
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        match variant {
            AdamWVariant::Torch => {
                w *= 1.0 - lr * wd;
                w -= lr / bc1 * m / (v.sqrt() / bc2.sqrt() + eps);
            }
            AdamWVariant::Transformers4 => {
                w -= lr * bc2.sqrt() / bc1 * m / (v.sqrt() + eps);
                w -= lr * wd * w;
            }
        }
    }
    w
}

#[test]
fn both_adamws_match_a_hand_computation_for_one_and_two_steps() {
    let (w0, gw) = ([1.0f32, -2.0], [0.5f32, -0.1]);
    let (b0, gb) = ([0.25f32, 3.0], [-0.3f32, 0.02]);
    let mut after_two = Vec::new();
    for variant in [AdamWVariant::Torch, AdamWVariant::Transformers4] {
        let w = Var::new(&w0, &Device::Cpu).unwrap();
        let b = Var::new(&b0, &Device::Cpu).unwrap();
        let config = AdamWConfig {
            eps: 1e-2,
            weight_decay: 0.5,
            variant,
            ..AdamWConfig::torch(0.1)
        };
        let named = vec![
            ("h.0.mlp.c_fc.weight".to_string(), w.clone()),
            ("h.0.mlp.c_fc.bias".to_string(), b.clone()),
        ];
        let mut opt = AdamW::new(named, config).unwrap();
        for steps in 1..=2 {
            opt.step(&constant_grads(&[(&w, &gw), (&b, &gb)])).unwrap();
            assert_eq!(opt.step_count(), steps);
            for (var, x0, g, decay) in [(&w, w0, gw, true), (&b, b0, gb, false)] {
                for (i, got) in values(var).into_iter().enumerate() {
                    let want = hand_adamw(variant, steps, x0[i].into(), g[i].into(), decay);
                    let diff = (f64::from(got) - want).abs();
                    eprintln!("{variant:?} step {steps} decay {decay} [{i}]: {got} vs {want}");
                    assert!(
                        diff <= 1e-6 + 1e-6 * want.abs(),
                        "{variant:?}: diff {diff:e}"
                    );
                }
            }
        }
        after_two.push(values(&w));
    }
    assert!(
        (after_two[0][0] - after_two[1][0]).abs() > 1e-2,
        "the variants differ: {after_two:?}"
    );
}

/// The tutorial's `model.half()` AdamW: moments in f16 and every result rounded to f16.
/// `eps` = 1e-8 is below f16's smallest number and rounds away, so a gradient whose squared
/// average underflows too divides by 0: the weight becomes -inf, as in PyTorch.
#[test]
fn half_moments_like_pytorch_round_every_operation() {
    let dev = Device::Cpu;
    let w = Var::from_tensor(
        &Tensor::new(&[1f32, 1.0], &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    )
    .unwrap();
    let g = Tensor::new(&[1e-3f32, 0.5], &dev)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let mut grads = constant_grads(&[]);
    grads.insert(w.as_tensor(), g);
    let named = vec![("wte.weight".to_string(), w.clone())];
    let like = AdamWConfig {
        half_moments: HalfMoments::LikeWeights,
        ..AdamWConfig::torch(1e-3)
    };
    let mut opt = AdamW::new(named.clone(), like).unwrap();
    opt.step(&grads).unwrap();
    let (m, v) = opt.moments("wte.weight").unwrap();
    assert_eq!((m.dtype(), v.dtype()), (DType::F16, DType::F16));
    // v = 0.001 · (1e-3)² = 1e-9 underflows f16 (smallest 6e-8): denominator 0 + eps(→0) = 0.
    let got: Vec<f32> = w
        .as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(
        got[0],
        f32::NEG_INFINITY,
        "1 - lr·m/0 with m = 1e-4 in f16: {got:?}"
    );
    assert!((got[1] - (1.0 - 1e-3)).abs() < 1e-3, "{got:?}");

    // With f32 moments the same step is a fine update of -lr·sign(g), lost to f16's rounding
    // at 1 (a step of 1e-3 is half of f16's spacing there, 9.8e-4, and rounds to even).
    let w = Var::from_tensor(
        &Tensor::new(&[1f32, 1.0], &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    )
    .unwrap();
    let mut grads = constant_grads(&[]);
    grads.insert(
        w.as_tensor(),
        Tensor::new(&[1e-3f32, 0.5], &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    );
    let mut opt = AdamW::new(
        vec![("wte.weight".to_string(), w.clone())],
        AdamWConfig::torch(1e-3),
    )
    .unwrap();
    opt.step(&grads).unwrap();
    assert_eq!(opt.moments("wte.weight").unwrap().0.dtype(), DType::F32);
    let got: Vec<f32> = w
        .as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(got.iter().all(|x| x.is_finite()), "{got:?}");
}

/// An f16 tensor from raw IEEE half bits.
fn f16_from_bits(bits: &[u16]) -> Tensor {
    let values: Vec<f32> = bits
        .iter()
        .map(|&b| half::f16::from_bits(b).to_f32())
        .collect();
    let n = values.len();
    Tensor::from_vec(values, n, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
}

/// The raw bits of an f16 tensor; every NaN as one pattern (PyTorch's and candle's NaNs may
/// carry different payloads, and a NaN is a NaN).
fn f16_bits(t: &Tensor) -> Vec<u16> {
    t.to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&x| match x.is_nan() {
            true => 0x7E00,
            false => half::f16::from_f32(x).to_bits(),
        })
        .collect()
}

/// `adamw_torch` on an f16 parameter - what transformers' Trainer runs on the tutorial's
/// `.half()` classifier - is PyTorch's bit for bit over two steps (fixture: torch.optim.AdamW
/// on 96 f16 values, gradients from 0 to 1): moments in f16, eps 1e-8 rounded away, and the
/// division by zero that follows where the second moment underflows - the same infinities and
/// NaNs in the same places. Tolerance 0: the same operations rounded the same way.
#[test]
fn adamw_on_f16_weights_is_pytorchs_bit_for_bit() {
    let fx = versioned_fixture(
        "trainer_f16",
        "python scripts/reference/make_trainer_fixtures.py --half-only",
    );
    let fx = &fx["adamw"];
    let bits = |v: &serde_json::Value| -> Vec<u16> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u16)
            .collect()
    };
    let canonical = |b: Vec<u16>| -> Vec<u16> {
        b.into_iter()
            .map(|x| match half::f16::from_bits(x).is_nan() {
                true => 0x7E00,
                false => x,
            })
            .collect()
    };
    let w = Var::from_tensor(&f16_from_bits(&bits(&fx["w0"]))).unwrap();
    // A name that decays, as every Conv1D weight: the fixture's weight decay applies.
    let name = "h.0.mlp.c_fc.weight";
    let config = AdamWConfig {
        weight_decay: fx["weight_decay"].as_f64().unwrap(),
        eps: fx["eps"].as_f64().unwrap(),
        half_moments: HalfMoments::LikeWeights,
        ..AdamWConfig::torch(fx["lr"].as_f64().unwrap())
    };
    let mut opt = AdamW::new(vec![(name.to_string(), w.clone())], config).unwrap();
    let grads = fx["grads"].as_array().unwrap();
    for (step, (g, want)) in grads
        .iter()
        .zip(fx["steps"].as_array().unwrap())
        .enumerate()
    {
        let mut store = constant_grads(&[]);
        store.insert(w.as_tensor(), f16_from_bits(&bits(g)));
        opt.step(&store).unwrap();
        let (m, v) = opt.moments(name).unwrap();
        assert_eq!((m.dtype(), v.dtype()), (DType::F16, DType::F16));
        for (what, got, want) in [
            ("weights", f16_bits(w.as_tensor()), &want["w"]),
            ("exp_avg", f16_bits(m), &want["exp_avg"]),
            ("exp_avg_sq", f16_bits(v), &want["exp_avg_sq"]),
        ] {
            assert_eq!(got, canonical(bits(want)), "step {}: {what}", step + 1);
        }
    }
}

/// The figures chapter 7 quotes about AdamW on f16 weights, from this crate's AdamW: f16's
/// smallest subnormal (what eps 1e-8 is compared with), and the largest gradient whose first
/// update divides by zero - below it `(1 - beta2)·g²` rounds to 0 in f16, so the denominator
/// `sqrt(v) + eps` is 0 and the weight becomes infinite.
#[test]
fn adamw_on_f16_divides_by_zero_below_a_gradient_size() {
    let tiny = half::f16::from_bits(1).to_f32();
    assert_eq!(tiny, 2f32.powi(-24));
    assert_eq!(
        half::f16::from_f64(1e-8).to_f32(),
        0.0,
        "eps 1e-8 is 0 in f16"
    );
    // Every positive finite f16 gradient, one step from weight 0.5 (a weight f16 holds with
    // room: a finite update stays finite).
    let grads: Vec<u16> = (1..0x7C00).collect();
    let n = grads.len();
    let w = Var::from_tensor(
        &Tensor::full(0.5f32, n, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    )
    .unwrap();
    let config = AdamWConfig {
        half_moments: HalfMoments::LikeWeights,
        ..AdamWConfig::torch(1e-3)
    };
    let mut opt = AdamW::new(vec![("wte.weight".to_string(), w.clone())], config).unwrap();
    let mut store = constant_grads(&[]);
    store.insert(w.as_tensor(), f16_from_bits(&grads));
    opt.step(&store).unwrap();
    let after = w
        .as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let g = |i: usize| half::f16::from_bits(grads[i]).to_f32();
    // The updates that divide by zero are exactly those below a threshold: infinite, or NaN
    // (0/0) where the first moment `0.1·g` rounds to 0 as well; every larger gradient gives a
    // finite weight.
    let last_bad = after.iter().rposition(|x| !x.is_finite()).unwrap();
    assert!(after[..=last_bad].iter().all(|x| !x.is_finite()));
    assert!(after[last_bad + 1..].iter().all(|x| x.is_finite()));
    let threshold = g(last_bad + 1);
    assert!((5.4e-3..5.5e-3).contains(&threshold), "{threshold}");
    fragment("07_f16_smallest_subnormal.md", &format!("{tiny:.2e}"));
    fragment(
        "07_f16_second_moment_underflow_below.md",
        &format!("{threshold:.2e}"),
    );
}

fn tiny_train(precision: TrainPrecision, adamw: AdamWConfig) -> TrainStep {
    let m = bundled();
    TrainStep::new(
        &m.weights,
        &m.config,
        TrainSettings::new(precision, adamw).seed(11),
    )
    .unwrap()
}

/// Two micro-steps weighted 1/2 each give the gradient of the mean loss of a batch holding
/// both sequences (same length, so the same mean over tokens): the same update.
#[test]
fn accumulating_half_weighted_micro_steps_equals_one_batch() {
    let (a, b) = (seq(12, 1), seq(12, 2));
    let mut acc = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    acc.set_dropout(false);
    let la = acc.accumulate(&a, 0.5).unwrap();
    let lb = acc.accumulate(&b, 0.5).unwrap();
    assert_eq!(acc.micro_steps(), 2);
    let report = acc.apply(1e-3, None).unwrap();
    assert!(report.applied && report.grad_norm.unwrap() > 0.0);
    assert_eq!((acc.micro_steps(), acc.step_count()), (0, 1));

    let mut batch = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    batch.set_dropout(false);
    let both = Tensor::cat(&[&a, &b], 0).unwrap();
    let l = batch.accumulate(&both, 1.0).unwrap();
    assert!((l - (la + lb) / 2.0).abs() < 1e-5, "{l} vs {la}, {lb}");
    let norm = batch.apply(1e-3, None).unwrap().grad_norm.unwrap();
    assert!((norm - report.grad_norm.unwrap()).abs() < 1e-5 * norm);
    let (x, y) = (acc.weights().unwrap(), batch.weights().unwrap());
    for name in x.names() {
        // AdamW's first step is ±lr wherever the gradient is not ~0, so only where rounding
        // flips the sign of a near-zero gradient can the two differ, by up to 2·lr.
        let d = max_abs_diff(x.get(&name).unwrap(), y.get(&name).unwrap());
        assert!(d <= 2e-3, "{name}: {d}");
    }
    assert!(acc.apply(1e-3, None).is_err(), "nothing accumulated");
}

/// Every weight's gradient is a plain tensor, holding no graph. One computed from the forward
/// tensors (the kernels' `x.t().matmul(g)`) would be a node itself, keeping its operands - the
/// gradient it came from, candle's zeros it was added to - alive to the end of the backward
/// pass: 1.2 GB more at the peak of a 500-token gpt2 step, before the kernels detached them.
#[test]
fn weight_gradients_hold_no_graph() {
    let train = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    let grads = train.forward(&seq(12, 1)).unwrap().backward().unwrap();
    let vars = train.varmap().data().lock().unwrap();
    assert!(!vars.is_empty());
    for (name, var) in vars.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(
            !g.track_op(),
            "{name}: its gradient holds the graph that made it"
        );
    }
}

/// AdamW's two moments are buffers of their own from the start: the in-place update writes
/// both, and one shared buffer sent the first step down the allocating path (a gigabyte of
/// temporaries at gpt2 size, the peak of a short run).
#[test]
fn adamw_moments_start_as_separate_buffers() {
    let train = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    let adamw = train.optimizer();
    for name in bundled().weights.names() {
        let (m, v) = adamw.moments(&name).unwrap();
        assert_ne!(m.id(), v.id(), "{name}");
    }
}

/// A NaN loss stops at the micro-step, naming the optimizer step and what was not finite.
#[test]
fn a_non_finite_loss_names_the_step() {
    let m = bundled();
    let mut weights = m.weights.clone();
    let bias = weights.get("ln_f.bias").unwrap();
    weights.insert(
        "ln_f.bias",
        Tensor::full(f32::NAN, bias.shape(), &Device::Cpu).unwrap(),
    );
    let settings = TrainSettings::new(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    let mut train = TrainStep::new(&weights, &m.config, settings).unwrap();
    let e = train.accumulate(&seq(8, 0), 1.0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFiniteLoss {
                what: "loss",
                step: 1,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("optimizer step 1") && text.contains("before updating the weights"),
        "{text}"
    );
}

/// Same seed, same state: after a restore the generator draws the masks it drew before.
#[test]
fn dropout_state_restores_the_same_masks() {
    let mut d = Dropout::seeded(3).with_p(0.5);
    d.set_training(true);
    let x = Tensor::ones((4, 64), DType::F32, &Device::Cpu).unwrap();
    let _ = d.forward(&x).unwrap();
    let state = d.rng_state().unwrap();
    let json = serde_json::to_string(&state).unwrap();
    let second = d.forward(&x).unwrap();
    let third = d.forward(&x).unwrap();
    assert!(
        max_abs_diff(&second, &third) > 0.0,
        "masks differ draw to draw"
    );
    let other = Dropout::seeded(99).with_p(0.5);
    let mut other = other;
    other.set_training(true);
    other
        .set_rng_state(&serde_json::from_str(&json).unwrap())
        .unwrap();
    assert_eq!(max_abs_diff(&other.forward(&x).unwrap(), &second), 0.0);
    assert_eq!(max_abs_diff(&other.forward(&x).unwrap(), &third), 0.0);
}

/// The caller's part of a checkpoint in these tests.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct LoopState {
    step: usize,
    losses: Vec<f32>,
}

/// A checkpoint of `train` in `dir`, its loop at optimizer step `step`.
fn save_at(dir: &Path, train: &TrainStep, step: usize) {
    let state = LoopState {
        step,
        losses: vec![],
    };
    save_checkpoint(dir, train, &tokenizer(), &state).unwrap();
}

/// `n` optimizer steps of 2 micro-steps each, from `seq` offsets `from..`; the losses.
fn run(train: &mut TrainStep, from: u32, n: u32) -> Vec<f32> {
    let schedule = LinearSchedule::new(1e-3, 2, Some(8));
    let mut losses = Vec::new();
    for k in from..from + n {
        losses.push(train.accumulate(&seq(10, 2 * k), 1.0).unwrap());
        losses.push(train.accumulate(&seq(10, 2 * k + 1), 1.0).unwrap());
        train
            .apply(schedule.lr(train.step_count()), Some(1.0))
            .unwrap();
    }
    losses
}

fn assert_same_weights(a: &Weights, b: &Weights) {
    for name in a.names() {
        let d = max_abs_diff(
            &a.get(&name).unwrap().to_dtype(DType::F32).unwrap(),
            &b.get(&name).unwrap().to_dtype(DType::F32).unwrap(),
        );
        assert_eq!(d, 0.0, "{name}");
    }
}

/// Stop after 2 steps, save, load, go on: the losses and weights of an uninterrupted run, bit
/// for bit - with dropout on, so the generator's state matters too - in f32 and in pure f16
/// with PyTorch-like f16 moments.
#[test]
fn a_checkpoint_resumes_bit_for_bit() {
    for (name, precision, adamw) in [
        ("f32", TrainPrecision::F32, AdamWConfig::torch(1e-3)),
        (
            "f16",
            TrainPrecision::Pure(DType::F16),
            AdamWConfig::tutorial(1e-3),
        ),
    ] {
        let dir = scratch(&format!("resume-{name}")).join("checkpoint");
        let mut straight = tiny_train(precision, adamw);
        let mut want = run(&mut straight, 0, 2);
        want.extend(run(&mut straight, 2, 2));

        let mut first = tiny_train(precision, adamw);
        let losses = run(&mut first, 0, 2);
        let state = LoopState { step: 2, losses };
        save_checkpoint(&dir, &first, &tokenizer(), &state).unwrap();
        drop(first);
        let ckpt = load_checkpoint(&dir, &Device::Cpu).unwrap();
        let back: LoopState = ckpt.state().unwrap();
        assert_eq!(back, state);
        assert_eq!(ckpt.weights.dtype(), precision.weight_dtype());
        let mut resumed = ckpt.train_step().unwrap();
        assert_eq!(resumed.step_count(), 2);
        let mut got = back.losses;
        got.extend(run(&mut resumed, 2, 2));
        assert_eq!(got, want, "{name}: losses");
        assert_same_weights(&resumed.weights().unwrap(), &straight.weights().unwrap());
        let (m1, v1) = resumed.optimizer().moments("wte.weight").unwrap();
        let (m2, v2) = straight.optimizer().moments("wte.weight").unwrap();
        assert_eq!(
            max_abs_diff(
                &m1.to_dtype(DType::F32).unwrap(),
                &m2.to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
        assert_eq!(
            max_abs_diff(
                &v1.to_dtype(DType::F32).unwrap(),
                &v2.to_dtype(DType::F32).unwrap()
            ),
            0.0
        );
    }
}

/// The optimizer's own file round-trips: config, step count, every moment.
#[test]
fn optimizer_state_round_trips() {
    let mut train = tiny_train(TrainPrecision::F32, AdamWConfig::tutorial(1e-3));
    run(&mut train, 0, 1);
    let dir = scratch("optimizer");
    let path = dir.join("optimizer.safetensors");
    let opt = train.optimizer();
    opt.save(&path).unwrap();
    let named = gpt2_tutorial::train::named_vars(train.varmap()).unwrap();
    let back = AdamW::load(&path, named.clone()).unwrap();
    assert_eq!(back.config(), opt.config());
    assert_eq!(back.step_count(), 1);
    for (name, _) in &named {
        let (a, b) = (back.moments(name).unwrap(), opt.moments(name).unwrap());
        assert_eq!(
            max_abs_diff(a.0, b.0) + max_abs_diff(a.1, b.1),
            0.0,
            "{name}"
        );
    }
    // A model with a parameter the state does not have is refused, naming it.
    let mut more = named;
    more.push((
        "score.weight".into(),
        Var::zeros((2, 64), DType::F32, &Device::Cpu).unwrap(),
    ));
    let e = AdamW::load(&path, more).err().unwrap();
    assert!(e.to_string().contains("score.weight"), "{e}");
}

/// A checkpoint is a model directory: it loads as any other, with the same logits, and its
/// config names the dtype.
#[test]
fn a_checkpoint_loads_as_a_model_with_equal_logits() {
    let mut train = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    run(&mut train, 0, 1);
    let dir = scratch("as-model").join("checkpoint");
    save_at(&dir, &train, 1);
    let loaded =
        LoadedModel::load(&ModelSource::Local(dir.clone()), &Device::Cpu, DType::F32).unwrap();
    let ids = seq(9, 5);
    let want =
        gpt2_tutorial::Gpt2LmHeadModel::from_weights(&train.weights().unwrap(), &loaded.config)
            .unwrap()
            .forward(&ids, None, None)
            .unwrap();
    let got = gpt2_tutorial::Gpt2LmHeadModel::from_weights(&loaded.weights, &loaded.config)
        .unwrap()
        .forward(&ids, None, None)
        .unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "float32");
    assert_eq!(config["model_type"], "gpt2");
}

/// Serialising this fails, like a disk that fills up halfway through a save.
struct Unwritable;

impl serde::Serialize for Unwritable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("injected failure"))
    }
}

fn saved_step(dir: &Path) -> usize {
    load_checkpoint(dir, &Device::Cpu)
        .unwrap()
        .state::<LoopState>()
        .unwrap()
        .step
}

/// Replacing a checkpoint is all or nothing: a save that fails - the tokenizer missing, the
/// state failing to serialise - leaves the previous checkpoint loadable and no temporary
/// directory behind; one that succeeds replaces it.
#[test]
fn a_failed_save_leaves_the_last_checkpoint_intact() {
    let mut train = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    let parent = scratch("atomic");
    let dir = parent.join("checkpoint");
    save_at(&dir, &train, 0);
    run(&mut train, 0, 1);
    let state = LoopState {
        step: 1,
        losses: vec![],
    };
    let e = save_checkpoint(&dir, &train, &tokenizer(), &Unwritable).unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert_eq!(saved_step(&dir), 0);
    let mut left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["checkpoint"]);
    save_checkpoint(&dir, &train, &tokenizer(), &state).unwrap();
    assert_eq!(saved_step(&dir), 1);
    // A directory that holds something else is never replaced.
    let e = save_checkpoint(&parent, &train, &tokenizer(), &state).unwrap_err();
    assert!(e.to_string().contains("not a checkpoint"), "{e}");
}

/// `--resume` of a directory that is not a checkpoint says what is missing and what a
/// checkpoint holds; an interrupted replacement points to the `.old` copy.
#[test]
fn a_directory_that_is_not_a_checkpoint_is_a_clear_error() {
    let parent = scratch("not-a-checkpoint");
    // A model directory: weights and config, but no training state.
    save_unprefixed_bundled(&parent.join("model"));
    let e = load_checkpoint(&parent.join("model"), &Device::Cpu)
        .err()
        .unwrap();
    let text = e.to_string();
    assert!(matches!(e, Error::NotACheckpoint { .. }), "{text}");
    for needed in [
        "optimizer.safetensors",
        "trainer_state.json",
        "A checkpoint directory holds",
    ] {
        assert!(text.contains(needed), "{needed}: {text}");
    }
    assert!(!text.contains("missing: config.json"), "{text}");

    let train = tiny_train(TrainPrecision::F32, AdamWConfig::torch(1e-3));
    let dir = parent.join("run");
    save_at(&dir, &train, 0);
    std::fs::rename(&dir, parent.join("run.old")).unwrap();
    let text = load_checkpoint(&dir, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("run.old") && text.contains("rename it"),
        "{text}"
    );
}

/// A resumed run's schedule change is recorded with the step it follows, and refused when the
/// re-planned run would have no step left to make.
#[test]
fn a_schedule_change_that_leaves_no_step_is_refused() {
    let changes = gpt2_tutorial::train::ResumeChanges {
        lr: Some(1e-5),
        ..Default::default()
    };
    let err = changes.applied(5, 5).unwrap_err().to_string();
    assert!(
        err.contains("makes 5 optimizer steps, and the checkpoint has made 5"),
        "{err}"
    );
    let recorded = changes.applied(5, 6).unwrap();
    assert_eq!((recorded.after_step, recorded.changes), (5, changes));
}
