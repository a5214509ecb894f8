//! The benchmark against transformers: this crate's side.
//!
//! Times the workloads of `gpt2_tutorial::workloads` on a random GPT-2 of a released size and
//! prints one JSON object of figures. `scripts/bench.py` runs it beside
//! `scripts/reference/bench_transformers.py` on the same weights and prints the ratios.
//!
//! ```text
//! cargo run --release --example bench -- prepare --size gpt2     # writes target/bench-models/gpt2
//! cargo run --release --example bench -- run --size gpt2 --reps 3
//! cargo run --release --example bench -- rss --size gpt2         # peak memory of inference
//! cargo run --release --example bench -- profile                   # where the time goes
//! cargo run --release --features cuda --example bench -- run --device cuda --dtype f16 \
//!     --train-precision mixed-f16                                     # on a GPU
//! ```
//! Threads: candle's CPU kernels use `RAYON_NUM_THREADS`, else every core.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use clap::{Parser, Subcommand, ValueEnum};
use gpt2_tutorial::device::{parse_device, Precision};
use gpt2_tutorial::train::{named_vars, AdamWConfig, TrainPrecision, TrainSettings, TrainStep};
use gpt2_tutorial::tutorial::TUTORIAL_PROMPT;
use gpt2_tutorial::workloads::{self, DECODE_TOKENS, LONG_TOKENS, SEED};
use gpt2_tutorial::{kernels, loss, Gpt2Config, Gpt2LmHeadModel, LoadedModel, ModelSource};
use serde_json::{json, Value};

// What the library recommends for a program that trains (src/memory.rs).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
    gpt2_tutorial::memory::ZeroFilledAllocator;

