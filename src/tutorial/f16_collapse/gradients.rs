//! The bundled model's real gradients in pure f16, summed over sequences as the tutorial sums
//! them, and one tutorial `AdamW` update from them.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use serde::Serialize;

use super::{values, CollapseSettings, PROBE_LRS};
use crate::data::{Jokes, JokesSource, Packer, PackingMode};
use crate::train::{named_vars, AdamW, AdamWConfig, TrainPrecision, TrainSettings, TrainStep};
use crate::{Gpt2Config, Gpt2Tokenizer, Result, Weights};

/// One group of parameters (a kind of tensor, all layers together).
#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub name: String,
    pub params: usize,
    /// Fractions of the summed f16 gradient: exactly 0; in `(0, v_underflow]` (AdamW's `v`
    /// rounds to 0, its denominator is `eps`); above.
    pub grad_zero: f64,
    pub grad_v_underflows: f64,
    pub grad_above: f64,
    /// The fraction exactly 0 in the same gradient computed in f32.
    pub grad_zero_f32: f64,
    /// Fraction of the weights one tutorial `AdamW` step changed, per [`PROBE_LRS`].
    pub changed: Vec<f64>,
}

impl GroupRow {
    /// A row with nothing counted yet.
    pub(super) fn empty(name: String) -> Self {
        Self {
            name,
            params: 0,
            grad_zero: 0.0,
            grad_v_underflows: 0.0,
            grad_above: 0.0,
            grad_zero_f32: 0.0,
            changed: vec![0.0; PROBE_LRS.len()],
        }
    }

    /// Adds `other`'s fractions back as counts, weighted by its parameters.
    pub(super) fn add_counts(&mut self, other: &GroupRow) {
        let w = other.params as f64;
        self.params += other.params;
        self.grad_zero += other.grad_zero * w;
        self.grad_v_underflows += other.grad_v_underflows * w;
        self.grad_above += other.grad_above * w;
        self.grad_zero_f32 += other.grad_zero_f32 * w;
        for (t, c) in self.changed.iter_mut().zip(&other.changed) {
            *t += c * w;
        }
    }

    /// Turns the counts into fractions of the row's parameters.
    pub(super) fn counts_to_fractions(&mut self) {
        let n = self.params as f64;
        for x in [
            &mut self.grad_zero,
            &mut self.grad_v_underflows,
            &mut self.grad_above,
            &mut self.grad_zero_f32,
        ] {
            *x /= n;
        }
        self.changed.iter_mut().for_each(|c| *c /= n);
    }
}

