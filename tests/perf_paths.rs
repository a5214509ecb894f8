//! The fast paths the benchmark relies on compute what the plain paths compute, and the
//! benchmark's workloads do what they say. Nothing here is timed: `examples/bench.rs` measures
//! speed, these tests only check results.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::Optimizer;
use common::*;
use gpt2_tutorial::dropout::Dropout;
use gpt2_tutorial::kernels;
use gpt2_tutorial::train::{named_vars, AdamWConfig, TrainPrecision, TrainSettings, TrainStep};
use gpt2_tutorial::weights::normal_tensor;
use gpt2_tutorial::workloads;
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
fn linear_equals_matmul_plus_bias_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // One row (decoding: threaded over the weight's rows) at widths that are not multiples of
    // anything, and GPT-2's own; then several rows (gemm) with leading dimensions.
    let cases: [(&[usize], usize); 6] = [
        (&[1, 70], 203),
        (&[1, 768], 2304),
        (&[1, 3], 1),
        (&[1, 1, 64], 17),
        (&[2, 5, 96], 40),
        (&[7, 64], 3),
    ];
    for (x_dims, n_out) in cases {
        let n_in = *x_dims.last().unwrap();
        let x = candle_core::Var::from_tensor(&randn(&mut rng, x_dims, 1.0)).unwrap();
        let w = candle_core::Var::from_tensor(&randn(
            &mut rng,
            &[n_in, n_out],
            1.0 / (n_in as f64).sqrt(),
        ))
        .unwrap();
        let b = candle_core::Var::from_tensor(&randn(&mut rng, &[n_out], 1.0)).unwrap();
        let fast = kernels::linear(x.as_tensor(), w.as_tensor(), b.as_tensor())
            .unwrap()
            .expect("eligible");
        let rows: usize = x_dims[..x_dims.len() - 1].iter().product();
        let plain = x
            .as_tensor()
            .reshape((rows, n_in))
            .unwrap()
            .matmul(w.as_tensor())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .reshape(fast.shape())
            .unwrap();
        let name = format!("linear {x_dims:?} x ({n_in}, {n_out})");
        assert_close(&name, &fast, &plain, FAST_PATH_TOL);
        let w_out = randn(&mut rng, fast.dims(), 1.0);
        let grads = |y: &Tensor| (y * &w_out).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (grads(&fast), grads(&plain));
        for (what, var) in [("x", &x), ("weight", &w), ("bias", &b)] {
            assert_close(
                &format!("{name}: gradient of {what}"),
                gf.get(var.as_tensor()).unwrap(),
                gp.get(var.as_tensor()).unwrap(),
                FAST_PATH_TOL,
            );
        }
    }
}

#[test]
fn tied_head_equals_matmul_with_transposed_wte_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    // One position (decoding, threaded over the vocabulary) and several (gemm).
    for (n, v, c) in [
        (1, 50257, 64),
        (1, 1000, 768),
        (1, 5, 3),
        (7, 1000, 96),
        (3, 5, 3),
    ] {
        let x =
            candle_core::Var::from_tensor(&unit_input(&mut rng, n * c).reshape((n, c)).unwrap())
                .unwrap();
        let wte = candle_core::Var::from_tensor(&randn(&mut rng, &[v, c], 1.0 / (c as f64).sqrt()))
            .unwrap();
        let fast = kernels::tied_head(x.as_tensor(), wte.as_tensor())
            .unwrap()
            .expect("eligible");
        let plain = x.matmul(&wte.t().unwrap()).unwrap();
        let name = format!("head ({n}, {c}) @ ({v}, {c})^T");
        assert_close(&name, &fast, &plain, FAST_PATH_TOL);
        let w = randn(&mut rng, &[n, v], 1.0);
        let grads = |y: &Tensor| (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (grads(&fast), grads(&plain));
        for (what, var) in [("x", &x), ("wte", &wte)] {
            assert_close(
                &format!("{name}: gradient of {what}"),
                gf.get(var.as_tensor()).unwrap(),
                gp.get(var.as_tensor()).unwrap(),
                FAST_PATH_TOL,
            );
        }
    }
}

