//! The five classes, their head parameters, and what loading one from a checkpoint reports.

use candle_core::DType;
use serde::Serialize;

use crate::{Error, Gpt2Config, Result, Weights};

/// The model classes transformers builds on GPT-2, one per head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelClass {
    /// `GPT2Model`: hidden states only.
    Base,
    /// `GPT2LMHeadModel`: next-token logits.
    LmHead,
    /// `GPT2ForSequenceClassification` with this many labels.
    SequenceClassification(usize),
    /// `GPT2ForTokenClassification` with this many labels.
    TokenClassification(usize),
    /// `GPT2ForQuestionAnswering`.
    QuestionAnswering,
}

impl ModelClass {
    /// The transformers class name, as `print(model)` starts.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Base => "GPT2Model",
            Self::LmHead => "GPT2LMHeadModel",
            Self::SequenceClassification(_) => "GPT2ForSequenceClassification",
            Self::TokenClassification(_) => "GPT2ForTokenClassification",
            Self::QuestionAnswering => "GPT2ForQuestionAnswering",
        }
    }

    /// The five classes of the tutorial's chapter 4, the classifiers with `num_labels` classes.
    pub fn all(num_labels: usize) -> [Self; 5] {
        [
            Self::Base,
            Self::LmHead,
            Self::SequenceClassification(num_labels),
            Self::TokenClassification(num_labels),
            Self::QuestionAnswering,
        ]
    }
}

/// The seed new head weights are drawn with unless a caller picks another.
pub const HEAD_SEED: u64 = 42;

/// The parameters `class` adds on top of the transformer, in checkpoint naming. These are
/// `nn.Linear`s, so weights are `[out, in]` (unlike the transformer's `Conv1D`s).
pub fn head_parameter_shapes(
    cfg: &Gpt2Config,
    class: ModelClass,
) -> Result<Vec<(String, Vec<usize>)>> {
    let c = cfg.n_embd;
    let linear = |name: &str, out: usize, bias: bool| {
        let mut v = vec![(format!("{name}.weight"), vec![out, c])];
        if bias {
            v.push((format!("{name}.bias"), vec![out]));
        }
        v
    };
    Ok(match class {
        ModelClass::Base | ModelClass::LmHead => vec![],
        ModelClass::SequenceClassification(0) | ModelClass::TokenClassification(0) => {
            return Err(Error::NoLabels)
        }
        ModelClass::SequenceClassification(n) => linear("score", n, false),
        ModelClass::TokenClassification(n) => linear("classifier", n, true),
        ModelClass::QuestionAnswering => linear("qa_outputs", 2, true),
    })
}

/// What building a class from a checkpoint did, as transformers' load report says it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Head parameters the checkpoint lacked, now freshly initialised ("newly initialized").
    pub new_weights: Vec<String>,
    /// Head parameters of another class that the checkpoint has and this class ignores.
    pub unused_weights: Vec<String>,
}

/// A newly initialised weight, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct NewWeight {
    /// The parameter's checkpoint name, such as `score.weight`.
    pub name: String,
    /// Its shape, `[out, in]` for a weight.
    pub shape: Vec<usize>,
    /// The mean of its values: near 0 for a fresh N(0, 0.02) draw, exactly 0 for a bias.
    pub mean: f32,
    /// The standard deviation of its values: near `initializer_range` (0.02) for a weight.
    pub std: f32,
}

impl LoadReport {
    /// Name, shape, mean and standard deviation of each new weight in `weights` (the weights
    /// [`with_head`](super::with_head) returned): N(0, 0.02) draws for weights, zeros for biases.
    pub fn describe_new(&self, weights: &Weights) -> Result<Vec<NewWeight>> {
        self.new_weights
            .iter()
            .map(|name| {
                let t = weights.get(name).ok_or_else(|| {
                    Error::WeightMismatch(format!("{name} is not in these weights"))
                })?;
                let flat = t.to_dtype(DType::F32)?.flatten_all()?;
                let mean = flat.mean_all()?;
                let std = flat.broadcast_sub(&mean)?.sqr()?.mean_all()?.sqrt()?;
                Ok(NewWeight {
                    name: name.clone(),
                    shape: t.dims().to_vec(),
                    mean: mean.to_scalar()?,
                    std: std.to_scalar()?,
                })
            })
            .collect()
    }
}
