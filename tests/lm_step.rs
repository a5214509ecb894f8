//! The written-out training micro-steps (src/written_out/) against the model's graph and
//! candle's backward pass, which the other tests check against PyTorch: the same loss (to the
//! bit for the LM loss) and the same gradients to float rounding, with dropout on, over two
//! micro-steps and an update, for one sequence and a batch of two; and chapter 7's classifier
//! on a right-padded batch with its attention mask, and its forward pass alone, for an
//! evaluation, against the model's logits. In pure bf16, where the CPU has AMX, the
//! written-out step's gradients are compared with the f32 ones: closer to them than the bf16
//! graph's.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use gpt2_tutorial::heads::for_sequence_classification;
use gpt2_tutorial::train::{AdamWConfig, TaskHead, TrainPrecision, TrainSettings, TrainStep};
use gpt2_tutorial::workloads;

fn ids(b: usize, t: usize, offset: usize) -> Tensor {
    let m = bundled();
    let all = workloads::long_input(b * t + offset, m.config.vocab_size);
    Tensor::from_slice(&all[offset..], (b, t), &Device::Cpu).unwrap()
}

fn train_step(written_out: bool) -> TrainStep {
    train_step_in(TrainPrecision::F32, written_out)
}

fn train_step_in(precision: TrainPrecision, written_out: bool) -> TrainStep {
    let m = bundled();
    let adamw = AdamWConfig::torch(1e-3);
    let mut step = TrainStep::new(
        &m.weights,
        &m.config,
        TrainSettings::new(precision, adamw).seed(11),
    )
    .unwrap();
    step.set_written_out(written_out);
    step
}

/// The accumulated gradients of `a` and `b`, parameter by parameter (the same names in the
/// same order, every parameter of the model and its head), as f32.
fn paired_gradients(a: &mut TrainStep, b: &mut TrainStep) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let (ga, gb) = (
        a.accumulated_gradients().unwrap(),
        b.accumulated_gradients().unwrap(),
    );
    assert_eq!(ga.len(), gb.len());
    let head = usize::from(a.task() != TaskHead::LanguageModel);
    assert_eq!(ga.len(), 4 + 12 * bundled().config.n_layer + head);
    ga.into_iter()
        .zip(gb)
        .map(|((name, x), (name_b, y))| {
            assert_eq!(name, name_b);
            (name, flat_f32(&x), flat_f32(&y))
        })
        .collect()
}