#[test]
fn gelu_and_layer_norm_equal_candles_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = candle_core::Var::from_tensor(&randn(&mut rng, &[2, 5, 96], 2.0)).unwrap();
    let w_out = randn(&mut rng, &[2, 5, 96], 1.0);
    let grad_of = |y: &Tensor, vars: &[&candle_core::Var]| {
        let g = (y * &w_out).unwrap().sum_all().unwrap().backward().unwrap();
        vars.iter()
            .map(|v| g.get(v.as_tensor()).unwrap().clone())
            .collect::<Vec<_>>()
    };
    let fast = kernels::gelu_tanh(x.as_tensor())
        .unwrap()
        .expect("eligible");
    let plain = x.as_tensor().gelu().unwrap();
    assert_close("gelu", &fast, &plain, FAST_PATH_TOL);
    assert_close(
        "gelu gradient",
        &grad_of(&fast, &[&x])[0],
        &grad_of(&plain, &[&x])[0],
        // candle's gradient uses 6-digit constants (0.797885, 0.0356774, ...): ~1e-6 apart.
        1e-5,
    );

    let gain =
        candle_core::Var::from_tensor(&(randn(&mut rng, &[96], 0.1) + 1.0).unwrap()).unwrap();
    let shift = candle_core::Var::from_tensor(&randn(&mut rng, &[96], 0.1)).unwrap();
    let fast = kernels::layer_norm(x.as_tensor(), gain.as_tensor(), shift.as_tensor(), 1e-5)
        .unwrap()
        .expect("eligible");
    let plain =
        candle_nn::ops::layer_norm_slow(x.as_tensor(), gain.as_tensor(), shift.as_tensor(), 1e-5)
            .unwrap();
    assert_close("layer norm", &fast, &plain, FAST_PATH_TOL);
    let vars = [&x, &gain, &shift];
    for (what, (a, b)) in ["x", "weight", "bias"]
        .iter()
        .zip(grad_of(&fast, &vars).iter().zip(&grad_of(&plain, &vars)))
    {
        assert_close(
            &format!("layer norm gradient of {what}"),
            a,
            b,
            FAST_PATH_TOL,
        );
    }
}

#[test]
fn fast_paths_stand_aside_where_they_do_not_apply() {
    // Mixed float types and f64 take the plain path (the kernels compute in f32 and round
    // their results to their inputs' one float type).
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let half = |t: Tensor| t.to_dtype(DType::F16).unwrap();
    let x = half(unit_input(&mut rng, 8));
    let w32 = randn(&mut rng, &[8, 4], 1.0);
    let b = half(randn(&mut rng, &[4], 1.0));
    assert!(kernels::linear(&x, &w32, &b).unwrap().is_none());
    assert!(kernels::tied_head(&x, &w32.t().unwrap()).unwrap().is_none());
    let x64 = x.to_dtype(DType::F64).unwrap();
    assert!(kernels::gelu_tanh(&x64).unwrap().is_none());
    assert!(kernels::layer_norm(
        &x,
        &Tensor::ones(8, DType::F32, &Device::Cpu).unwrap(),
        &half(Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap()),
        1e-5
    )
    .unwrap()
    .is_none());
    let att = randn(&mut rng, &[1, 2, 3, 3], 1.0)
        .to_dtype(DType::F64)
        .unwrap();
    assert!(kernels::scaled_masked_softmax(&att, 0.5, None)
        .unwrap()
        .is_none());
}

