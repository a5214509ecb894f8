//! Chapter 7's Trainer against transformers' (tests/fixtures/trainer.json, written by
//! `scripts/reference/make_trainer_fixtures.py`): two optimizer steps of
//! `GPT2ForSequenceClassification` on the bundled tiny model and the first 32 rows of the
//! bundled IMDB sample, dropout and shuffling off, with both paddings - losses, learning rates,
//! gradient norms, a few parameters after each step, `total_flos`, `evaluate()` and the
//! sentiments within 1e-5. Then what the tutorial's numbers rest on (4,689 steps, `total_flos`
//! 3.91945125888e16, the weight-decay groups, the schedule), resuming, the book's run, and
//! every bad input the chapter names.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::*;
use gpt2_tutorial::config::EOS_TOKEN_ID;
use gpt2_tutorial::data::{tokenize_truncated, Imdb, ImdbSource, Padding, Split};
use gpt2_tutorial::heads::{for_sequence_classification, HEAD_SEED};
use gpt2_tutorial::plot::train_eval_chart;
use gpt2_tutorial::train::{
    decays, floating_point_ops, get_sentiment, latest_checkpoint,
    num_parameters_exclude_embeddings, Collator, Interval, LabelledRows, Logged, ResumeChanges,
    Trainer, TrainingArguments,
};
use gpt2_tutorial::{Error, Gpt2Config, Gpt2Tokenizer, LoadedModel, Weights};
use serde_json::Value;

const REGENERATE_TRAINER: &str = "python scripts/reference/make_trainer_fixtures.py";

// Tolerances (|got - want| <= ABS + REL·|want|), as tests/finetune.rs.
/// Losses and grad norms: means of a few dozen f32 terms; measured below 1e-6.
const LOSS_ABS: f64 = 1e-5;
/// Parameters moved by AdamW's first steps (about ±lr = 1e-3 each); measured ~1e-8.
const PARAM_ABS: f64 = 1e-5;
/// Logits of the trained model: O(1), measured ~1e-7.
const LOGIT_ABS: f64 = 1e-5;
const REL: f64 = 1e-5;

fn fixture() -> Value {
    versioned_fixture("trainer", REGENERATE_TRAINER)
}

/// Compares `got` with `want` within `abs + REL·|want|`, printing the evidence first.
fn check(name: &str, got: &[f64], want: &[f64], abs: f64) {
    check_close(name, got, want, abs, REL, REGENERATE_TRAINER);
}

fn temp_dir(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("gpt2-tutorial-trainer-{name}"))
}

fn tokenizer() -> Gpt2Tokenizer {
    Gpt2Tokenizer::bundled().unwrap()
}

/// The first `n` rows of a bundled split, tokenized with truncation at `max_length`.
fn rows(split: &Split, n: usize, max_length: usize) -> LabelledRows {
    let n = n.min(split.len());
    LabelledRows {
        ids: tokenize_truncated(&tokenizer(), &split.texts[..n], max_length).unwrap(),
        labels: split.labels[..n].to_vec(),
    }
}

fn bundled_imdb() -> Imdb {
    Imdb::load(&ImdbSource::Bundled).unwrap()
}

