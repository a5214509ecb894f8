//! What a [`Trainer`](super::Trainer) reports, in transformers' shapes: `TrainOutput` from
//! `train()`, the metrics of `evaluate()`, `compute_metrics` (accuracy), `total_flos`, and the
//! tutorial's `get_sentiment`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Gpt2Config;
use crate::heads::{head_parameter_shapes, Gpt2ForSequenceClassification, ModelClass};
use crate::{Gpt2Tokenizer, Result};

/// transformers' `model.num_parameters(exclude_embeddings=True)` for
/// `GPT2ForSequenceClassification` with `num_labels` classes: every parameter except the
/// `nn.Embedding` weights `wte` and `wpe` - the `score` head counts. For gpt2 with 2 labels:
/// 124,439,808 + 1,536 - 38,597,376 - 786,432 = 85,057,536.
pub fn num_parameters_exclude_embeddings(cfg: &Gpt2Config, num_labels: usize) -> Result<usize> {
    let head: usize = head_parameter_shapes(cfg, ModelClass::SequenceClassification(num_labels))?
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    let embeddings = (cfg.vocab_size + cfg.n_positions) * cfg.n_embd;
    Ok(cfg.num_parameters() - embeddings + head)
}

/// `Trainer.floating_point_ops`: 6 × non-embedding parameters × the tokens of a batch - pads
/// included, since the model computes them too (2 multiply-adds per parameter and token
/// forward, 4 backward). An estimate: attention's own `T²` work is not counted.
pub fn floating_point_ops(non_embedding_parameters: usize, tokens: usize) -> f64 {
    6.0 * non_embedding_parameters as f64 * tokens as f64
}

/// transformers' `EvalPrediction`: every evaluated row's logits and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPrediction {
    /// One row of `num_labels` logits per evaluated row, in f32: `(N, num_labels)`.
    pub logits: Vec<Vec<f32>>,
    /// Each row's true class, aligned with `logits`.
    pub labels: Vec<i64>,
}

