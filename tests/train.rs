//! Training steps in f32 and half precision (src/train.rs): mixed precision follows f32, pure
//! half precision learns, and loss scaling keeps PyTorch's GradScaler rules - skipping an
//! update that overflowed, and refusing to go on when nothing but overflow is left.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use gpt2_tutorial::train::{AdamWConfig, LossScaler, TrainPrecision, TrainSettings, TrainStep};
use gpt2_tutorial::workloads;
use gpt2_tutorial::{Error, Weights};

fn ids(len: usize) -> Tensor {
    let m = bundled();
    let ids = workloads::long_input(len, m.config.vocab_size);
    Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn train_step(weights: &Weights, lr: f64, precision: TrainPrecision) -> TrainStep {
    let adamw = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::torch(lr)
    };
    let settings = TrainSettings::new(precision, adamw).seed(7);
    TrainStep::new(weights, &bundled().config, settings).unwrap()
}

#[test]
fn precision_names_read_and_print_the_same() {
    for name in ["f32", "mixed-f16", "mixed-bf16", "f16", "bf16"] {
        assert_eq!(TrainPrecision::parse(name).unwrap().to_string(), name);
    }
    let p = TrainPrecision::parse("mixed-bf16").unwrap();
    assert_eq!(
        (p.weight_dtype(), p.compute_dtype()),
        (DType::F32, DType::BF16)
    );
    let e = TrainPrecision::parse("fp16").unwrap_err();
    assert!(e.to_string().contains("mixed-f16"), "{e}");
}

/// GradScaler's rules: double after `growth_interval` finite steps in a row, halve (and start
/// counting again) after an overflow; unscaling divides, and reports an inf or NaN.
#[test]
fn loss_scaler_keeps_grad_scalers_rules() {
    let mut s = LossScaler::new(8.0, 3);
    for _ in 0..2 {
        s.update(true);
    }
    assert_eq!(s.scale(), 8.0);
    s.update(true);
    assert_eq!(s.scale(), 16.0);
    s.update(true);
    s.update(false);
    assert_eq!(s.scale(), 8.0);
    for _ in 0..2 {
        s.update(true);
    }
    assert_eq!(s.scale(), 8.0, "the overflow restarted the count");
    assert_eq!(LossScaler::default().scale(), 65536.0);

    let w = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
    let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 8.0).unwrap();
    let mut grads = loss.backward().unwrap();
    assert!(s.unscale(&mut grads, std::slice::from_ref(&w)).unwrap());
    let g = grads.get(&w).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(g, [2.0, 4.0], "d(w²)/dw, unscaled");
    let loss = (w.as_tensor().sqrt().unwrap().sum_all().unwrap() * f64::INFINITY).unwrap();
    let mut grads = loss.backward().unwrap();
    assert!(!s.unscale(&mut grads, &[w]).unwrap());
}