/// The kernels in f16 and bf16 read their inputs into f32, run the f32 computation and round
/// each result once: the forward pass is the f32 kernel's on the same (half-representable)
/// values, rounded, bit for bit; the gradients come out in the half type, within a few of its
/// rounding steps of the f32 kernel's (some of them are sums that candle adds in that type).
#[test]
fn half_precision_kernels_are_the_f32_kernels_rounded_once() {
    type Kernel<'a> = Box<dyn Fn(&[Tensor]) -> Tensor + 'a>;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (b, t, nh, hs) = (2, 9, 2, 8);
    let c = nh * hs;
    let mask = gpt2_tutorial::model::causal_mask(b, t, 0, None, &Device::Cpu)
        .unwrap()
        .expect("a causal mask");
    let dropout = || {
        let mut d = Dropout::seeded(5).with_p(0.1);
        d.set_training(true);
        d
    };
    let targets = Tensor::new(&[3u32, 0, 7, 7, 1], &Device::Cpu).unwrap();
    let weights = Tensor::new(&[0.25f32, 0.25, 0.0, 0.25, 0.25], &Device::Cpu).unwrap();
    let cases: Vec<(&str, Vec<Tensor>, Kernel)> = vec![
        (
            "linear, several rows",
            vec![
                randn(&mut rng, &[b, t, c], 1.0),
                randn(&mut rng, &[c, 3 * c], 0.25),
                randn(&mut rng, &[3 * c], 1.0),
            ],
            Box::new(|x| {
                kernels::linear(&x[0], &x[1], &x[2])
                    .unwrap()
                    .expect("eligible")
            }),
        ),
        (
            "linear, one row",
            vec![
                randn(&mut rng, &[1, 1, c], 1.0),
                randn(&mut rng, &[c, 40], 0.25),
                randn(&mut rng, &[40], 1.0),
            ],
            Box::new(|x| {
                kernels::linear(&x[0], &x[1], &x[2])
                    .unwrap()
                    .expect("eligible")
            }),
        ),
        (
            "tied head",
            vec![
                randn(&mut rng, &[5, c], 1.0),
                randn(&mut rng, &[50, c], 0.25),
            ],
            Box::new(|x| kernels::tied_head(&x[0], &x[1]).unwrap().expect("eligible")),
        ),
        (
            // dx sums over 1,500 vocabulary rows: more than gemm sums before it rounds
            // to the output's type when the output is f16 or bf16.
            "tied head, a large vocabulary",
            vec![
                randn(&mut rng, &[5, c], 1.0),
                randn(&mut rng, &[1500, c], 0.25),
            ],
            Box::new(|x| kernels::tied_head(&x[0], &x[1]).unwrap().expect("eligible")),
        ),
        (
            "gelu",
            vec![randn(&mut rng, &[b, t, c], 2.0)],
            Box::new(|x| kernels::gelu_tanh(&x[0]).unwrap().expect("eligible")),
        ),
        (
            "layer norm",
            vec![
                randn(&mut rng, &[b, t, c], 2.0),
                (randn(&mut rng, &[c], 0.1) + 1.0).unwrap(),
                randn(&mut rng, &[c], 0.1),
            ],
            Box::new(|x| {
                kernels::layer_norm(&x[0], &x[1], &x[2], 1e-5)
                    .unwrap()
                    .expect("eligible")
            }),
        ),
        (
            "scaled masked softmax",
            vec![randn(&mut rng, &[b, nh, t, t], 2.0)],
            Box::new(|x| {
                kernels::scaled_masked_softmax(&x[0], 0.5, Some(&mask))
                    .unwrap()
                    .expect("eligible")
            }),
        ),
        (
            "attention with dropout",
            vec![randn(&mut rng, &[b, t, 3 * c], 1.0)],
            Box::new(|x| {
                kernels::attention(&x[0], nh, 0.25, &mask, &dropout())
                    .unwrap()
                    .expect("eligible")
            }),
        ),
        (
            "cross-entropy",
            vec![randn(&mut rng, &[5, 11], 4.0)],
            Box::new(|x| {
                kernels::cross_entropy(&x[0], &targets, &weights)
                    .unwrap()
                    .expect("eligible")
            }),
        ),
        (
            "dropout",
            vec![randn(&mut rng, &[3, 1000], 1.0)],
            Box::new(|x| dropout().forward(&x[0]).unwrap()),
        ),
    ];
    for dtype in [DType::BF16, DType::F16] {
        // The largest rounding step relative to a value: 2^-8 in bf16, 2^-11 in f16.
        let step = if dtype == DType::BF16 {
            2f32.powi(-8)
        } else {
            2f32.powi(-11)
        };
        for (name, inputs, kernel) in &cases {
            let run = |d: DType| {
                let vars: Vec<candle_core::Var> = inputs
                    .iter()
                    .map(|x| {
                        candle_core::Var::from_tensor(
                            &x.to_dtype(dtype).unwrap().to_dtype(d).unwrap(),
                        )
                        .unwrap()
                    })
                    .collect();
                let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                let y = kernel(&xs);
                // The same upstream gradient on both sides: values of the half type.
                let mut rng = ChaCha8Rng::seed_from_u64(22);
                let w_out = randn(&mut rng, y.dims(), 1.0)
                    .to_dtype(dtype)
                    .unwrap()
                    .to_dtype(d)
                    .unwrap();
                let grads = (&y * w_out)
                    .expect(name)
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g: Vec<Tensor> = vars
                    .iter()
                    .map(|v| grads.get(v.as_tensor()).unwrap().clone())
                    .collect();
                (y, g)
            };
            let ((yh, gh), (yf, gf)) = (run(dtype), run(DType::F32));
            let what = format!("{name} in {dtype:?}");
            assert_eq!(yh.dtype(), dtype, "{what}: output dtype");
            let bits = |t: &Tensor| flat_f32(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&yh),
                bits(&yf.to_dtype(dtype).unwrap()),
                "{what}: forward"
            );
            for (i, (gh, gf)) in gh.iter().zip(&gf).enumerate() {
                assert_eq!(gh.dtype(), dtype, "{what}: gradient {i} dtype");
                let scale = gf
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                // The products' gradients are summed in f32 and rounded once: the f32 ones'.
                if name.starts_with("linear") || name.starts_with("tied head") {
                    assert_eq!(
                        bits(gh),
                        bits(&gf.to_dtype(dtype).unwrap()),
                        "{what}: gradient {i}"
                    );
                }
                let gh = gh.to_dtype(DType::F32).unwrap();
                assert_close(
                    &format!("{what}: gradient {i}"),
                    &gh,
                    gf,
                    8.0 * step * scale,
                );
            }
        }
    }
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
    let ids = m
        .tokenizer
        .encode(gpt2_tutorial::tutorial::TUTORIAL_PROMPT)
        .unwrap();
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
    let prompt = m
        .tokenizer
        .encode(gpt2_tutorial::tutorial::TUTORIAL_PROMPT)
        .unwrap();
    assert_eq!(prompt.len(), 8, "the tutorial's prompt is 8 tokens");
    let cached = workloads::cached_greedy(&model, &prompt, workloads::DECODE_TOKENS).unwrap();
    let naive = workloads::naive_greedy(&model, &prompt, workloads::DECODE_TOKENS).unwrap();
    // Exactly 64 new tokens whatever they are: a benchmark must do the same work every run.
    assert_eq!(cached.len(), prompt.len() + workloads::DECODE_TOKENS);
    assert_eq!(cached, naive);
    // The library's `greedy` (which would stop at <|endoftext|>) picks the same tokens.
    let stops = generation::greedy(&model, &prompt, workloads::DECODE_TOKENS).unwrap();
    assert_eq!(cached[..stops.len()], stops[..]);
}