/// `wte` rows of tokens that the sequences never contain: they get a gradient only through
/// the tied head (their logits), a small one.
#[derive(Debug, Clone, Serialize)]
pub struct UnseenRows {
    pub vocab: usize,
    pub seen_tokens: usize,
    pub unseen_zero_f16: f64,
    pub unseen_v_underflows_f16: f64,
    pub unseen_max_f16: f64,
    pub unseen_zero_f32: f64,
    pub unseen_max_f32: f64,
    pub seen_max_f16: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RealStep {
    pub sequences: usize,
    pub tokens: usize,
    pub losses_f16: Vec<f32>,
    pub groups: Vec<GroupRow>,
    pub unseen: UnseenRows,
}

/// `h.3.attn.c_attn.weight` → `attn.c_attn.weight`: a tensor's kind, across layers.
fn group_of(name: &str) -> String {
    match name.strip_prefix("h.").and_then(|r| r.split_once('.')) {
        Some((_, rest)) => rest.to_string(),
        None => name.to_string(),
    }
}

/// The summed gradients of `precision`'s loss over `sequences` (dropout on, as in training).
fn summed_gradients(
    weights: &Weights,
    cfg: &Gpt2Config,
    precision: TrainPrecision,
    sequences: &[Vec<u32>],
    seed: u64,
) -> Result<(TrainStep, GradStore, Vec<f32>)> {
    let train = TrainStep::new(
        weights,
        cfg,
        TrainSettings::new(precision, AdamWConfig::tutorial(0.0)).seed(seed),
    )?;
    let mut sum = GradStore::default();
    let mut losses = Vec::new();
    for seq in sequences {
        let ids = Tensor::new(seq.as_slice(), weights.device())?.unsqueeze(0)?; // (1, T)
        let loss = train.forward(&ids)?;
        losses.push(loss.to_scalar::<f32>()?);
        let grads = loss.backward()?; // the tutorial's loss.backward(), summed over sequences
        for (_, var) in named_vars(train.varmap())? {
            if let Some(g) = grads.get(var.as_tensor()) {
                let total = match sum.remove(var.as_tensor()) {
                    Some(acc) => (acc + g)?,
                    None => g.clone(),
                };
                sum.insert(var.as_tensor(), total);
            }
        }
    }
    Ok((train, sum, losses))
}

/// The first `n` sequences of the bundled jokes, packed the tutorial's way in file order.
fn tutorial_sequences(
    tokenizer: &Gpt2Tokenizer,
    n: usize,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let tokenized = Jokes::load(&JokesSource::Bundled)?.tokenize(tokenizer)?;
    let mut packer = Packer::new(PackingMode::Tutorial, max_len)?;
    Ok(tokenized
        .iter()
        .filter_map(|j| packer.push(j))
        .take(n)
        .collect())
}

pub fn real_step(
    weights: &Weights,
    cfg: &Gpt2Config,
    tokenizer: &Gpt2Tokenizer,
    settings: &CollapseSettings,
    v_underflow: f64,
) -> Result<RealStep> {
    let sequences = tutorial_sequences(tokenizer, settings.sequences, settings.max_seq_len)?;
    let half = TrainPrecision::Pure(DType::F16);
    let (train, grads, losses_f16) =
        summed_gradients(weights, cfg, half, &sequences, settings.seed)?;
    let (train32, grads32, _) =
        summed_gradients(weights, cfg, TrainPrecision::F32, &sequences, settings.seed)?;
    let named = named_vars(train.varmap())?;
    let named32 = named_vars(train32.varmap())?;

    // One update at each probe lr, from the same weights: which weights did it change?
    let originals: Vec<Tensor> = named
        .iter()
        .map(|(_, v)| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let mut changed: Vec<Vec<usize>> = vec![vec![]; named.len()];
    for &lr in &PROBE_LRS {
        let mut adamw = AdamW::new(named.clone(), AdamWConfig::tutorial(lr))?;
        adamw.step(&grads)?;
        for (i, ((_, var), orig)) in named.iter().zip(&originals).enumerate() {
            let ne = var.as_tensor().ne(orig)?.to_dtype(DType::F32)?.sum_all()?;
            changed[i].push(ne.to_scalar::<f32>()? as usize);
            var.set(orig)?;
        }
    }

    let mut groups: Vec<GroupRow> = Vec::new();
    for (i, ((name, var), (_, var32))) in named.iter().zip(&named32).enumerate() {
        let n = var.elem_count();
        let g = grads
            .get(var.as_tensor())
            .map(values)
            .transpose()?
            .unwrap_or(vec![0.0; n]);
        let g32 = grads32
            .get(var32.as_tensor())
            .map(values)
            .transpose()?
            .unwrap_or(vec![0.0; n]);
        let zero = g.iter().filter(|x| **x == 0.0).count();
        let under = g
            .iter()
            .filter(|x| **x != 0.0 && x.abs() <= v_underflow)
            .count();
        let zero32 = g32.iter().filter(|x| **x == 0.0).count();
        let key = group_of(name);
        let row = match groups.iter_mut().find(|r| r.name == key) {
            Some(row) => row,
            None => {
                groups.push(GroupRow::empty(key));
                groups.last_mut().expect("just pushed")
            }
        };
        // Counts for now; fractions below.
        row.params += n;
        row.grad_zero += zero as f64;
        row.grad_v_underflows += under as f64;
        row.grad_above += (n - zero - under) as f64;
        row.grad_zero_f32 += zero32 as f64;
        for (c, k) in row.changed.iter_mut().zip(&changed[i]) {
            *c += *k as f64;
        }
    }
    groups.iter_mut().for_each(GroupRow::counts_to_fractions);
    groups.sort_by_key(|r| {
        (
            r.name.starts_with("ln_f"),
            !r.name.starts_with("w"),
            r.name.clone(),
        )
    });

    let unseen = unseen_rows(&train, &grads, &train32, &grads32, &sequences, v_underflow)?;
    Ok(RealStep {
        sequences: sequences.len(),
        tokens: sequences.iter().map(Vec::len).sum(),
        losses_f16,
        groups,
        unseen,
    })
}

fn wte_grad(train: &TrainStep, grads: &GradStore) -> Result<Vec<Vec<f32>>> {
    let (_, wte) = named_vars(train.varmap())?
        .into_iter()
        .find(|(n, _)| n == "wte.weight")
        .expect("GPT-2 has wte.weight");
    Ok(grads
        .get(wte.as_tensor())
        .expect("wte has a gradient")
        .to_dtype(DType::F32)?
        .to_vec2()?)
}

fn unseen_rows(
    train: &TrainStep,
    grads: &GradStore,
    train32: &TrainStep,
    grads32: &GradStore,
    sequences: &[Vec<u32>],
    v_underflow: f64,
) -> Result<UnseenRows> {
    let g16 = wte_grad(train, grads)?;
    let g32 = wte_grad(train32, grads32)?;
    let mut seen = vec![false; g16.len()];
    sequences
        .iter()
        .flatten()
        .for_each(|&t| seen[t as usize] = true);
    let (mut n, mut zero16, mut under16, mut zero32) = (0usize, 0usize, 0usize, 0usize);
    let (mut max16, mut max32, mut seen_max16) = (0f64, 0f64, 0f64);
    for (v, (r16, r32)) in g16.iter().zip(&g32).enumerate() {
        for (&a, &b) in r16.iter().zip(r32) {
            let (a, b) = (f64::from(a).abs(), f64::from(b).abs());
            if seen[v] {
                seen_max16 = seen_max16.max(a);
                continue;
            }
            n += 1;
            zero16 += usize::from(a == 0.0);
            under16 += usize::from(a != 0.0 && a <= v_underflow);
            zero32 += usize::from(b == 0.0);
            max16 = max16.max(a);
            max32 = max32.max(b);
        }
    }
    let n = n.max(1) as f64;
    Ok(UnseenRows {
        vocab: g16.len(),
        seen_tokens: seen.iter().filter(|s| **s).count(),
        unseen_zero_f16: zero16 as f64 / n,
        unseen_v_underflows_f16: under16 as f64 / n,
        unseen_max_f16: max16,
        unseen_zero_f32: zero32 as f64 / n,
        unseen_max_f32: max32,
        seen_max_f16: seen_max16,
    })
}