/// The bundled model as the fixture's: dropout off, pad = eos, and its `score` weight.
fn fixture_model(fx: &Value) -> (Weights, Gpt2Config) {
    let m = bundled();
    let (mut weights, mut cfg, report) =
        for_sequence_classification(&m.weights, &m.config, 2, HEAD_SEED).unwrap();
    assert_eq!(report.new_weights, ["score.weight"]);
    assert_eq!(
        fx["model"]["loading_report"]["missing_keys"],
        serde_json::json!(["score.weight"])
    );
    let score: Vec<Vec<f32>> = fx["model"]["initial_score_weight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| floats(r).into_iter().map(|x| x as f32).collect())
        .collect();
    weights.insert("score.weight", Tensor::new(score, &Device::Cpu).unwrap());
    (cfg.resid_pdrop, cfg.embd_pdrop, cfg.attn_pdrop) = (0.0, 0.0, 0.0);
    cfg.pad_token_id = Some(EOS_TOKEN_ID);
    (weights, cfg)
}

/// The fixture's TrainingArguments: lr 1e-3, batch 16 (eval 64), 1 epoch, weight decay 0.01,
/// dropout and shuffling off, no evaluation or saving during training.
fn fixture_args(out: &Path) -> TrainingArguments {
    TrainingArguments {
        learning_rate: 1e-3,
        num_train_epochs: 1,
        logging_steps: 1,
        eval_strategy: Interval::No,
        save_strategy: Interval::Steps(1),
        shuffle: false,
        dropout: false,
        ..TrainingArguments::tutorial(out)
    }
}

/// The collator of the tutorial's tokenizer: pad = eos.
fn collator(padding: Padding, max_length: usize) -> Collator {
    Collator {
        padding,
        max_length,
        pad_token_id: EOS_TOKEN_ID,
    }
}

/// The bundled model as `GPT2ForSequenceClassification` with 2 labels, padding with eos.
fn bundled_classifier(m: &LoadedModel) -> (Weights, Gpt2Config) {
    let (weights, mut cfg, _) =
        for_sequence_classification(&m.weights, &m.config, 2, HEAD_SEED).unwrap();
    cfg.pad_token_id = Some(EOS_TOKEN_ID);
    (weights, cfg)
}

/// The error `Trainer::new` gives for the bundled classifier and training rows `data`.
fn trainer_refusing(m: &LoadedModel, data: &LabelledRows) -> Error {
    let (weights, cfg) = bundled_classifier(m);
    let args = TrainingArguments {
        eval_strategy: Interval::No,
        ..TrainingArguments::tutorial("unused")
    };
    let collator = collator(Padding::Longest, 8);
    Trainer::new(&weights, &cfg, 2, args, collator, data, None, &tokenizer())
        .err()
        .unwrap()
}

fn probe_checks(padding: &str, at: &str, weights: &Weights, want: &Value) {
    for (name, p) in want.as_object().unwrap() {
        let key = name.strip_prefix("transformer.").unwrap_or(name);
        let flat = common::flat_f32(
            weights
                .get(key)
                .unwrap_or_else(|| panic!("no parameter {key}")),
        );
        let stride = p["stride"].as_u64().unwrap() as usize;
        let first: Vec<f64> = flat.iter().take(8).map(|&x| f64::from(x)).collect();
        let strided: Vec<f64> = (0..8).map(|i| f64::from(flat[i * stride])).collect();
        let sum: f64 = flat.iter().map(|&x| f64::from(x)).sum();
        let tag = format!("{padding} {at} {name}");
        check(
            &format!("{tag} first"),
            &first,
            &floats(&p["first"]),
            PARAM_ABS,
        );
        check(
            &format!("{tag} strided"),
            &strided,
            &floats(&p["strided"]),
            PARAM_ABS,
        );
        // n values, each within ~1e-8 of PyTorch's.
        let bound = (flat.len() as f64 * 1e-8).max(PARAM_ABS);
        check(
            &format!("{tag} sum"),
            &[sum],
            &[p["sum_f64"].as_f64().unwrap()],
            bound,
        );
    }
}

/// Replays one of the fixture's two runs through the Trainer and compares everything.
fn replay(padding: Padding) {
    let fx = fixture();
    let run = &fx["runs"][padding.to_string()];
    let imdb = bundled_imdb();
    let max_length = fx["tokenizer"]["max_length"].as_u64().unwrap() as usize;
    let train = rows(&imdb.train, 32, max_length);
    let test = rows(&imdb.test, 64, max_length);
    for (i, want) in run["train_ids"].as_array().unwrap().iter().enumerate() {
        assert_eq!(train.ids[i], ids(want), "train row {i}'s tokens");
    }
    assert_eq!(
        train.labels,
        floats(&run["train_labels"])
            .iter()
            .map(|&l| l as i64)
            .collect::<Vec<_>>()
    );

    let (weights, cfg) = fixture_model(&fx);
    let out = temp_dir(&format!("replay-{padding}"));
    let collator = collator(padding, max_length);
    let tok = tokenizer();
    let mut trainer = Trainer::new(
        &weights,
        &cfg,
        2,
        fixture_args(&out),
        collator,
        &train,
        Some(&test),
        &tok,
    )
    .unwrap();
    let output = trainer.train().unwrap();

    let steps = run["steps"].as_array().unwrap();
    let log = &trainer.state().log_history;
    let pick = |key: &str| {
        steps
            .iter()
            .map(|s| s[key].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    check(
        &format!("{padding} losses"),
        &log.iter().map(|l| l.loss).collect::<Vec<_>>(),
        &pick("loss"),
        LOSS_ABS,
    );
    check(
        &format!("{padding} lrs"),
        &log.iter().map(|l| l.learning_rate).collect::<Vec<_>>(),
        &pick("learning_rate"),
        0.0,
    );
    check(
        &format!("{padding} grad norms"),
        &log.iter().map(|l| l.grad_norm).collect::<Vec<_>>(),
        &pick("grad_norm"),
        LOSS_ABS,
    );
    check(
        &format!("{padding} epochs"),
        &log.iter().map(|l| l.epoch).collect::<Vec<_>>(),
        &pick("epoch"),
        0.0,
    );

    // TrainOutput: global_step, training_loss, total_flos exactly, epoch.
    let want = &run["train_output"];
    assert_eq!(
        output.global_step as u64,
        want["global_step"].as_u64().unwrap()
    );
    check(
        "training_loss",
        &[output.training_loss],
        &[want["training_loss"].as_f64().unwrap()],
        LOSS_ABS,
    );
    assert_eq!(
        output.metrics.total_flos,
        want["metrics"]["total_flos"].as_f64().unwrap()
    );
    assert_eq!(
        output.metrics.epoch,
        want["metrics"]["epoch"].as_f64().unwrap()
    );
    assert_eq!(
        num_parameters_exclude_embeddings(&cfg, 2).unwrap() as u64,
        run["flos"]["num_parameters_exclude_embeddings"]
            .as_u64()
            .unwrap()
    );

    // The parameters after each step, read back from the checkpoints the run saved.
    for step in [1, 2] {
        let dir = out.join(format!("checkpoint-{step}"));
        let w = Weights::load(
            &dir.join("model.safetensors"),
            &cfg,
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let at = format!("after_step_{step}");
        probe_checks(&padding.to_string(), &at, &w, &run["probes"][&at]);
    }
    assert_eq!(latest_checkpoint(&out), Some(out.join("checkpoint-2")));

    // evaluate(): loss, accuracy and every row's logits.
    let eval = trainer.evaluate().unwrap();
    let want = &run["eval"]["metrics"];
    check(
        "eval_loss",
        &[eval.eval_loss],
        &[want["eval_loss"].as_f64().unwrap()],
        LOSS_ABS,
    );
    assert_eq!(eval.accuracy(), want["eval_accuracy"].as_f64());
    let (prediction, _) = trainer.predict(&test).unwrap();
    let got: Vec<f64> = prediction
        .logits
        .iter()
        .flatten()
        .map(|&x| f64::from(x))
        .collect();
    let want: Vec<f64> = run["eval"]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    check(&format!("{padding} eval logits"), &got, &want, LOGIT_ABS);

    // get_sentiment on the trained model.
    let model = trainer.model().unwrap();
    for s in run["sentiments"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        let got = get_sentiment(&model, &tokenizer(), text, &["negative", "positive"]).unwrap();
        assert_eq!(got.ids, ids(&s["ids"]));
        let logits: Vec<f64> = got.logits.iter().map(|&x| f64::from(x)).collect();
        check(
            &format!("{padding} {text}"),
            &logits,
            &floats(&s["logits"]),
            LOGIT_ABS,
        );
        assert_eq!(got.sentiment, s["sentiment"].as_str().unwrap());
    }
}

/// The tutorial's `padding="max_length"`: every row padded to 64 tokens.
#[test]
fn two_trainer_steps_match_transformers_max_length() {
    replay(Padding::MaxLength);
}

/// `DataCollatorWithPadding`: each batch padded to its longest row - the same losses, less
/// work (and less `total_flos`).
#[test]
fn two_trainer_steps_match_transformers_longest() {
    replay(Padding::Longest);
}

// ---- half precision: the tutorial's `model.half()` ----

const REGENERATE_HALF: &str = "python scripts/reference/make_trainer_fixtures.py --half-only";

/// What one optimizer step left in the weights, counted over every parameter.
#[derive(Debug, Default, PartialEq)]
struct Census {
    nan: usize,
    pos_inf: usize,
    neg_inf: usize,
    finite: usize,
    finite_moved: usize,
}

fn census(before: &Weights, after: &Weights) -> Census {
    let mut c = Census::default();
    for name in after.names() {
        let b = common::flat_f32(&before.get(&name).unwrap().to_dtype(DType::F16).unwrap());
        let a = common::flat_f32(after.get(&name).unwrap());
        for (&x, &y) in b.iter().zip(&a) {
            match y {
                y if y.is_nan() => c.nan += 1,
                f32::INFINITY => c.pos_inf += 1,
                f32::NEG_INFINITY => c.neg_inf += 1,
                y => {
                    c.finite += 1;
                    c.finite_moved += usize::from(y != x);
                }
            }
        }
    }
    c
}

/// A count as the book writes it: 3382208 -> "3,382,208".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `07 --dtype f16`: the tutorial's `.half()` classifier trained as it is, pure f16 with
/// `adamw_torch`, against transformers' Trainer on the same half model (fixture
/// `trainer_f16.json`, the max_length run of `trainer.json` after `model.half()`).
///
/// Step 1: the loss and the gradient norm as transformers' within f16's own precision (both
/// sides run the forward and backward passes in f16, each operation rounded to f16 - 2^-11
/// relative - in different orders); its learning rate exactly. AdamW's moments are f16, and
/// its update divides by zero wherever the second moment rounds to 0 (eps 1e-8 is 0 in f16):
/// after step 1 nearly every weight is NaN or infinite, as in PyTorch - each count within
/// 0.01% of the parameters (338; 24 apart at most, measured), since a gradient within
/// rounding of the 5.46e-3 threshold can fall either side of it. Step 2: the loss is NaN in PyTorch (which logs it as 0.0 and goes on);
/// the Trainer stops there, at step 2, and says so.
#[test]
fn two_half_trainer_steps_match_transformers() {
    let fx = versioned_fixture("trainer_f16", REGENERATE_HALF);
    let run = &fx["trainer"];
    assert_eq!(
        run["optimizer"]["state_dtypes"],
        serde_json::json!(["torch.float16"])
    );
    let imdb = bundled_imdb();
    let train = rows(&imdb.train, 32, 64);
    let (weights, cfg) = fixture_model(&fixture());
    let out = temp_dir("half");
    let args = TrainingArguments {
        precision: "f16".into(),
        save_strategy: Interval::No,
        ..fixture_args(&out)
    };
    let tok = tokenizer();
    let collator = collator(Padding::MaxLength, 64);
    let mut trainer = Trainer::new(&weights, &cfg, 2, args, collator, &train, None, &tok).unwrap();
    let stopped = trainer.train().unwrap_err();
    match &stopped {
        Error::TrainingDiverged {
            what, value, step, ..
        } => {
            assert_eq!((*what, *step), ("loss", 2), "{stopped}");
            assert!(value.is_nan(), "{stopped}");
        }
        other => panic!("expected the run to stop at step 2, got {other:?}"),
    }
    let want = &run["steps"];
    assert_eq!(want[1]["loss"], "nan", "PyTorch's step 2 loss");

    let log = &trainer.state().log_history;
    assert_eq!(log.len(), 1, "step 1 logged, step 2 not");
    // PyTorch's loss and grad norm are f16 numbers (spacing 4.9e-4 at 0.78, 3.9e-3 at 4.96:
    // up to 7.9e-4 relative); here the loss is taken in f32 from the f16 logits and the norm
    // summed in f32. 2e-3 relative is two of those spacings (measured: 1.1e-4 and 3.0e-4).
    let half_rel = 2e-3;
    check_close(
        "f16 step 1 loss",
        &[log[0].loss],
        &[want[0]["loss"].as_f64().unwrap()],
        0.0,
        half_rel,
        REGENERATE_HALF,
    );
    check_close(
        "f16 step 1 grad norm",
        &[log[0].grad_norm],
        &[want[0]["grad_norm"].as_f64().unwrap()],
        0.0,
        half_rel,
        REGENERATE_HALF,
    );
    assert_eq!(
        log[0].learning_rate,
        want[0]["learning_rate"].as_f64().unwrap()
    );
    for name in ["wte.weight", "score.weight"] {
        let (m, v) = trainer.train_step.optimizer().moments(name).unwrap();
        assert_eq!((m.dtype(), v.dtype()), (DType::F16, DType::F16), "{name}");
    }

    let after = trainer.train_step.weights().unwrap();
    assert_eq!(after.dtype(), DType::F16);
    let got = census(&weights, &after);
    let t = &run["after_step_1"]["totals"];
    let count = |k: &str| t[k].as_u64().unwrap() as usize;
    let total = count("numel");
    assert_eq!(after.num_parameters(), total);
    let close = |name: &str, got: usize, want: usize| {
        assert!(
            got.abs_diff(want) * 10_000 <= total,
            "after step 1, {name}: {got} here, {want} in PyTorch (of {total}); regenerate with `{REGENERATE_HALF}`"
        );
    };
    close("NaN", got.nan, count("nan"));
    close("+inf", got.pos_inf, count("pos_inf"));
    close("-inf", got.neg_inf, count("neg_inf"));
    close("finite", got.finite, count("finite"));
    assert_eq!(got.finite, got.finite_moved, "every finite weight moved");
    println!(
        "f16 step 1: loss {} grad norm {}; after it {got:?} here; PyTorch {want} {t}",
        log[0].loss, log[0].grad_norm
    );

    fragment("07_f16_parameters.md", &thousands(total));
    fragment("07_f16_finite_after_step_1.md", &thousands(got.finite));
    fragment("07_f16_nan_after_step_1.md", &thousands(got.nan));
    fragment(
        "07_f16_inf_after_step_1.md",
        &thousands(got.pos_inf + got.neg_inf),
    );
}

/// The tutorial's `global_step`: 25,000 rows in batches of 16 are 1,563 batches an epoch (the
/// last of 8 rows), 3 epochs 4,689 optimizer steps.
#[test]
fn tutorial_step_arithmetic() {
    let fx = fixture();
    let args = TrainingArguments::tutorial("unused");
    assert_eq!(args.steps_per_epoch(25_000), 1_563);
    assert_eq!(args.total_steps(25_000), 4_689);
    assert_eq!(
        args.total_steps(25_000) as u64,
        fx["tutorial_flops"]["global_step"].as_u64().unwrap()
    );
    let accumulating = TrainingArguments {
        gradient_accumulation_steps: 4,
        ..args.clone()
    };
    assert_eq!(accumulating.steps_per_epoch(25_000), 391); // 390 groups of 4 and one of 3
    let limited = TrainingArguments {
        max_steps: Some(10),
        ..args
    };
    assert_eq!(limited.total_steps(25_000), 10);
}

/// `total_flos` as transformers counts it, from gpt2's config alone: 6 × 85,057,536 non-embedding
/// parameters (score included) × 25,000 · 3 · 1,024 tokens = 3.91945125888e16, in closed form
/// and summed batch by batch as the Trainer sums it.
#[test]
fn tutorial_total_flos() {
    let fx = fixture();
    let want = &fx["tutorial_flops"];
    let n = num_parameters_exclude_embeddings(&Gpt2Config::gpt2(), 2).unwrap();
    assert_eq!(n, 85_057_536);
    assert_eq!(
        n as u64,
        want["num_parameters_exclude_embeddings"].as_u64().unwrap()
    );
    assert_eq!(floating_point_ops(n, 25_000 * 3 * 1024), 3.91945125888e16);
    let mut summed = 0.0;
    for _epoch in 0..3 {
        for batch in 0..1_563 {
            let rows = if batch == 1_562 {
                25_000 - 1_562 * 16
            } else {
                16
            };
            summed += floating_point_ops(n, rows * 1024);
        }
    }
    assert_eq!(summed, want["total_flos"].as_f64().unwrap());
    assert_eq!(summed, 3.91945125888e16);
}

/// The chapter's `total_flos` of the default run on the bundled sample (the tutorial's
/// arguments, 240 rows, 3 epochs): 6 × 100,224 × 240 · 3 · 1,024 with every row padded to 1,024,
/// and, when each shuffled batch is padded to its longest row, the sum over every batch of
/// every epoch - each epoch in its own order (`epoch_order(240, 42, epoch)`): 7,908,876,288.
#[test]
fn default_run_total_flos_for_both_paddings() {
    let m = bundled();
    let n = num_parameters_exclude_embeddings(&m.config, 2).unwrap();
    assert_eq!(n, 100_224);
    assert_eq!(floating_point_ops(n, 240 * 3 * 1024), 443_358_904_320.0);
    let (weights, cfg) = bundled_classifier(m);
    let imdb = bundled_imdb();
    let train = rows(&imdb.train, 240, 1024);
    let collator = collator(Padding::Longest, 1024);
    let out = temp_dir("flos");
    let args = TrainingArguments {
        eval_strategy: Interval::No,
        save_strategy: Interval::No,
        ..TrainingArguments::tutorial(out.to_path_buf())
    };
    let tok = tokenizer();
    let mut trainer = Trainer::new(&weights, &cfg, 2, args, collator, &train, None, &tok).unwrap();
    let output = trainer.train().unwrap();
    assert_eq!(output.global_step, 45);
    let mut tokens = 0;
    for epoch in 0..3 {
        let order = gpt2_tutorial::data::epoch_order(240, 42, epoch, true);
        for batch in order.chunks(16) {
            let longest = batch.iter().map(|&i| train.ids[i].len()).max().unwrap();
            tokens += batch.len() * longest;
        }
    }
    assert_eq!(output.metrics.total_flos, floating_point_ops(n, tokens));
    assert_eq!(output.metrics.total_flos, 7_908_876_288.0);
}

/// The weight-decay groups of transformers' Trainer: 0.01 for every weight matrix, the
/// embeddings and `score.weight`; 0 for biases and LayerNorm parameters.
#[test]
fn weight_decay_groups_match_transformers() {
    let fx = fixture();
    let groups = &fx["decay_groups"];
    for name in groups["weight_decay_0.01"].as_array().unwrap() {
        assert!(decays(name.as_str().unwrap()), "{name} should decay");
    }
    for name in groups["weight_decay_0"].as_array().unwrap() {
        assert!(!decays(name.as_str().unwrap()), "{name} should not decay");
    }
    let all = fx["model"]["parameter_names"].as_array().unwrap().len();
    let listed = groups["weight_decay_0.01"].as_array().unwrap().len()
        + groups["weight_decay_0"].as_array().unwrap().len();
    assert_eq!(all, listed, "every parameter is in one group");
}

/// Linear decay to 0 without warm-up: the fixture's two steps run at 1e-3 and 5e-4; the
/// tutorial's first at 2e-5 and its last at 2e-5 / 4,689.
#[test]
fn schedule_is_linear_to_zero_without_warmup() {
    let fx = fixture();
    let s = fixture_args(Path::new("unused")).schedule(2);
    let want: Vec<f64> = fx["runs"]["max_length"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["learning_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(vec![s.lr(0), s.lr(1)], want);
    let tutorial = TrainingArguments::tutorial("unused").schedule(4_689);
    assert_eq!(tutorial.lr(0), 2e-5);
    assert_eq!(tutorial.lr(4_688), 2e-5 / 4_689.0);
    assert_eq!(tutorial.lr(4_689), 0.0);
}

/// Padding changes nothing the classifier reads: through the Trainer, every evaluated row's
/// logits are the same padded to 64, padded to its batch's longest row, and alone.
#[test]
fn padded_batches_pool_the_last_non_pad_token() {
    let fx = fixture();
    let (weights, cfg) = fixture_model(&fx);
    let imdb = bundled_imdb();
    let test = rows(&imdb.test, 20, 64);
    let logits = |padding: Padding| {
        let collator = collator(padding, 64);
        let out = temp_dir("pooling");
        let trainer = Trainer::new(
            &weights,
            &cfg,
            2,
            fixture_args(&out),
            collator,
            &test,
            None,
            &tokenizer(),
        )
        .unwrap();
        trainer.predict(&test).unwrap().0.logits
    };
    let (max_length, longest) = (logits(Padding::MaxLength), logits(Padding::Longest));
    let model =
        gpt2_tutorial::heads::Gpt2ForSequenceClassification::from_weights(&weights, &cfg, 2)
            .unwrap();
    for (i, row) in test.ids.iter().enumerate() {
        let alone: Vec<f32> = model
            .forward(
                &Tensor::new(row.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                None,
            )
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        check(
            &format!("row {i} max_length"),
            &f(&max_length[i]),
            &f(&alone),
            1e-5,
        );
        check(
            &format!("row {i} longest"),
            &f(&longest[i]),
            &f(&alone),
            1e-5,
        );
    }
}

/// Stopping after checkpoint-N and resuming from it gives the same losses as an
/// uninterrupted run, bit for bit - with shuffling and dropout on, so the epoch order and the
/// dropout generator must both come back.
#[test]
fn resume_from_a_checkpoint_continues_the_same_losses() {
    let m = bundled();
    let (weights, cfg) = bundled_classifier(m);
    let imdb = bundled_imdb();
    let train = rows(&imdb.train, 48, 32); // 3 batches of 16 an epoch
    let test = rows(&imdb.test, 16, 32);
    let collator = collator(Padding::Longest, 32);
    let args = |out: &Path| TrainingArguments {
        learning_rate: 1e-3,
        num_train_epochs: 2,
        save_strategy: Interval::Steps(2),
        ..TrainingArguments::tutorial(out)
    };
    let tok = tokenizer();
    let out = temp_dir("resume");
    let mut whole = Trainer::new(
        &weights,
        &cfg,
        2,
        args(&out),
        collator,
        &train,
        Some(&test),
        &tok,
    )
    .unwrap();
    let full = whole.train().unwrap();
    let all: Vec<f64> = whole.state().log_history.iter().map(|l| l.loss).collect();
    assert_eq!(all.len(), 6);
    let whole_evals = whole.state().eval_history.clone();
    drop(whole); // the run ends, and with it its hold on the folder

    let mut resumed =
        Trainer::resume(&out.join("checkpoint-2"), &train, Some(&test), &Device::Cpu).unwrap();
    assert_eq!(resumed.train_step.step_count(), 2);
    let again = resumed.train().unwrap();
    let losses: Vec<f64> = resumed.state().log_history.iter().map(|l| l.loss).collect();
    assert_eq!(losses, all, "the resumed run's losses");
    assert_eq!(again.global_step, full.global_step);
    assert_eq!(again.metrics.total_flos, full.metrics.total_flos);
    assert_eq!(resumed.state().eval_history, whole_evals);

    // Other rows are refused.
    let other = rows(&imdb.train, 40, 32);
    let err = Trainer::resume(&out.join("checkpoint-2"), &other, Some(&test), &Device::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("trained on other rows"), "{err}");

    // A resumed run changes its schedule from the next step on, and the change is recorded;
    // one that leaves no step to train is refused.
    let checkpoint = out.join("checkpoint-2");
    let mut extended = Trainer::resume(&checkpoint, &train, Some(&test), &Device::Cpu).unwrap();
    let too_few = ResumeChanges {
        max_steps: Some(2),
        ..ResumeChanges::default()
    };
    let err = extended.change_schedule(too_few).unwrap_err();
    assert!(
        err.to_string().contains("the checkpoint has made 2"),
        "{err}"
    );
    let longer = ResumeChanges {
        lr: Some(1e-4),
        max_steps: Some(9),
        ..ResumeChanges::default()
    };
    extended.change_schedule(longer).unwrap();
    let recorded = &extended.state().schedule_changes;
    assert_eq!(recorded.len(), 1);
    assert_eq!((recorded[0].after_step, recorded[0].changes), (2, longer));
    assert_eq!(extended.state().max_steps, 9);
}

/// A stop asked for during a run (here from the log of step 1, so at the next batch) saves the
/// run as step 1 left it, and the resumed run's losses are an uninterrupted run's, bit for bit.
#[test]
fn a_stopped_run_saves_its_last_step_and_resumes_exactly() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = bundled();
    let (weights, cfg) = bundled_classifier(m);
    let imdb = bundled_imdb();
    let train = rows(&imdb.train, 64, 32); // 4 batches of 16: 2 optimizer steps an epoch
    let test = rows(&imdb.test, 16, 32);
    let args = |out: &Path| TrainingArguments {
        learning_rate: 1e-3,
        num_train_epochs: 2,
        gradient_accumulation_steps: 2,
        logging_steps: 1,
        eval_strategy: Interval::No,
        save_strategy: Interval::Steps(100), // only the stop and the end save
        ..TrainingArguments::tutorial(out)
    };
    let tok = tokenizer();
    let new = |out: &Path| {
        let c = collator(Padding::Longest, 32);
        Trainer::new(&weights, &cfg, 2, args(out), c, &train, Some(&test), &tok).unwrap()
    };
    let (whole_dir, part_dir) = (temp_dir("stop-whole"), temp_dir("stop-part"));
    let mut whole = new(&whole_dir);
    whole.train().unwrap();
    let all: Vec<f64> = whole.state().log_history.iter().map(|l| l.loss).collect();
    assert_eq!(all.len(), 4);
    drop(whole);

    let mut part = new(&part_dir);
    let stop = Arc::new(AtomicBool::new(false));
    part.stop_when(stop.clone());
    part.train_with(&mut |logged| {
        if matches!(logged, Logged::Train { step: 1, .. }) {
            stop.store(true, Ordering::SeqCst); // seen before step 2's first batch
        }
    })
    .unwrap();
    assert!(part.interrupted());
    let saved = part.last_checkpoint().unwrap().to_path_buf();
    assert_eq!(saved, part_dir.join("checkpoint-1"));
    drop(part);
    let mut resumed = Trainer::resume(&saved, &train, Some(&test), &Device::Cpu).unwrap();
    resumed.train().unwrap();
    assert!(!resumed.interrupted());
    let losses: Vec<f64> = resumed.state().log_history.iter().map(|l| l.loss).collect();
    assert_eq!(losses, all);
}

// ---- bad input ----

fn write_parquet(path: &Path, texts: Option<&[&str]>, labels: Option<&[i64]>) {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let mut fields = Vec::new();
    if texts.is_some() {
        fields.push("REQUIRED BYTE_ARRAY text (UTF8);");
    }
    if labels.is_some() {
        fields.push("REQUIRED INT64 label;");
    }
    let schema = parquet::schema::parser::parse_message_type(&format!(
        "message schema {{ {} }}",
        fields.join(" ")
    ))
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(
        file,
        Arc::new(schema),
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut group = writer.next_row_group().unwrap();
    if let Some(texts) = texts {
        let mut col = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = texts.iter().map(|s| ByteArray::from(*s)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
    }
    if let Some(labels) = labels {
        let mut col = group.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(labels, None, None)
            .unwrap();
        col.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// A dataset directory with `train.parquet` and `test.parquet`.
fn dataset(
    name: &str,
    train: (Option<&[&str]>, Option<&[i64]>),
    test: (Option<&[&str]>, Option<&[i64]>),
) -> gpt2_tutorial::Result<Imdb> {
    let dir = temp_dir(name);
    write_parquet(&dir.join("train-00000-of-00001.parquet"), train.0, train.1);
    write_parquet(&dir.join("test-00000-of-00001.parquet"), test.0, test.1);
    Imdb::load(&ImdbSource::Local(dir.to_path_buf()))
}

const TEXTS: [&str; 3] = ["Great film.", "Awful film.", "Lovely acting."];

#[test]
fn a_label_outside_num_labels_is_an_error() {
    // The test split has a class the training split never shows.
    let err = dataset(
        "label",
        (Some(&TEXTS), Some(&[1, 0, 1])),
        (Some(&TEXTS), Some(&[1, 2, 0])),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelOutOfRange {
                label: 2,
                row: 1,
                num_labels: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("label 2 in row 1 of the test split"),
        "{err}"
    );
    // IMDB's unlabelled split (label -1) in the training files.
    let err = dataset(
        "negative",
        (Some(&TEXTS), Some(&[1, -1, 0])),
        (Some(&TEXTS), Some(&[1, 0, 0])),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::LabelOutOfRange { label: -1, .. }),
        "{err}"
    );
    // And through the Trainer: a model with 2 labels given a row of class 3.
    let m = bundled();
    let data = LabelledRows {
        ids: vec![vec![1, 2], vec![3]],
        labels: vec![0, 3],
    };
    let err = trainer_refusing(m, &data);
    assert!(
        matches!(err, Error::LabelOutOfRange { label: 3, .. }),
        "{err}"
    );
}

#[test]
fn missing_text_or_label_columns_are_named() {
    let err = dataset(
        "no-label",
        (Some(&TEXTS), None),
        (Some(&TEXTS), Some(&[1, 0, 1])),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::MissingColumn { column, .. } if column == "label"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("has no column `label`: its columns are text"),
        "{err}"
    );
    let err = dataset(
        "no-text",
        (Some(&TEXTS), Some(&[1, 0, 1])),
        (None, Some(&[1, 0, 1])),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::MissingColumn { column, .. } if column == "text"),
        "{err}"
    );
}

#[test]
fn an_empty_split_is_an_error() {
    let err = dataset(
        "empty",
        (Some(&TEXTS), Some(&[1, 0, 1])),
        (Some(&[]), Some(&[])),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::EmptyDataset { reason, .. } if reason.contains("test split has no rows")),
        "{err}"
    );
    // A directory without a test file.
    let dir = temp_dir("no-test");
    write_parquet(&dir.join("train.parquet"), Some(&TEXTS), Some(&[1, 0, 1]));
    let err = Imdb::load(&ImdbSource::Local(dir.to_path_buf())).unwrap_err();
    assert!(err.to_string().contains("no test-*.parquet file"), "{err}");
    // And no rows handed to the Trainer.
    let m = bundled();
    let empty = LabelledRows {
        ids: vec![],
        labels: vec![],
    };
    let err = trainer_refusing(m, &empty);
    assert!(matches!(err, Error::EmptyDataset { .. }), "{err}");
}

#[test]
fn batch_size_zero_is_an_error() {
    let args = TrainingArguments {
        per_device_train_batch_size: 0,
        ..TrainingArguments::tutorial("unused")
    };
    let err = args.validate().unwrap_err();
    assert!(
        err.to_string().contains("per_device_train_batch_size is 0"),
        "{err}"
    );
    let out = example(
        "07_imdb_finetune",
        &[
            "--batch-size",
            "0",
            "--quiet",
            "--out",
            temp_dir("bs0").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("per_device_train_batch_size is 0: a batch needs at least one row"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_padding_is_an_error() {
    let err = "bogus".parse::<Padding>().unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown padding \"bogus\": use max_length"),
        "{err}"
    );
    assert_eq!("max_length".parse::<Padding>().unwrap(), Padding::MaxLength);
    let out = example("07_imdb_finetune", &["--padding", "bogus"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'bogus' for '--padding <PADDING>'")
            && stderr.contains("max_length, longest"),
        "{stderr}"
    );
}

// ---- the book's run ----

/// The flags of the book's run (chapters/07_imdb_finetune.md): the tutorial's lr of 2e-5 barely
/// moves the tiny random model, so a larger one, more epochs, and short rows padded per batch.
pub const BOOK_RUN: [&str; 10] = [
    "--lr",
    "1e-3",
    "--epochs",
    "6",
    "--padding",
    "longest",
    "--max-length",
    "64",
    "--logging-steps",
    "15",
];

/// What the example writes to `history.json`: `(step, loss)` of every step, `(step, accuracy)`
/// and `(step, eval_loss)` of every evaluation.
type History = (Vec<(usize, f64)>, Vec<(usize, f64)>, Vec<(usize, f64)>);

/// Replaces the timings, which vary run to run, and the temporary output directory.
fn redact(text: &str, out: &Path) -> String {
    let text = text.replace(out.to_str().unwrap(), "[out]");
    let mut redacted = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        for key in [
            "train_runtime",
            "train_samples_per_second",
            "train_steps_per_second",
            "eval_runtime",
            "eval_samples_per_second",
            "eval_steps_per_second",
        ] {
            let pat = format!("'{key}': ");
            if let Some(i) = line.find(&pat) {
                let start = i + pat.len();
                let end = line[start..]
                    .find([',', '}'])
                    .map_or(line.len(), |e| start + e);
                line.replace_range(start..end, "[t]");
            }
        }
        redacted.push_str(&line);
        redacted.push('\n');
    }
    redacted
}

/// After the book's run the bundled test split's accuracy is well above chance and "I hate
/// this movie!" is negative; its output and the committed figure are what the code gives.
#[test]
fn the_books_run_learns_sentiment() {
    let out = temp_dir("book");
    let mut flags = BOOK_RUN.to_vec();
    flags.extend(["--quiet", "--out", out.to_str().unwrap()]);
    let text = run_example("07_imdb_finetune", &flags);
    with_snapshots(|| insta::assert_snapshot!("07_imdb_finetune", redact(&text, &out)));

    flags.extend(["--json", "--overwrite"]); // the same run again, into the same folder
    let json: Value = serde_json::from_str(&run_example("07_imdb_finetune", &flags)).unwrap();
    let accuracy = json["eval"]["eval_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.65, "eval accuracy {accuracy}, chance is 0.5");
    assert_eq!(json["sentiments"][0]["text"], "I hate this movie!");
    assert_eq!(json["sentiments"][0]["sentiment"], "negative");
    assert_eq!(json["losses"].as_array().unwrap().len(), 90);
    assert_eq!(json["train_output"]["global_step"], 90);
    for key in [
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
        "epoch",
    ] {
        assert!(
            json["train_output"]["metrics"].get(key).is_some(),
            "train_output.metrics.{key}"
        );
    }
    // The JSON run and the text run are the same run.
    assert!(
        text.contains(&format!("'eval_accuracy': {accuracy}")),
        "{text}"
    );

    // The book's figure is drawn from the committed history, and that history is this run's.
    let committed = root().join("chapters/figures/07_imdb_history.json");
    let history: History =
        serde_json::from_str(&std::fs::read_to_string(&committed).unwrap()).unwrap();
    let fresh: History =
        serde_json::from_str(&std::fs::read_to_string(out.join("history.json")).unwrap()).unwrap();
    // Steps equal; values within 1e-3 (90 steps of float sums: the last bits may differ
    // between CPUs, the book's three decimals may not).
    let close = |a: &[(usize, f64)], b: &[(usize, f64)]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-3)
    };
    assert!(
        close(&history.0, &fresh.0) && close(&history.1, &fresh.1) && close(&history.2, &fresh.2),
        "{} is not what the book's run records now; regenerate it with `scripts/book_figures.sh`",
        committed.display()
    );
    // The figures chapter 7 quotes from the book's run: the accuracy after the first epoch,
    // the fourth and the last (15 steps an epoch), of the 80 test sentences; its total_flos;
    // and what 10 epochs give instead.
    let at = |step: usize| history.1.iter().find(|(s, _)| *s == step).unwrap().1;
    let of_80 = |a: f64| (a * 80.0).round() as usize;
    let (first, fourth, last) = (at(15), at(60), at(90));
    fragment("07_book_accuracy_epoch_1.md", &format!("{first:.3}"));
    fragment(
        "07_book_accuracy_epoch_4.md",
        &format!("{fourth:.3} ({} of 80)", of_80(fourth)),
    );
    fragment(
        "07_book_accuracy_last.md",
        &format!("{last:.4} ({} of 80)", of_80(last)),
    );
    let flos = json["train_output"]["metrics"]["total_flos"]
        .as_f64()
        .unwrap();
    assert_eq!(flos.fract(), 0.0, "total_flos is a whole number: {flos}");
    fragment("07_book_total_flos.md", &thousands(flos as usize));
    let ten = out.join("ten-epochs");
    let mut flags: Vec<&str> = BOOK_RUN.to_vec();
    flags[3] = "10";
    flags.extend(["--quiet", "--json", "--out", ten.to_str().unwrap()]);
    let longer: Value = serde_json::from_str(&run_example("07_imdb_finetune", &flags)).unwrap();
    let longer_accuracy = longer["eval"]["eval_accuracy"].as_f64().unwrap();
    let sentiments: Vec<&str> = longer["sentiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sentiment"].as_str().unwrap())
        .collect();
    fragment(
        "07_ten_epochs_accuracy.md",
        &format!("{longer_accuracy:.4} ({} of 80)", of_80(longer_accuracy)),
    );
    // The two sentences' labels after 10 epochs, in the order asked: "I hate this movie!",
    // "I love this movie!".
    fragment("07_ten_epochs_sentiments.md", &sentiments.join(" and "));

    let title = "Training and eval loss, eval accuracy";
    let svg = train_eval_chart(title, &history.0, &history.2, &history.1).unwrap();
    let figure = root().join("chapters/figures/07_imdb_loss_accuracy.svg");
    assert!(
        svg == std::fs::read_to_string(&figure).unwrap(),
        "{} is not what the code draws from the committed history; regenerate it with `scripts/book_figures.sh`",
        figure.display()
    );
}

/// The bundled data: 240 + 80 rows, two classes, balanced.
#[test]
fn the_bundled_sample_has_two_balanced_classes() {
    let imdb = bundled_imdb();
    assert_eq!(
        (imdb.train.len(), imdb.test.len(), imdb.num_labels),
        (240, 80, 2)
    );
    assert_eq!(imdb.train.labels.iter().sum::<i64>(), 120);
    assert_eq!(imdb.test.labels.iter().sum::<i64>(), 40);
    let sub = imdb.train.subset(32, 42).unwrap();
    assert_eq!(sub.len(), 32);
    assert_eq!(
        sub,
        imdb.train.subset(32, 42).unwrap(),
        "a subset is seeded"
    );
    // Chapter 7's book run cuts rows at 64 tokens: no bundled sentence is that long.
    let longest = [&imdb.train, &imdb.test]
        .iter()
        .flat_map(|split| tokenize_truncated(&tokenizer(), &split.texts, 1024).unwrap())
        .map(|ids| ids.len())
        .max()
        .unwrap();
    assert!(
        longest < 64,
        "the longest bundled sentence has {longest} tokens"
    );
}

/// The padding figures chapter 7 quotes are computed from the recorded run
/// (`scripts/bench_imdb_padding.sh` writes `benchmarks/imdb-padding-<date>.md`): how many
/// times as many sentences a second padding per batch trained, and how many times the
/// estimated work (`total_flos`) padding to 1,024 made.
#[test]
fn the_padding_figures_are_the_recorded_ones() {
    let record_name = "imdb-padding-2026-11-26.md";
    let record = std::fs::read_to_string(root().join("benchmarks").join(record_name)).unwrap();
    let row = |padding: &str| -> Vec<f64> {
        let line = record
            .lines()
            .find(|l| l.starts_with(&format!("| `{padding}`")))
            .unwrap_or_else(|| panic!("no {padding} row in {record_name}"));
        line.split('|')
            .skip(2)
            .filter_map(|c| c.trim().parse().ok())
            .collect()
    };
    let (full, longest) = (row("max_length"), row("longest"));
    let speed = longest[0] / full[0];
    let work = full[2] / longest[2];
    fragment("07_padding_speedup.md", &format!("{speed:.0}"));
    fragment("07_padding_work_ratio.md", &format!("{work:.0}"));
    assert_eq!(full[2], 443_358_904_320.0);
    assert_eq!(longest[2], 7_908_876_288.0);
}