#[test]
fn long_input_is_the_formula_the_python_side_uses() {
    let ids = workloads::long_input(workloads::LONG_TOKENS, 50257);
    assert_eq!(ids.len(), 500);
    assert_eq!(&ids[..4], &[17, 1026, 2035, 3044]);
    assert_eq!(ids[499], ((1009 * 499 + 17) % 50257) as u32);
}

#[test]
fn a_training_step_lowers_the_loss_it_reports() {
    let m = bundled();
    let ids = input(&workloads::long_input(32, m.config.vocab_size));
    let settings = TrainSettings::new(TrainPrecision::F32, AdamWConfig::torch(1e-2));
    let mut train = TrainStep::new(&m.weights, &m.config, settings).unwrap();
    // The loss reported is the one of the weights before the update: with dropout on it is not
    // the eval-mode loss, so check instead that repeated steps on one sequence learn it.
    let first = train.step(&ids).unwrap().loss;
    let mut last = first;
    for _ in 0..4 {
        last = train.step(&ids).unwrap().loss;
    }
    assert!(first.is_finite() && last < first, "loss {first} -> {last}");
    // The updates reach the VarMap the model reads from.
    let after = Weights::from_varmap(train.varmap()).unwrap();
    let before = m.weights.get("h.0.attn.c_attn.weight").unwrap();
    let moved = max_abs_diff(after.get("h.0.attn.c_attn.weight").unwrap(), before);
    assert!(moved > 0.0);
}