/// Every accumulated gradient of `a` within float rounding of `b`'s: relative to the largest
/// element of the gradient, and over the whole tensor.
fn assert_same_gradients(a: &mut TrainStep, b: &mut TrainStep) {
    for (name, x, y) in paired_gradients(a, b) {
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

fn classifier_step(written_out: bool) -> TrainStep {
    let m = bundled();
    let (weights, mut cfg, _) = for_sequence_classification(&m.weights, &m.config, 5, 3).unwrap();
    cfg.pad_token_id = Some(50256);
    let task = TaskHead::SequenceClassification { num_labels: 5 };
    let adamw = AdamWConfig::torch(1e-3);
    let mut step = TrainStep::new(
        &weights,
        &cfg,
        TrainSettings::new(TrainPrecision::F32, adamw)
            .task(task)
            .seed(5),
    )
    .unwrap();
    step.set_written_out(written_out);
    step
}

/// `x` with row `r`'s positions `pads[r]` made padding (eos), and its attention mask.
fn padded<const B: usize>(x: Tensor, pads: [std::ops::Range<usize>; B]) -> (Tensor, Tensor) {
    let mut rows = x.to_vec2::<u32>().unwrap();
    let mut mask = vec![vec![1u32; rows[0].len()]; B];
    for (r, pad) in pads.into_iter().enumerate() {
        for j in pad {
            rows[r][j] = 50256;
            mask[r][j] = 0;
        }
    }
    let x = Tensor::new(rows, &Device::Cpu).unwrap();
    (x, Tensor::new(mask, &Device::Cpu).unwrap())
}

#[test]
fn written_out_classifier_micro_steps_match_the_graph() {
    let (b, t) = (3, 23);
    // Right padding with eos, as chapter 7's collator pads, and one row padded on the left,
    // where the mask is what keeps the real tokens from reading the padding.
    let (x, mask) = padded(ids(b, t, 2), [23..23, 15..23, 0..9]);
    let labels = Tensor::new(&[4i64, 0, 2], &Device::Cpu).unwrap();
    let (mut fast, mut graph) = (classifier_step(true), classifier_step(false));
    for weight in [1.0, 0.25] {
        let lf = fast
            .accumulate_labelled(&x, Some(&mask), &labels, weight)
            .unwrap();
        let lg = graph
            .accumulate_labelled(&x, Some(&mask), &labels, weight)
            .unwrap();
        assert!((lf - lg).abs() <= 1e-6 * lg.abs(), "{lf} against {lg}");
    }
    assert_same_gradients(&mut fast, &mut graph);
    // An ignored row and a bad label, as the graph's loss refuses it.
    let ignored = Tensor::new(&[-100i64, 1, 2], &Device::Cpu).unwrap();
    let lf = fast
        .accumulate_labelled(&x, Some(&mask), &ignored, 1.0)
        .unwrap();
    let lg = graph
        .accumulate_labelled(&x, Some(&mask), &ignored, 1.0)
        .unwrap();
    assert!((lf - lg).abs() <= 1e-6 * lg.abs(), "{lf} against {lg}");
    assert_same_gradients(&mut fast, &mut graph);
    let bad = Tensor::new(&[7i64, 1, 2], &Device::Cpu).unwrap();
    let e = fast
        .accumulate_labelled(&x, Some(&mask), &bad, 1.0)
        .unwrap_err();
    assert!(e.to_string().contains("[0, 5)"), "{e}");
}

#[test]
fn written_out_classifier_logits_match_the_model() {
    let (b, t) = (4, 23);
    // No padding; right padding; left padding; and right padding under a mask that hides
    // every key, where the row's last token averages every value, the padding's too.
    let (x, mask) = padded(ids(b, t, 5), [23..23, 15..23, 0..9, 15..23]);
    let hidden = Tensor::zeros((1, t), candle_core::DType::U32, &Device::Cpu).unwrap();
    let mask = Tensor::cat(&[mask.narrow(0, 0, 3).unwrap(), hidden], 0).unwrap();
    let step = classifier_step(true);
    let fast = step.classify_written_out(&x, Some(&mask)).unwrap();
    let fast = fast.expect("f32 on the CPU takes the written-out pass");
    let mut model = step.classifier().unwrap();
    model.set_training(false);
    let want = model.forward(&x, Some(&mask)).unwrap();
    assert_eq!(fast.dims(), [b, 5]);
    let (fast, want) = (
        fast.to_vec2::<f32>().unwrap(),
        want.to_vec2::<f32>().unwrap(),
    );
    for (f, w) in fast.iter().flatten().zip(want.iter().flatten()) {
        assert!(
            (f - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{fast:?} against {want:?}"
        );
    }
    // The graph's step evaluates through the model instead.
    let graph = classifier_step(false);
    assert!(graph
        .classify_written_out(&x, Some(&mask))
        .unwrap()
        .is_none());
}

/// `|a - b| / |b|` over every gradient of the two steps together.
fn relative_error(a: &mut TrainStep, b: &mut TrainStep) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (_, x, y) in paired_gradients(a, b) {
        for (x, y) in x.iter().zip(&y) {
            diff += f64::from(x - y).powi(2);
            norm += f64::from(*y).powi(2);
        }
    }
    (diff / norm).sqrt()
}

#[test]
fn written_out_bf16_micro_steps_are_closer_to_f32_than_the_graph() {
    // In AMX tiles where the CPU has them, else gemm's f32 products on the bf16 values.
    eprintln!("AMX: {}", gpt2_tutorial::kernels::amx_products_available());
    let bf16 = TrainPrecision::Pure(candle_core::DType::BF16);
    let (mut fast, mut graph) = (train_step_in(bf16, true), train_step_in(bf16, false));
    let mut exact = train_step(false);
    for step in [&mut fast, &mut graph, &mut exact] {
        step.set_dropout(false);
    }
    let x = ids(2, 48, 1);
    let (lf, lg, le) = (
        fast.accumulate(&x, 1.0).unwrap(),
        graph.accumulate(&x, 1.0).unwrap(),
        exact.accumulate(&x, 1.0).unwrap(),
    );
    assert!((lf - le).abs() <= 1e-2 * le, "loss {lf} against f32's {le}");
    assert!(
        (lf - le).abs() <= (lg - le).abs() + 1e-3,
        "{lf} vs {lg} against {le}"
    );
    let (fast_error, graph_error) = (
        relative_error(&mut fast, &mut exact),
        relative_error(&mut graph, &mut exact),
    );
    eprintln!("gradients off f32's by {fast_error:.2e} (written out), {graph_error:.2e} (graph)");
    assert!(
        fast_error < 0.05 && fast_error < graph_error,
        "gradients off f32's by {fast_error} (written out) and {graph_error} (graph)"
    );
    // The update reads the sums rounded to bf16 (held in f32).
    for (name, g) in fast.accumulated_gradients().unwrap() {
        let g = flat_f32(&g);
        assert!(
            g.iter().all(|x| x.to_bits() & 0xffff == 0),
            "{name} is not rounded to bf16"
        );
    }
    fast.apply(1e-3, Some(1.0)).unwrap();
}