/// This crate's side of the benchmark against transformers.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the random benchmark model (config.json + model.safetensors) if it is missing.
    Prepare(Common),
    /// Time decoding, the naive loop, prefill and a training step; print JSON.
    Run {
        #[command(flatten)]
        common: Common,
        /// Timed repetitions of each figure (after one untimed warm-up); the median is reported.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Which figures to time.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = Figure::all())]
        figures: Vec<Figure>,
        /// Where to run: cpu, cuda or cuda:N (auto: CUDA when built with it and present).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Precision of the inference figures (decode, naive, prefill).
        #[arg(long, value_enum, default_value_t = Precision::F32)]
        dtype: Precision,
        /// Precision of the training step: f32, mixed-f16, mixed-bf16 (f32 master weights), or
        /// f16, bf16 (everything in half precision).
        #[arg(long, default_value = "f32", value_parser = parse_precision)]
        train_precision: TrainPrecision,
    },
    /// Load the model, decode once, and print the process's peak resident memory.
    Rss(Common),
    /// The pieces behind the figures, on gpt2's shapes with random data: matmul GFLOP/s,
    /// decoding's weight streaming in GB/s, and what candle's autograd adds around a matmul and
    /// in the LM loss.
    Profile {
        /// Timed repetitions per piece.
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

#[derive(clap::Args)]
struct Common {
    /// Which released GPT-2 shape to benchmark (with random weights).
    #[arg(long, value_enum, default_value_t = Size::Gpt2)]
    size: Size,
    /// Where the benchmark models live (one sub-directory per size).
    #[arg(long, default_value = "target/bench-models")]
    models_dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    Gpt2,
    Gpt2Medium,
    /// Written for the memory check of the fine-tune benchmark.
    Gpt2Large,
    Gpt2Xl,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Figure {
    Decode,
    Naive,
    Prefill,
    /// A training step with the fused AdamW.
    Train,
    /// The same with `candle_nn::AdamW` (not in the default set).
    TrainCandleAdamw,
}

impl Figure {
    fn all() -> Vec<Self> {
        vec![Self::Decode, Self::Naive, Self::Prefill, Self::Train]
    }
}

impl Common {
    fn config(&self) -> (&'static str, Gpt2Config) {
        match self.size {
            Size::Gpt2 => ("gpt2", Gpt2Config::gpt2()),
            Size::Gpt2Medium => ("gpt2-medium", Gpt2Config::gpt2_medium()),
            Size::Gpt2Large => ("gpt2-large", Gpt2Config::gpt2_large()),
            Size::Gpt2Xl => ("gpt2-xl", Gpt2Config::gpt2_xl()),
        }
    }

    fn dir(&self) -> PathBuf {
        self.models_dir.join(self.config().0)
    }

    fn load(&self, device: &Device, dtype: candle_core::DType) -> anyhow::Result<LoadedModel> {
        let dir = self.dir();
        LoadedModel::load(&ModelSource::Local(dir.clone()), device, dtype)
            .with_context(|| format!("run `bench prepare --size {}` first", self.config().0))
    }
}

fn parse_precision(s: &str) -> Result<TrainPrecision, String> {
    TrainPrecision::parse(s).map_err(|e| e.to_string())
}

/// Runs `f` once untimed, then `reps` times; returns the seconds of each timed run. A GPU runs
/// asynchronously, so the clock stops only once the device has finished.
fn time_on<T>(
    device: &Device,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Vec<f64>> {
    f()?;
    device.synchronize()?;
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f()?;
            device.synchronize()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

fn time<T>(reps: usize, f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<Vec<f64>> {
    time_on(&Device::Cpu, reps, f)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn figure(tokens: usize, times: &[f64]) -> Value {
    let s = median(times);
    json!({ "seconds": s, "tokens_per_s": tokens as f64 / s, "tokens": tokens, "times": times })
}

/// The training step users get ([`TrainStep`] with the crate's [`AdamW`](gpt2_tutorial::train::AdamW)),
/// at the Python side's settings: `torch.optim.AdamW(lr=1e-4, weight_decay=0.01)`.
fn train_step(m: &LoadedModel, precision: TrainPrecision) -> anyhow::Result<TrainStep> {
    let adamw = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::torch(1e-4)
    };
    let settings = TrainSettings::new(precision, adamw).seed(SEED);
    Ok(TrainStep::new(&m.weights, &m.config, settings)?)
}

/// Times training steps on `long`, each phase apart too, to say where a step's time goes
/// (a whole step only when loss scaling joins the phases). The losses of the first and last
/// step show that the steps learn: every one trains on the same input.
fn train_figure(mut train: TrainStep, long: &Tensor, reps: usize) -> anyhow::Result<Value> {
    if train.loss_scaler().is_some() {
        let mut losses = Vec::new();
        let mut applied = 0;
        let t = time_on(long.device(), reps, || {
            let report = train.step(long)?;
            applied += usize::from(report.applied);
            losses.push(report.loss);
            Ok(())
        })?;
        let mut fig = figure(LONG_TOKENS, &t);
        fig["steps_applied"] = json!(applied);
        fig["loss_first"] = json!(losses.first());
        fig["loss_last"] = json!(losses.last());
        return Ok(fig);
    }
    if train.takes_written_out_pass() {
        return written_out_train_figure(&mut train, long, reps);
    }
    graph_train_figure(&mut train, long, reps, |train, grads| {
        Ok(train.update(grads)?)
    })
}

/// [`train_figure`]'s graph step with `candle_nn::AdamW` (a dozen tensor operations per
/// parameter) in place of the crate's, for comparison: the only place it is used.
fn candle_adamw_train_figure(
    mut train: TrainStep,
    long: &Tensor,
    reps: usize,
) -> anyhow::Result<Value> {
    let vars = named_vars(train.varmap())?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let params = candle_nn::ParamsAdamW {
        lr: 1e-4,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut adamw = candle_nn::AdamW::new(vars, params)?;
    graph_train_figure(&mut train, long, reps, |_, grads| Ok(adamw.step(grads)?))
}

/// Training steps through candle's graph - forward, backward, `update` - each phase timed.
fn graph_train_figure(
    train: &mut TrainStep,
    long: &Tensor,
    reps: usize,
    mut update: impl FnMut(&mut TrainStep, &GradStore) -> anyhow::Result<()>,
) -> anyhow::Result<Value> {
    let device = long.device().clone();
    let mut losses = Vec::new();
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    let t = time_on(&device, reps, || {
        let start = Instant::now();
        let loss = train.forward(long)?;
        device.synchronize()?;
        let forward = start.elapsed();
        let grads = loss.backward()?;
        device.synchronize()?;
        let backward = start.elapsed();
        update(train, &grads)?;
        device.synchronize()?;
        let update = start.elapsed();
        losses.push(loss.to_scalar::<f32>()?);
        for (p, d) in phases
            .iter_mut()
            .zip([forward, backward - forward, update - backward])
        {
            p.push(d.as_secs_f64());
        }
        Ok(())
    })?;
    let mut fig = figure(LONG_TOKENS, &t);
    // The first entry of each phase is the untimed warm-up's.
    for (name, p) in ["forward_s", "backward_s", "optimizer_s"]
        .iter()
        .zip(&phases)
    {
        fig[name] = json!(median(&p[1..]));
    }
    fig["loss_first"] = json!(losses.first());
    fig["loss_last"] = json!(losses.last());
    Ok(fig)
}

/// [`train_figure`] in f32 or bf16 on the CPU, where a micro-step is written out
/// (`written_out::micro_step`; bf16 products in AMX tiles or widened to f32): forward and
/// backward are one pass there, timed as one phase, and the update another.
fn written_out_train_figure(
    train: &mut TrainStep,
    long: &Tensor,
    reps: usize,
) -> anyhow::Result<Value> {
    let mut losses = Vec::new();
    let mut phases = [Vec::new(), Vec::new()];
    let t = time(reps, || {
        let start = Instant::now();
        losses.push(train.accumulate(long, 1.0)?);
        let forward_backward = start.elapsed();
        train.apply(1e-4, None)?;
        let update = start.elapsed() - forward_backward;
        for (p, d) in phases.iter_mut().zip([forward_backward, update]) {
            p.push(d.as_secs_f64());
        }
        Ok(())
    })?;
    let mut fig = figure(LONG_TOKENS, &t);
    for (name, p) in ["forward_backward_s", "optimizer_s"].iter().zip(&phases) {
        fig[name] = json!(median(&p[1..]));
    }
    fig["loss_first"] = json!(losses.first());
    fig["loss_last"] = json!(losses.last());
    Ok(fig)
}

/// The `profile` subcommand's figures.
fn profile(reps: usize) -> anyhow::Result<Value> {
    let cpu = &Device::Cpu;
    let randn = |shape: &[usize], std: f32| Tensor::randn(0f32, std, shape, cpu);
    let mut out = json!({});

    // Matmul throughput, GFLOP/s, on a 500-token prefill's shapes (batch, m, k, n).
    for (name, b, m, k, n) in [
        ("matmul c_attn", 1, 500, 768, 2304),
        ("matmul attn.c_proj", 1, 500, 768, 768),
        ("matmul c_fc", 1, 500, 768, 3072),
        ("matmul mlp.c_proj", 1, 500, 3072, 768),
        ("matmul q k^T", 12, 500, 64, 500),
        ("matmul att v", 12, 500, 500, 64),
    ] {
        let (a, w) = (randn(&[b, m, k], 1.0)?, randn(&[b, k, n], 1.0)?);
        let t = time(reps, || Ok(a.matmul(&w)?))?;
        out[name] = json!(2.0 * (b * m * k * n) as f64 / median(&t) / 1e9);
    }
    let (h, wte) = (randn(&[500, 768], 1.0)?, randn(&[50257, 768], 0.02)?);
    let t = time(reps, || Ok(h.matmul(&wte.t()?)?))?;
    out["matmul lm head"] = json!(2.0 * 500.0 * 768.0 * 50257.0 / median(&t) / 1e9);

    // Decoding: one row times each weight, as GB/s of weights read, against reading alone.
    for (name, k, n) in [
        ("gemv c_attn", 768, 2304),
        ("gemv c_fc", 768, 3072),
        ("gemv mlp.c_proj", 3072, 768),
    ] {
        let ws = (0..12)
            .map(|_| randn(&[k, n], 0.02))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (x, b) = (randn(&[1, k], 1.0)?, randn(&[n], 1.0)?);
        let t = time(reps, || {
            for w in &ws {
                kernels::linear(&x, w, &b)?;
            }
            Ok(())
        })?;
        out[name] = json!((12 * k * n * 4) as f64 / median(&t) / 1e9);
    }
    let x = randn(&[1, 768], 1.0)?;
    let t = time(reps, || Ok(kernels::tied_head(&x, &wte)?))?;
    out["gemv lm head"] = json!((50257 * 768 * 4) as f64 / median(&t) / 1e9);
    let t = time(reps, || Ok(wte.sum_all()?))?;
    out["read only (sum_all)"] = json!((50257 * 768 * 4) as f64 / median(&t) / 1e9);

    // Training: a Conv1D (c_fc) forward + backward through candle's ops, through
    // kernels::linear, and its three matmuls alone; seconds.
    let x = candle_core::Var::from_tensor(&randn(&[1, 500, 768], 1.0)?)?;
    let w = candle_core::Var::from_tensor(&randn(&[768, 3072], 0.02)?)?;
    let b = candle_core::Var::from_tensor(&randn(&[3072], 0.02)?)?;
    let gy = randn(&[1, 500, 3072], 1.0)?;
    let backward = |y: Tensor| -> anyhow::Result<()> {
        (y * &gy)?.sum_all()?.backward()?;
        Ok(())
    };
    let t = time(reps, || {
        let flat = x.as_tensor().reshape((500, 768))?;
        let y = flat.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        backward(y.reshape((1, 500, 3072))?)
    })?;
    out["c_fc fwd+bwd, candle ops (s)"] = json!(median(&t));
    let t = time(reps, || {
        let y = kernels::linear(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
        backward(y.context("f32 on the CPU")?)
    })?;
    out["c_fc fwd+bwd, kernels::linear (s)"] = json!(median(&t));
    let (x2, g2) = (x.as_tensor().reshape((500, 768))?, gy.reshape((500, 3072))?);
    let t = time(reps, || {
        x2.matmul(w.as_tensor())?;
        g2.matmul(&w.as_tensor().t()?)?;
        Ok(x2.t()?.matmul(&g2)?)
    })?;
    out["c_fc's 3 matmuls alone (s)"] = json!(median(&t));

    // The LM loss of a 500-token step (loss::lm_loss), forward and forward + backward; seconds.
    let logits = candle_core::Var::from_tensor(&randn(&[1, 500, 50257], 1.0)?)?;
    let labels = Tensor::new(workloads::long_input(500, 50257).as_slice(), cpu)?
        .to_dtype(candle_core::DType::I64)?
        .unsqueeze(0)?; // (1, T)
    let mut forward = Vec::new();
    let t = time(reps, || {
        let start = Instant::now();
        let l = loss::lm_loss(logits.as_tensor(), &labels)?;
        forward.push(start.elapsed().as_secs_f64());
        Ok(l.backward()?)
    })?;
    out["lm_loss forward (s)"] = json!(median(&forward[1..]));
    out["lm_loss forward + backward (s)"] = json!(median(&t));
    Ok(out)
}

fn weights_bytes(dir: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(dir.join("model.safetensors"))?.len())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // As every example does through ModelArgs::load (src/memory.rs); `--malloc tuned` in
    // scripts/bench.py sets the same (and more) for both sides from outside.
    gpt2_tutorial::memory::reuse_freed_buffers();
    match args.command {
        Command::Prepare(common) => {
            let (name, cfg) = common.config();
            let wrote = workloads::prepare_model(&common.dir(), &cfg, SEED)?;
            let what = if wrote { "wrote" } else { "kept" };
            eprintln!("{what} {name} in {}", common.dir().display());
        }
        Command::Run {
            common,
            reps,
            figures,
            device,
            dtype,
            train_precision,
        } => {
            let device = parse_device(&device)?;
            let m = common.load(&device, dtype.dtype())?;
            let model = Gpt2LmHeadModel::from_weights(&m.weights, &m.config)?;
            let prompt = m.tokenizer.encode(TUTORIAL_PROMPT)?;
            let mut out = json!({
                "side": "candle",
                "size": common.config().0,
                "threads": candle_core::utils::get_num_threads(),
                "prompt_tokens": prompt.len(),
            });
            // Figures on the CPU in f32 keep the keys the recorded benchmarks have.
            if !device.is_cpu() || dtype != Precision::F32 || train_precision != TrainPrecision::F32
            {
                out["device"] = json!(format!("{device:?}"));
                out["dtype"] = json!(dtype.name());
                out["train_precision"] = json!(train_precision.to_string());
            }
            let mut decode_s = None;
            if figures.contains(&Figure::Decode) {
                let t = time_on(&device, reps, || {
                    Ok(workloads::cached_greedy(&model, &prompt, DECODE_TOKENS)?)
                })?;
                decode_s = Some(median(&t));
                out["decode"] = figure(DECODE_TOKENS, &t);
            }
            if figures.contains(&Figure::Naive) {
                let t = time_on(&device, reps, || {
                    Ok(workloads::naive_greedy(&model, &prompt, DECODE_TOKENS)?)
                })?;
                if let Some(d) = decode_s {
                    out["cached_over_naive"] = json!(median(&t) / d);
                }
                out["naive"] = figure(DECODE_TOKENS, &t);
            }
            let long = workloads::long_input(LONG_TOKENS, m.config.vocab_size);
            let long = Tensor::new(long.as_slice(), &device)?.unsqueeze(0)?; // (1, T)
            if figures.contains(&Figure::Prefill) {
                let t = time_on(&device, reps, || Ok(model.forward(&long, None, None)?))?;
                out["prefill"] = figure(LONG_TOKENS, &t);
            }
            // Training starts from f32 weights whatever --dtype is: the precision is the step's.
            let m = if dtype == Precision::F32 {
                m
            } else {
                common.load(&device, candle_core::DType::F32)?
            };
            if figures.contains(&Figure::Train) {
                out["train"] = train_figure(train_step(&m, train_precision)?, &long, reps)?;
            }
            if figures.contains(&Figure::TrainCandleAdamw) {
                let train = train_step(&m, train_precision)?;
                out["train_candle_adamw"] = candle_adamw_train_figure(train, &long, reps)?;
            }
            println!("{out}");
        }
        Command::Profile { reps } => println!("{}", profile(reps)?),
        Command::Rss(common) => {
            let m = common.load(&Device::Cpu, candle_core::DType::F32)?;
            let model = Gpt2LmHeadModel::from_weights(&m.weights, &m.config)?;
            let prompt = m.tokenizer.encode(TUTORIAL_PROMPT)?;
            workloads::cached_greedy(&model, &prompt, DECODE_TOKENS)?;
            let peak = workloads::peak_rss_bytes()?;
            let bytes = weights_bytes(&common.dir())?;
            let out = json!({
                "side": "candle",
                "size": common.config().0,
                "peak_rss_bytes": peak,
                "weights_bytes": bytes,
                "rss_over_weights": peak as f64 / bytes as f64,
            });
            println!("{out}");
        }
    }
    Ok(())
}