#[test]
fn the_crates_adamw_and_candles_update_alike() {
    // The same weights and the same gradients (a micro-step's, on the written-out pass): the
    // crate's AdamW (in place) and candle_nn::AdamW (a dozen tensor operations per parameter)
    // must make the same updates. Without weight decay both are `torch.optim.AdamW`'s
    // (candle's would decay the biases and layer norms too).
    let m = bundled();
    let ids = input(&workloads::long_input(24, m.config.vocab_size));
    let settings = TrainSettings::new(TrainPrecision::F32, AdamWConfig::torch(1e-3)).seed(7);
    let mut ours = TrainStep::new(&m.weights, &m.config, settings).unwrap();
    let theirs = TrainStep::new(&m.weights, &m.config, settings).unwrap();
    ours.accumulate(&ids, 1.0).unwrap();
    let grads = ours.accumulated_gradients().unwrap();
    ours.zero_grad();
    // The gradients scaled differently at each update, so that the moments' averages matter.
    let store = |train: &TrainStep, scale: f64| {
        let vars: HashMap<String, candle_core::Var> =
            named_vars(train.varmap()).unwrap().into_iter().collect();
        let mut store = candle_core::backprop::GradStore::default();
        for (name, g) in &grads {
            store.insert(vars[name].as_tensor(), (g * scale).unwrap());
        }
        (vars, store)
    };
    let params = candle_nn::ParamsAdamW {
        lr: 1e-3,
        weight_decay: 0.0,
        ..Default::default()
    };
    let theirs_vars = store(&theirs, 1.0).0.into_values().collect();
    let mut candle = candle_nn::AdamW::new(theirs_vars, params).unwrap();
    for scale in [1.0, -0.5, 3.0] {
        ours.update(&store(&ours, scale).1).unwrap();
        candle.step(&store(&theirs, scale).1).unwrap();
    }
    let (ours, theirs) = (ours.weights().unwrap(), theirs.weights().unwrap());
    for name in ours.names() {
        assert_close(
            &format!("{name} after 3 updates"),
            ours.get(&name).unwrap(),
            theirs.get(&name).unwrap(),
            // Three updates of at most lr (1e-3) each: the two agree to the f32 rounding of the
            // weights, two units in the last place at 1.0.
            2.5e-7,
        );
    }
}

/// The plain path of the attention's softmax: scale, fill masked scores, softmax.
fn plain_masked_softmax(att: &Tensor, scale: f64, mask: Option<&Tensor>) -> Tensor {
    let att = (att * scale).unwrap();
    let att = match mask {
        Some(mask) => {
            let mask = mask.broadcast_as(att.shape()).unwrap();
            let fill = Tensor::new(f32::MIN, &Device::Cpu)
                .unwrap()
                .broadcast_as(att.shape())
                .unwrap();
            mask.where_cond(&att, &fill).unwrap()
        }
        None => att,
    };
    candle_nn::ops::softmax(&att, candle_core::D::Minus1).unwrap()
}

#[test]
fn fused_softmax_equals_scale_mask_softmax_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (b, nh, t, past) = (2, 3, 5, 2);
    let s = past + t;
    let causal = gpt2_tutorial::model::causal_mask(b, t, past, None, &Device::Cpu)
        .unwrap()
        .unwrap();
    // Left padding: the second row's first four positions are padding, so its first two
    // queries see nothing at all and must come out uniform.
    let am = Tensor::new(
        &[[1u32, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]],
        &Device::Cpu,
    )
    .unwrap();
    let padded = gpt2_tutorial::model::causal_mask(b, t, past, Some(&am), &Device::Cpu)
        .unwrap()
        .unwrap();
    let one_query = Tensor::new(&[[1u8, 1, 0, 1, 1, 1, 1]], &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 1, s))
        .unwrap();
    let cases: [(&str, usize, Option<&Tensor>); 4] = [
        ("no mask", t, None),
        ("causal", t, Some(&causal)),
        ("causal + padding", t, Some(&padded)),
        ("one query, (1, 1, 1, S) mask", 1, Some(&one_query)),
    ];
    for (name, t, mask) in cases {
        let att = candle_core::Var::from_tensor(&randn(&mut rng, &[b, nh, t, s], 2.0)).unwrap();
        // Any downstream use will do for the gradient: a random weighting of the outputs.
        let w = randn(&mut rng, &[b, nh, t, s], 1.0);
        let fast = kernels::scaled_masked_softmax(att.as_tensor(), 0.125, mask)
            .unwrap()
            .expect("eligible");
        let plain = plain_masked_softmax(att.as_tensor(), 0.125, mask);
        assert_close(&format!("{name}: softmax"), &fast, &plain, FAST_PATH_TOL);
        let grad = |y: &Tensor| {
            let loss = (y * &w).unwrap().sum_all().unwrap();
            loss.backward()
                .unwrap()
                .get(att.as_tensor())
                .unwrap()
                .clone()
        };
        assert_close(
            &format!("{name}: gradient"),
            &grad(&fast),
            &grad(&plain),
            FAST_PATH_TOL,
        );
    }
}

