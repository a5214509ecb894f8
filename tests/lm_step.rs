//! The written-out language-modelling micro-step (src/kernels/lm_step.rs) against the model's
//! graph and candle's backward pass, which the other tests check against PyTorch: the same loss
//! to the bit, and the same gradients to float rounding, with dropout on, over two micro-steps
//! and an update, for one sequence and a batch of two.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use gpt2_tutorial::bench;
use gpt2_tutorial::train::{AdamWConfig, TrainPrecision, TrainStep};

fn ids(b: usize, t: usize, offset: usize) -> Tensor {
    let m = bundled();
    let all = bench::long_input(b * t + offset, m.config.vocab_size);
    Tensor::from_slice(&all[offset..], (b, t), &Device::Cpu).unwrap()
}

fn train_step(written_out: bool) -> TrainStep {
    let m = bundled();
    let adamw = AdamWConfig::torch(1e-3);
    let mut step =
        TrainStep::with_adamw(&m.weights, &m.config, TrainPrecision::F32, adamw, 11).unwrap();
    step.set_written_out(written_out);
    step
}

/// Every accumulated gradient of `a` within float rounding of `b`'s: relative to the largest
/// element of the gradient, and over the whole tensor.
fn assert_same_gradients(a: &mut TrainStep, b: &mut TrainStep) {
    let (ga, gb) = (
        a.accumulated_gradients().unwrap(),
        b.accumulated_gradients().unwrap(),
    );
    assert_eq!(ga.len(), gb.len());
    assert_eq!(ga.len(), 4 + 12 * bundled().config.n_layer);
    for ((name, x), (name_b, y)) in ga.iter().zip(&gb) {
        assert_eq!(name, name_b);
        let (x, y) = (flat_f32(x), flat_f32(y));
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(scale > 0.0, "{name}: no gradient");
        assert!(
            diff <= 2e-5 * scale,
            "{name}: max difference {diff} against a largest element {scale}"
        );
    }
}

#[test]
fn written_out_micro_steps_match_the_graph() {
    for (b, t) in [(1, 37), (2, 19)] {
        let (mut fast, mut graph) = (train_step(true), train_step(false));
        for (k, weight) in [(0, 0.5), (5, 0.5)] {
            let x = ids(b, t, k);
            let (lf, lg) = (
                fast.accumulate(&x, weight).unwrap(),
                graph.accumulate(&x, weight).unwrap(),
            );
            assert_eq!(lf, lg, "B={b}, T={t}: the loss is the graph's to the bit");
        }
        assert_same_gradients(&mut fast, &mut graph);
        fast.apply(1e-3, Some(1.0)).unwrap();
        graph.apply(1e-3, Some(1.0)).unwrap();
        // After an update from (nearly) the same gradients, the next micro-step still agrees.
        let x = ids(b, t, 9);
        let (lf, lg) = (
            fast.accumulate(&x, 1.0).unwrap(),
            graph.accumulate(&x, 1.0).unwrap(),
        );
        assert!(
            (lf - lg).abs() <= 1e-5 * lg.abs(),
            "B={b}, T={t}: {lf} against {lg}"
        );
        assert_same_gradients(&mut fast, &mut graph);
    }
}

#[test]
fn written_out_micro_step_without_dropout_matches_too() {
    let (mut fast, mut graph) = (train_step(true), train_step(false));
    fast.set_dropout(false);
    graph.set_dropout(false);
    let x = ids(1, 64, 3);
    assert_eq!(
        fast.accumulate(&x, 1.0).unwrap(),
        graph.accumulate(&x, 1.0).unwrap()
    );
    assert_same_gradients(&mut fast, &mut graph);
}

#[test]
fn written_out_micro_step_refuses_bad_input_clearly() {
    let mut fast = train_step(true);
    let one = ids(1, 1, 0);
    let e = fast.accumulate(&one, 1.0).unwrap_err().to_string();
    assert!(e.contains("at least 2"), "{e}");
    let bad = Tensor::new(&[[1u32, 60_000]], &Device::Cpu).unwrap();
    let e = fast.accumulate(&bad, 1.0).unwrap_err().to_string();
    assert!(e.contains("60000") && e.contains("vocabulary"), "{e}");
    let long = ids(1, 1025, 0);
    let e = fast.accumulate(&long, 1.0).unwrap_err().to_string();
    assert!(e.contains("1025"), "{e}");
    assert_eq!(fast.micro_steps(), 0, "nothing was accumulated");
}