impl EvalPrediction {
    /// The predicted class of each row: the index of its largest logit.
    pub fn predictions(&self) -> Vec<usize> {
        self.logits.iter().map(|row| argmax(row)).collect()
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// A `compute_metrics` function: named numbers from the predictions (each reported with an
/// `eval_` prefix).
pub type ComputeMetrics = fn(&EvalPrediction) -> BTreeMap<String, f64>;

// ANCHOR: accuracy
/// The tutorial's `compute_metrics`: the share of rows whose largest logit is their label.
pub fn accuracy(p: &EvalPrediction) -> BTreeMap<String, f64> {
    let right = p
        .predictions()
        .iter()
        .zip(&p.labels)
        .filter(|(&pred, &label)| pred as i64 == label)
        .count();
    let accuracy = right as f64 / p.labels.len().max(1) as f64;
    BTreeMap::from([("accuracy".to_string(), accuracy)])
}
// ANCHOR_END: accuracy

/// A float as Python's `repr` writes it (`0.5`, `3.0`, `3.91945125888e+16`), so printed
/// outputs read like transformers'.
pub fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let sci = format!("{x:e}"); // shortest round-trip digits: "3.91945125888e16"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let plain = format!("{x}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// `round(x, digits)`, as transformers rounds its speed metrics.
pub(crate) fn round_to(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The metrics of `train()`, named as transformers names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMetrics {
    /// Wall-clock seconds of this `train()` call, rounded to 4 decimals.
    pub train_runtime: f64,
    /// Training rows per second, counted as transformers counts them: rows × epochs, or
    /// `max_steps` full batches when `max_steps` is set.
    pub train_samples_per_second: f64,
    /// The run's total optimizer steps per second of `train_runtime`.
    pub train_steps_per_second: f64,
    /// Floating-point operations of every training batch so far, estimated by
    /// [`floating_point_ops`] (transformers' `total_flos`).
    pub total_flos: f64,
    /// The mean of every optimizer step's loss, as [`TrainOutput::training_loss`].
    pub train_loss: f64,
    /// Epochs done, as a fraction: 3.0 after three full epochs.
    pub epoch: f64,
}

/// What `Trainer.train()` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutput {
    /// Optimizer steps taken over the whole run.
    pub global_step: usize,
    /// The mean of every optimizer step's loss.
    pub training_loss: f64,
    /// The run's speed, size and loss, as transformers names them.
    pub metrics: TrainMetrics,
}

impl std::fmt::Display for TrainOutput {
    /// As Python prints it: `TrainOutput(global_step=..., training_loss=..., metrics={...})`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.metrics;
        write!(
            f,
            "TrainOutput(global_step={}, training_loss={}, metrics={})",
            self.global_step,
            python_float(self.training_loss),
            python_dict(&[
                ("train_runtime", m.train_runtime),
                ("train_samples_per_second", m.train_samples_per_second),
                ("train_steps_per_second", m.train_steps_per_second),
                ("total_flos", m.total_flos),
                ("train_loss", m.train_loss),
                ("epoch", m.epoch),
            ])
        )
    }
}

/// `{'a': 1.0, 'b': 0.5}`.
pub fn python_dict(items: &[(&str, f64)]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|(k, v)| format!("'{k}': {}", python_float(*v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// What `Trainer.evaluate()` returns: the loss, `compute_metrics`' numbers with an `eval_`
/// prefix (`eval_accuracy`), the timing and the epoch reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOutput {
    /// The mean cross-entropy loss over the evaluated rows.
    pub eval_loss: f64,
    /// `compute_metrics`' numbers, each name prefixed with `eval_` (`eval_accuracy`); empty
    /// without `compute_metrics`.
    #[serde(flatten)]
    pub metrics: BTreeMap<String, f64>,
    /// Wall-clock seconds of the evaluation, rounded to 4 decimals.
    pub eval_runtime: f64,
    /// Evaluated rows per second.
    pub eval_samples_per_second: f64,
    /// Evaluation batches (of `per_device_eval_batch_size` rows) per second.
    pub eval_steps_per_second: f64,
    /// Epochs of training done when it ran, as a fraction.
    pub epoch: f64,
}

impl EvalOutput {
    /// `eval_accuracy`, when `compute_metrics` gave one.
    pub fn accuracy(&self) -> Option<f64> {
        self.metrics.get("eval_accuracy").copied()
    }
}

impl std::fmt::Display for EvalOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut items = vec![("eval_loss", self.eval_loss)];
        items.extend(self.metrics.iter().map(|(k, v)| (k.as_str(), *v)));
        items.extend([
            ("eval_runtime", self.eval_runtime),
            ("eval_samples_per_second", self.eval_samples_per_second),
            ("eval_steps_per_second", self.eval_steps_per_second),
            ("epoch", self.epoch),
        ]);
        f.write_str(&python_dict(&items))
    }
}

/// What the tutorial's `get_sentiment` computes for one sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sentiment {
    /// The sentence, as given.
    pub text: String,
    /// Its token ids, unpadded.
    pub ids: Vec<u32>,
    /// The classifier's `num_labels` logits for it, in f32.
    pub logits: Vec<f32>,
    /// The predicted class.
    pub label: usize,
    /// Its name (`positive`, `negative`).
    pub sentiment: String,
}

// ANCHOR: get_sentiment
/// The tutorial's `get_sentiment(sentence)`: tokenize the sentence alone (no padding), run the
/// classifier, and name the class with the largest logit.
pub fn get_sentiment(
    model: &Gpt2ForSequenceClassification,
    tokenizer: &Gpt2Tokenizer,
    text: &str,
    label_names: &[&str],
) -> Result<Sentiment> {
    let ids = tokenizer.encode(text)?;
    let input =
        candle_core::Tensor::new(ids.as_slice(), model.transformer.device())?.unsqueeze(0)?; // (1, T)
    let logits: Vec<f32> = model
        .forward(&input, None)? // (1, num_labels)
        .to_dtype(candle_core::DType::F32)?
        .squeeze(0)?
        .to_vec1()?;
    let label = argmax(&logits);
    let sentiment = label_names
        .get(label)
        .map_or_else(|| format!("class {label}"), |s| s.to_string());
    Ok(Sentiment {
        text: text.to_string(),
        ids,
        logits,
        label,
        sentiment,
    })
}
// ANCHOR_END: get_sentiment