#[test]
fn prepared_model_loads_and_is_kept_when_unchanged() {
    let dir = std::env::temp_dir().join(format!("gpt2-bench-prepare-{}", std::process::id()));
    let cfg = Gpt2Config::tiny();
    assert!(workloads::prepare_model(&dir, &cfg, 5).unwrap());
    assert!(
        !workloads::prepare_model(&dir, &cfg, 5).unwrap(),
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
    assert!(workloads::prepare_model(&dir, &wider, 5).unwrap());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn peak_rss_is_read_from_proc_in_bytes() {
    let before = workloads::peak_rss_bytes().unwrap();
    // Touch 64 MiB: the high-water mark, in bytes (not kB), has to be at least that.
    let big = vec![1u8; 64 << 20];
    let after = workloads::peak_rss_bytes().unwrap();
    assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 64 << 20);
    assert!(after >= before && after >= 64 << 20, "{before} -> {after}");
}

#[test]
fn gelu_and_softmax_exponentials_hold_over_the_whole_range() {
    // The fast paths use their own exponential; check it where libm's would overflow, underflow
    // or lose digits: GELU from -100 to 100 (relative error), softmax rows spanning 200 nats.
    let xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.005).collect();
    let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
    let fast: Vec<f32> = kernels::gelu_tanh(&x)
        .unwrap()
        .expect("eligible")
        .to_vec1()
        .unwrap();
    let plain: Vec<f32> = x.gelu().unwrap().to_vec1().unwrap();
    for ((a, b), x) in fast.iter().zip(&plain).zip(&xs) {
        // 2e-6 relative, or 1e-6 absolute where GELU is near 0.
        assert!(
            (a - b).abs() <= 2e-6 * b.abs().max(0.5),
            "gelu({x}) = {a}, candle says {b}"
        );
    }
    let row: Vec<f32> = (0..400).map(|i| i as f32 * 0.5 - 100.0).collect();
    let att = Tensor::new(row.as_slice(), &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 1, 400))
        .unwrap();
    let fast = kernels::scaled_masked_softmax(&att, 1.0, None)
        .unwrap()
        .expect("eligible");
    let plain = candle_nn::ops::softmax_last_dim(&att).unwrap();
    assert_close("softmax over 200 nats", &fast, &plain, 1e-7);
}

/// The plain path of attention from `c_attn`'s output `(B, T, 3C)`: split q, k and v into
/// heads, masked softmax of the scaled scores, dropout (if given), times v, heads merged back.
fn plain_attention(
    qkv: &Tensor,
    nh: usize,
    scale: f64,
    mask: Option<&Tensor>,
    dropout: Option<&Dropout>,
) -> Tensor {
    let (b, t, c3) = qkv.dims3().unwrap();
    let (c, hs) = (c3 / 3, c3 / 3 / nh);
    let split = |i: usize| {
        qkv.narrow(2, i * c, c)
            .unwrap()
            .reshape((b, t, nh, hs))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let att = plain_masked_softmax(&q.matmul(&k.t().unwrap()).unwrap(), scale, mask);
    let att = match dropout {
        Some(d) => d.forward(&att).unwrap(),
        None => att,
    };
    att.matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b, t, c))
        .unwrap()
}

#[test]
fn cacheless_attention_equals_split_heads_softmax_merge() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (nh, hs) = (3, 8);
    let c = nh * hs;
    // 70 queries cross a row block (64) of the kernel; the second batch row is left-padded
    // by 66 tokens, so its first queries see nothing and must come out uniform.
    for (b, t, padded) in [(1, 70, false), (2, 70, true), (2, 5, false), (1, 1, false)] {
        let qkv = randn(&mut rng, &[b, t, 3 * c], 1.0);
        let am = padded.then(|| {
            let rows: Vec<u32> = (0..b * t)
                .map(|i| u32::from(i / t == 0 || i % t >= 66))
                .collect();
            Tensor::from_vec(rows, (b, t), &Device::Cpu).unwrap()
        });
        let mask = gpt2_tutorial::model::causal_mask(b, t, 0, am.as_ref(), &Device::Cpu).unwrap();
        let fast = kernels::causal_attention(&qkv, nh, 0.25, mask.as_ref())
            .unwrap()
            .expect("eligible");
        let plain = plain_attention(&qkv, nh, 0.25, mask.as_ref(), None);
        assert_close(
            &format!("attention B={b} T={t} padded={padded}"),
            &fast,
            &plain,
            FAST_PATH_TOL,
        );
    }
    // With a gradient to track it stands aside (training takes the differentiable path).
    let var = candle_core::Var::from_tensor(&randn(&mut rng, &[1, 4, 3 * c], 1.0)).unwrap();
    assert!(kernels::causal_attention(var.as_tensor(), nh, 0.25, None)
        .unwrap()
        .is_none());
}