/// The Euclidean norm of a tensor.
fn l2(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

/// The gradients a step computes, by weight name.
fn gradients(train: &TrainStep, ids: &Tensor) -> Vec<(String, Tensor)> {
    let grads = train.forward(ids).unwrap().backward().unwrap();
    let data = train.varmap().data().lock().unwrap();
    let mut named: Vec<_> = data
        .iter()
        .map(|(name, var)| (name.clone(), grads.get(var).unwrap().clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Mixed precision computes in half and updates f32 masters: the gradients that reach the
/// masters are f32 and follow f32's within the half type's rounding, and so do the losses of
/// a few steps. (Weights are not compared: AdamW moves every weight by about lr whatever the
/// size of its gradient, so where a gradient is ~0 its sign, noise, decides the direction.)
#[test]
fn mixed_precision_follows_f32() {
    let m = bundled();
    let ids = ids(24);
    let reference = gradients(&train_step(&m.weights, 1e-3, TrainPrecision::F32), &ids);
    let losses = |precision| -> Vec<f32> {
        let mut train = train_step(&m.weights, 1e-3, precision);
        (0..3)
            .map(|_| {
                let r = train.step(&ids).unwrap();
                assert!(
                    r.applied,
                    "{precision}: skipped at scale {:?}",
                    r.loss_scale
                );
                r.loss
            })
            .collect()
    };
    let f32_losses = losses(TrainPrecision::F32);
    // Measured on the bundled model: relative gradient errors up to 5.1e-3 (f16) and 1.3e-2
    // (bf16: 8 bits of significand against f16's 11), loss differences up to 2.1e-4 and 1.2e-3
    // over the 3 steps. The tolerances are about twice and four times those.
    for (precision, grad_tol, loss_tol) in [
        (TrainPrecision::Mixed(DType::F16), 1e-2, 1e-3),
        (TrainPrecision::Mixed(DType::BF16), 3e-2, 5e-3),
    ] {
        let train = train_step(&m.weights, 1e-3, precision);
        for ((name, g), (want_name, want)) in gradients(&train, &ids).iter().zip(&reference) {
            assert_eq!(name, want_name);
            assert_eq!(
                g.dtype(),
                DType::F32,
                "{precision} {name}: the masters' gradient"
            );
            let (norm, err) = (l2(want), l2(&(g - want).unwrap()));
            assert!(
                err <= grad_tol * norm,
                "{precision} {name}: |error| {err} vs |grad| {norm}"
            );
        }
        for (i, (a, b)) in losses(precision).iter().zip(&f32_losses).enumerate() {
            assert!(
                approx::abs_diff_eq!(a, b, epsilon = loss_tol),
                "{precision} step {i}: loss {a} vs f32 {b}"
            );
        }
        let weights = train.weights().unwrap();
        assert_eq!(weights.dtype(), DType::F32, "{precision}: masters stay f32");
    }
}

/// Pure half precision keeps everything in the half type and still learns a repeated sequence.
#[test]
fn pure_half_precision_trains_in_half() {
    let m = bundled();
    let ids = ids(24);
    for dtype in [DType::F16, DType::BF16] {
        let mut train = train_step(&m.weights, 1e-2, TrainPrecision::Pure(dtype));
        let first = train.step(&ids).unwrap().loss;
        let mut last = first;
        for _ in 0..4 {
            last = train.step(&ids).unwrap().loss;
        }
        assert!(last < first, "{dtype:?}: loss {first} -> {last}");
        assert_eq!(train.weights().unwrap().dtype(), dtype);
    }
}

/// An overflow in mixed f16 skips the update and halves the scale: a scale of 2^100 makes every
/// f16 gradient inf, and the weights must come out untouched.
#[test]
fn mixed_f16_overflow_skips_the_update_and_lowers_the_scale() {
    let m = bundled();
    let mut train = train_step(&m.weights, 1e-3, TrainPrecision::Mixed(DType::F16))
        .with_loss_scaler(LossScaler::new(2f64.powi(100), 2000))
        .unwrap();
    let report = train.step(&ids(16)).unwrap();
    assert!(!report.applied && report.loss.is_finite(), "{report:?}");
    assert_eq!(report.loss_scale, Some(2f64.powi(100)));
    assert_eq!(train.loss_scaler().unwrap().scale(), 2f64.powi(99));
    let after = train.weights().unwrap();
    for name in after.names() {
        let d = max_abs_diff(after.get(&name).unwrap(), m.weights.get(&name).unwrap());
        assert_eq!(d, 0.0, "{name} moved in a skipped step");
    }
    // Loss scaling is mixed f16's alone.
    let e = train_step(&m.weights, 1e-3, TrainPrecision::Mixed(DType::BF16))
        .with_loss_scaler(LossScaler::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("mixed-bf16"), "{e}");
}

/// A loss that is not finite stops training with an error, before anything is updated; in mixed
/// f16, where overflow is skipped, the error comes once the scale has nowhere left to go.
#[test]
fn a_loss_that_is_not_finite_is_an_error_and_changes_nothing() {
    let m = bundled();
    let mut weights = m.weights.clone();
    let bias = weights.get("ln_f.bias").unwrap();
    let nan = Tensor::full(f32::NAN, bias.shape(), &Device::Cpu).unwrap();
    weights.insert("ln_f.bias", nan);
    let mut train = train_step(&weights, 1e-3, TrainPrecision::F32);
    let e = train.step(&ids(16)).unwrap_err();
    assert!(matches!(e, Error::NonFiniteLoss { .. }), "{e}");
    assert!(e.to_string().contains("lower the learning rate"), "{e}");
    let after = train.weights().unwrap();
    let w = "h.0.attn.c_attn.weight";
    assert_eq!(
        max_abs_diff(after.get(w).unwrap(), weights.get(w).unwrap()),
        0.0
    );

    let mut train = train_step(&weights, 1e-3, TrainPrecision::Mixed(DType::F16))
        .with_loss_scaler(LossScaler::new(1.5, 2000))
        .unwrap();
    let e = train.step(&ids(16)).unwrap_err();
    assert!(matches!(e, Error::LossScaleCollapsed { .. }), "{e}");
    assert!(e.to_string().contains("mixed-bf16"), "{e}");
}