/// Training's attention as one operation (kernels::attention) against the plain path - split,
/// q k^T, masked softmax, dropout, times v, merge - forward and backward, with the same dropout
/// masks (each path draws its seed from a generator seeded alike), across row blocks, with
/// left padding whose first queries see nothing, and without dropout.
#[test]
fn attention_with_grad_equals_the_plain_path_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (nh, hs) = (3, 8);
    let c = nh * hs;
    for (b, t, padded, p) in [
        (1, 70, false, 0.1),
        (2, 70, true, 0.1),
        (2, 5, false, 0.0),
        (1, 130, false, 0.5),
    ] {
        let qkv = candle_core::Var::from_tensor(&randn(&mut rng, &[b, t, 3 * c], 1.0)).unwrap();
        let gy = randn(&mut rng, &[b, t, c], 1.0);
        let am = padded.then(|| {
            let rows: Vec<u32> = (0..b * t)
                .map(|i| u32::from(i / t == 0 || i % t >= 66))
                .collect();
            Tensor::from_vec(rows, (b, t), &Device::Cpu).unwrap()
        });
        let mask = gpt2_tutorial::model::causal_mask(b, t, 0, am.as_ref(), &Device::Cpu)
            .unwrap()
            .expect("a causal mask");
        let dropout = || {
            let mut d = Dropout::seeded(11).with_p(p);
            d.set_training(true);
            d
        };
        let fast = kernels::attention(qkv.as_tensor(), nh, 0.25, &mask, &dropout())
            .unwrap()
            .expect("eligible");
        let plain = plain_attention(qkv.as_tensor(), nh, 0.25, Some(&mask), Some(&dropout()));
        let what = format!("attention B={b} T={t} padded={padded} p={p}");
        assert_close(&what, &fast, &plain, FAST_PATH_TOL);
        let grad = |y: &Tensor| {
            let grads = (y * &gy).unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(qkv.as_tensor()).unwrap().clone()
        };
        assert_close(
            &format!("{what}: d qkv"),
            &grad(&fast),
            &grad(&plain),
            FAST_PATH_TOL,
        );
    }
}

#[test]
fn fused_cross_entropy_equals_log_softmax_gather_mean_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Rows whose width is not a multiple of 8, logits spread wide enough (std 8) that the
    // softmax is far from uniform, and some labels -100 (ignored).
    for (n, v) in [(6, 301), (1, 8), (5, 50257)] {
        let logits = candle_core::Var::from_tensor(&randn(&mut rng, &[n, v], 8.0)).unwrap();
        let labels: Vec<i64> = (0..n)
            .map(|i| {
                if i % 3 == 1 {
                    gpt2_tutorial::loss::IGNORE_INDEX
                } else {
                    ((i * 7919 + 3) % v) as i64
                }
            })
            .collect();
        let targets = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
        let keep: Vec<f32> = labels.iter().map(|&l| f32::from(l >= 0)).collect();
        let safe: Vec<u32> = labels.iter().map(|&l| l.max(0) as u32).collect();
        let counted: f32 = keep.iter().sum();
        let weights: Vec<f32> = keep.iter().map(|k| k / counted).collect();
        let fast = kernels::cross_entropy(
            logits.as_tensor(),
            &Tensor::new(safe.as_slice(), &Device::Cpu).unwrap(),
            &Tensor::new(weights.as_slice(), &Device::Cpu).unwrap(),
        )
        .unwrap()
        .expect("eligible");
        // loss::cross_entropy takes this path for f32 on the CPU.
        let loss = gpt2_tutorial::loss::cross_entropy(logits.as_tensor(), &targets).unwrap();
        assert_close("loss::cross_entropy", &loss, &fast, 0.0);

        // The plain path, as loss::cross_entropy writes it for other devices.
        let picked = candle_nn::ops::log_softmax(logits.as_tensor(), 1)
            .unwrap()
            .gather(
                &Tensor::new(safe.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(1)
                    .unwrap(),
                1,
            )
            .unwrap()
            .squeeze(1)
            .unwrap();
        let plain = (picked
            .mul(&Tensor::new(keep.as_slice(), &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap()
            / f64::from(counted))
        .unwrap();
        let name = format!("cross-entropy ({n}, {v})");
        assert_close(&name, &fast, &plain, 1e-5);

        // Backward with an upstream gradient other than 1, as when the loss is scaled.
        let grad = |loss: &Tensor| {
            let g = (loss * 0.5).unwrap().backward().unwrap();
            g.get(logits.as_tensor()).unwrap().clone()
        };
        let (gf, gp) = (grad(&fast), grad(&plain));
        // Gradients are at most 1 in size: a few ulps of it.
        assert_close(&format!("{name} gradient"), &gf, &gp, 5e-7);
        // The gradient kept from the forward pass is handed out once; a second backward pass
        // through the same loss computes it again, to the same bits.
        assert_close(&format!("{name} gradient again"), &grad(&fast), &gf, 0.0);
        // Ignored rows get no gradient at all.
        for i in (0..n).filter(|i| i % 3 == 1) {
            let row = gf.i(i).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(row.to_scalar::<f32>().unwrap(), 0.0, "row {i} is ignored");
        }
    }
}

#[test]
fn dropout_masks_do_not_depend_on_the_number_of_threads() {
    // Large enough for several mask blocks, with a ragged last block.
    let x = Tensor::ones((3, 70_001), DType::F32, &Device::Cpu).unwrap();
    let masks: Vec<Vec<f32>> = [1, 3]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut d = Dropout::seeded(11).with_p(0.1);
            d.set_training(true);
            pool.install(|| d.forward(&x).unwrap())
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    assert_eq!(masks[0], masks[1]);
    let dropped = masks[0].iter().filter(|&&m| m == 0.0).count() as f64 / masks[0].len() as f64;
    assert!(
        (dropped - 0.1).abs() < 0.005,
        "dropped {dropped}, expected 0.1"
    );
    let kept = masks[0].iter().find(|&&m| m != 0.0).unwrap();
    assert!((kept - 1.0 / 0.9).abs() < 1e-6);
}

#[test]
fn fused_dropout_equals_multiplying_by_the_mask_forward_and_backward() {
    // f32 on the CPU takes the fused op; f64 multiplies by a mask tensor (the plain path). The
    // same seed must drop the same elements, forward and backward.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let x32 = candle_core::Var::from_tensor(&randn(&mut rng, &[5, 30_011], 1.0)).unwrap();
    let x64 = candle_core::Var::from_tensor(&x32.to_dtype(DType::F64).unwrap()).unwrap();
    let w = randn(&mut rng, &[5, 30_011], 1.0);
    let run = |x: &candle_core::Var| {
        let mut d = Dropout::seeded(3).with_p(0.25);
        d.set_training(true);
        let y = d.forward(x.as_tensor()).unwrap();
        let loss = (&y * w.to_dtype(x.dtype()).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        (
            y.to_dtype(DType::F32).unwrap(),
            g.to_dtype(DType::F32).unwrap(),
        )
    };
    let ((y32, g32), (y64, g64)) = (run(&x32), run(&x64));
    assert_close("dropout forward", &y32, &y64, 1e-6);
    assert_close("dropout backward", &g32, &g64, 1e-6);
    let zeros = |t: &Tensor| {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|&&v| v == 0.0)
            .count()
    };
    assert_eq!(zeros(&y32), zeros(&y64));
    assert!(zeros(&y32) > 30_000, "about a quarter dropped");
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_takes_every_allocator_setting() {
    assert!(gpt2_tutorial::memory::reuse_freed_buffers());
}

/// ZeroFilledAllocator keeps GlobalAlloc's promises: zeroed memory is zero, also when it is a
/// block that was written and freed before, and plain allocation and realloc keep contents.
#[test]
fn zero_filled_allocator_hands_out_zeros() {
    use std::alloc::{GlobalAlloc, Layout};
    let a = gpt2_tutorial::memory::ZeroFilledAllocator;
    let layout = Layout::from_size_align(64 << 20, 64).unwrap();
    for _ in 0..2 {
        // SAFETY: a non-zero layout; the block is freed with the same layout.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            let block = std::slice::from_raw_parts_mut(p, layout.size());
            assert!(block.iter().all(|&b| b == 0));
            block.fill(0xAB);
            a.dealloc(p, layout);
        }
    }
    let small = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: as above; realloc keeps the first 16 bytes.
    unsafe {
        let p = a.alloc(small);
        std::ptr::write_bytes(p, 7, 16);
        let q = a.realloc(p, small, 4096);
        assert!(std::slice::from_raw_parts(q, 16).iter().all(|&b| b == 7));
        a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
    }
}
