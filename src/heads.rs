//! The five GPT-2 model classes of the tutorial's chapter 4, each a small head on one
//! [`Gpt2Model`], following transformers' `modeling_gpt2.py`:
//!
//! | class                           | head                                | output                       |
//! |---------------------------------|-------------------------------------|------------------------------|
//! | `GPT2Model`                     | none                                | hidden states `(B, T, C)`    |
//! | `GPT2LMHeadModel`               | `lm_head`, tied to `wte`            | logits `(B, T, V)`           |
//! | `GPT2ForSequenceClassification` | `score` (no bias)                   | logits `(B, num_labels)`     |
//! | `GPT2ForTokenClassification`    | `dropout` + `classifier`            | logits `(B, T, num_labels)`  |
//! | `GPT2ForQuestionAnswering`      | `qa_outputs` (2 outputs)            | start and end logits `(B, T)`|
//!
//! A checkpoint saved from one class loads into any other: the transformer is shared, and a head
//! the checkpoint lacks is freshly initialised, as `from_pretrained` does and reports
//! ("Some weights of GPT2ForSequenceClassification were not initialized ...: ['score.weight']").
//! [`with_head`] does that here, with the crate's seeded N(0, 0.02), so a run is reproducible.

use std::collections::BTreeSet;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dropout::Dropout;
use crate::loss::{lm_loss, sequence_classification_loss, token_classification_loss};
use crate::weights::{is_head_key, normal_tensor};
use crate::{Error, Gpt2Config, Gpt2LmHeadModel, Gpt2Model, Result, Weights};

mod classes;

pub use classes::{head_parameter_shapes, LoadReport, ModelClass, NewWeight, HEAD_SEED};

/// `weights` completed for `class`: a head the checkpoint has is kept (its shape checked), a head
/// it lacks is initialised as transformers' `_init_weights` does for `nn.Linear` - weight from
/// N(0, `initializer_range`), bias 0 - from a ChaCha generator seeded with `seed`.
pub fn with_head(
    weights: &Weights,
    cfg: &Gpt2Config,
    class: ModelClass,
    seed: u64,
) -> Result<(Weights, LoadReport)> {
    let shapes = head_parameter_shapes(cfg, class)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = weights.clone();
    let mut report = LoadReport::default();
    for (name, shape) in &shapes {
        match weights.get(name) {
            Some(t) if t.dims() == shape.as_slice() => {}
            Some(t) => {
                return Err(Error::WeightMismatch(format!(
                    "{name} has shape {:?} in the checkpoint but {} needs {shape:?}: the head was trained for another number of labels; pass that num_labels, or drop the head from the checkpoint to start a new one",
                    t.dims(),
                    class.class_name()
                )))
            }
            // ANCHOR: with_head
            None => {
                let t = if name.ends_with(".bias") {
                    Tensor::zeros(shape.as_slice(), DType::F32, weights.device())?
                } else {
                    normal_tensor(&mut rng, shape, cfg.initializer_range, weights.device())?
                };
                out.insert(name.clone(), t.to_dtype(weights.dtype())?);
                report.new_weights.push(name.clone());
            }
            // ANCHOR_END: with_head
        }
    }
    let own: BTreeSet<&String> = shapes.iter().map(|(n, _)| n).collect();
    report.unused_weights = weights
        .names()
        .into_iter()
        .filter(|n| is_head_key(n) && !own.contains(n))
        .collect();
    report.new_weights.sort();
    Ok((out, report))
}

/// `GPT2ForSequenceClassification.from_pretrained(checkpoint, num_labels=N)`, for training: the
/// checkpoint's `score` if it has one (one of ours, or one transformers saved), else a new one
/// drawn with `seed` and reported; the config gets `num_labels` and the class name, and keeps
/// the checkpoint's `pad_token_id` (none in OpenAI's GPT-2: set it before batching).
pub fn for_sequence_classification(
    weights: &Weights,
    cfg: &Gpt2Config,
    num_labels: usize,
    seed: u64,
) -> Result<(Weights, Gpt2Config, LoadReport)> {
    let class = ModelClass::SequenceClassification(num_labels);
    let (weights, report) = with_head(weights, cfg, class, seed)?;
    let mut cfg = cfg.clone();
    cfg.num_labels = Some(num_labels);
    cfg.architectures = Some(vec![class.class_name().to_string()]);
    Ok((weights, cfg, report))
}

/// An `nn.Linear` head layer read from `vb`. A missing tensor is an error here rather than a
/// silent fresh variable (what a `VarMap` would otherwise create, from an unseeded generator).
fn head_linear(
    vb: &VarBuilder,
    name: &str,
    n_in: usize,
    n_out: usize,
    bias: bool,
) -> Result<Linear> {
    let vb = vb.pp(name);
    let parts: &[&str] = if bias {
        &["weight", "bias"]
    } else {
        &["weight"]
    };
    for part in parts {
        if !vb.contains_tensor(part) {
            return Err(Error::WeightMismatch(format!(
                "{name}.{part} is missing: build heads with `heads::with_head` (or `from_weights`), which loads the checkpoint's head or initialises a new one"
            )));
        }
    }
    let weight = vb.get((n_out, n_in), "weight")?; // (out, in), like nn.Linear
    let bias = if bias {
        Some(vb.get(n_out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}

/// Logits and the loss computed from them.
#[derive(Debug, Clone)]
pub struct WithLoss {
    /// The head's outputs, as its `forward` returns them.
    pub logits: Tensor,
    /// The mean loss over what the labels mark, a scalar tensor: what training differentiates.
    pub loss: Tensor,
}

impl Gpt2LmHeadModel {
    /// `model(input_ids, labels=labels)`: the logits `(B, T, V)` and the shifted LM loss. Labels
    /// are `(B, T)` i64, usually the input ids themselves, with -100 where nothing is to be
    /// learned; the shift happens inside, as in transformers.
    pub fn forward_with_labels(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
    ) -> Result<WithLoss> {
        // ANCHOR: lm_with_labels
        let logits = self.forward(input_ids, attention_mask, None)?; // (B, T, V)
        let loss = lm_loss(&logits, labels)?;
        // ANCHOR_END: lm_with_labels
        Ok(WithLoss { logits, loss })
    }
}

/// The position `GPT2ForSequenceClassification` reads each row's logits from. With a pad token
/// it is the rightmost token that is not padding (transformers 5 takes
/// `argmax(arange(T) * (input_ids != pad))`, so a row of nothing but padding gives 0); this
/// handles right and left padding, and, when pad = eos, it skips a sequence's own trailing eos
/// too. Without a pad token it is the last position, which only makes sense for one sequence.
pub fn last_non_pad_positions(input_ids: &Tensor, pad_token_id: Option<u32>) -> Result<Vec<usize>> {
    let (b, t) = input_ids.dims2()?;
    if t == 0 {
        return Err(Error::EmptyPrompt);
    }
    // ANCHOR: pooling
    let Some(pad) = pad_token_id else {
        return if b == 1 {
            Ok(vec![t - 1])
        } else {
            Err(Error::NoPadToken { batch: b })
        };
    };
    let rows = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|row| row.iter().rposition(|&id| id != pad).unwrap_or(0))
        .collect())
    // ANCHOR_END: pooling
}

/// `GPT2ForSequenceClassification`: a score for each label at every position, of which the
/// last real token's row is kept - in a causal model only that token has read the whole text.
#[derive(Debug, Clone)]
pub struct Gpt2ForSequenceClassification {
    /// The GPT-2 underneath, whose hidden states the head scores.
    pub transformer: Gpt2Model,
    score: Linear, // C → num_labels, no bias
    pad_token_id: Option<u32>,
    load_report: LoadReport, // which head weights `from_weights` initialised
}

impl Gpt2ForSequenceClassification {
    /// Reads the transformer and the `score` head from `vb`, which must hold the head (see
    /// [`with_head`]); for inference [`from_weights`](Self::from_weights) does both.
    pub fn load(
        vb: VarBuilder,
        cfg: &Gpt2Config,
        num_labels: usize,
        dropout: &Dropout,
    ) -> Result<Self> {
        if num_labels == 0 {
            return Err(Error::NoLabels);
        }
        Ok(Self {
            transformer: Gpt2Model::load(vb.clone(), cfg, dropout)?,
            score: head_linear(&vb, "score", cfg.n_embd, num_labels, false)?,
            pad_token_id: cfg.pad_token_id,
            load_report: LoadReport::default(),
        })
    }

    // ANCHOR: sequence_classification
    /// Pooled logits `(B, num_labels)`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.transformer.forward(input_ids, attention_mask, None)?; // (B, T, C)
        let logits = self.score.forward(&hidden)?; // (B, T, N)
        let (b, t, n) = logits.dims3()?;
        let last = last_non_pad_positions(input_ids, self.pad_token_id)?;
        let rows: Vec<u32> = last
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * t + p) as u32)
            .collect();
        let rows = Tensor::new(rows.as_slice(), logits.device())?; // (B)
        Ok(logits.reshape((b * t, n))?.index_select(&rows, 0)?) // (B, N)
    }
    // ANCHOR_END: sequence_classification
}

impl Gpt2ForSequenceClassification {
    /// The token padding is made of (the tutorial sets it to eos before batching).
    pub fn set_pad_token_id(&mut self, pad_token_id: Option<u32>) {
        self.pad_token_id = pad_token_id;
    }

    /// Dropout on (training) or off (inference), as PyTorch's `train()` / `eval()`.
    pub fn set_training(&mut self, training: bool) {
        self.transformer.set_training(training);
    }
}

/// `GPT2ForTokenClassification`: a label for every token (named entities, parts of speech).
#[derive(Debug, Clone)]
pub struct Gpt2ForTokenClassification {
    /// The GPT-2 underneath, whose hidden states the head labels.
    pub transformer: Gpt2Model,
    dropout: Dropout,
    classifier: Linear,      // C → num_labels, with bias
    load_report: LoadReport, // which head weights `from_weights` initialised
}

impl Gpt2ForTokenClassification {
    /// Reads the transformer and the `classifier` head from `vb`, which must hold the head (see
    /// [`with_head`]); for inference [`from_weights`](Self::from_weights) does both.
    pub fn load(
        vb: VarBuilder,
        cfg: &Gpt2Config,
        num_labels: usize,
        dropout: &Dropout,
    ) -> Result<Self> {
        if num_labels == 0 {
            return Err(Error::NoLabels);
        }
        Ok(Self {
            transformer: Gpt2Model::load(vb.clone(), cfg, dropout)?,
            dropout: dropout.with_p(cfg.token_classifier_dropout()),
            classifier: head_linear(&vb, "classifier", cfg.n_embd, num_labels, true)?,
            load_report: LoadReport::default(),
        })
    }

    // ANCHOR: token_classification
    /// Logits `(B, T, num_labels)`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let hidden = self.transformer.forward(input_ids, attention_mask, None)?; // (B, T, C)
        let hidden = self.dropout.forward(&hidden)?;
        Ok(self.classifier.forward(&hidden)?) // (B, T, N)
    }
    // ANCHOR_END: token_classification
}

impl Gpt2ForTokenClassification {
    /// Dropout on (training) or off (inference), the head's own included.
    pub fn set_training(&mut self, training: bool) {
        self.transformer.set_training(training);
        self.dropout.set_training(training);
    }
}

// Every class's `from_weights` is here, one return shape for all: the model, with the
// classifiers' load report kept inside.
impl Gpt2LmHeadModel {
    /// Builds the model for inference (dropout off) from loaded or initialised weights. Like
    /// every class's `from_weights` it returns the model alone; unlike the classifier heads it
    /// has no load report, since its head is `wte` and nothing can be newly initialised.
    pub fn from_weights(weights: &Weights, cfg: &Gpt2Config) -> Result<Self> {
        Self::load(weights.var_builder(), cfg, &Dropout::seeded(0))
    }
}

impl Gpt2Model {
    /// Builds the base model for inference (dropout off) from loaded or initialised weights.
    /// Like every class's `from_weights` it returns the model alone; it adds no head, so it has
    /// no load report.
    pub fn from_weights(weights: &Weights, cfg: &Gpt2Config) -> Result<Self> {
        Self::load(weights.var_builder(), cfg, &Dropout::seeded(0))
    }
}

/// `from_weights` and `forward_with_labels` for a classifier class: the first built like every
/// class (see [`Gpt2Head::from_weights`]), the second scoring its logits with `$loss`.
macro_rules! classifier_methods {
    ($class:ident, $variant:ident, $loss:ident, $labels:literal) => {
        impl $class {
            /// Builds the class for inference from a checkpoint, with `num_labels` classes (see
            /// [`Gpt2Head::from_weights`]); [`load_report`](Self::load_report) says which head
            /// weights were new.
            pub fn from_weights(
                weights: &Weights,
                cfg: &Gpt2Config,
                num_labels: usize,
            ) -> Result<Self> {
                let class = ModelClass::$variant(num_labels);
                let (weights, report) = with_head(weights, cfg, class, HEAD_SEED)?;
                let mut model =
                    Self::load(weights.var_builder(), cfg, num_labels, &Dropout::seeded(0))?;
                model.load_report = report;
                Ok(model)
            }

            /// What [`from_weights`](Self::from_weights) found: the head weights it initialised
            /// because the checkpoint lacked them (to be trained before the outputs mean
            /// anything), and other classes' head weights it ignored. Empty when built with
            /// `load`, whose weights already hold the head.
            pub fn load_report(&self) -> &LoadReport {
                &self.load_report
            }

            #[doc = concat!("Logits and the cross-entropy against ", $labels, ".")]
            pub fn forward_with_labels(
                &self,
                input_ids: &Tensor,
                attention_mask: Option<&Tensor>,
                labels: &Tensor,
            ) -> Result<WithLoss> {
                let logits = self.forward(input_ids, attention_mask)?;
                let loss = $loss(&logits, labels)?;
                Ok(WithLoss { logits, loss })
            }
        }
    };
}

classifier_methods!(
    Gpt2ForSequenceClassification,
    SequenceClassification,
    sequence_classification_loss,
    "one class per sequence, `labels` `(B)`"
);
classifier_methods!(
    Gpt2ForTokenClassification,
    TokenClassification,
    token_classification_loss,
    "one label per token, `labels` `(B, T)`, -100 ignored"
);

/// `GPT2ForQuestionAnswering`: two scores per token, how likely the answer span starts there
/// and how likely it ends there (extractive QA, as on SQuAD).
#[derive(Debug, Clone)]
pub struct Gpt2ForQuestionAnswering {
    /// The GPT-2 underneath, whose hidden states the head scores.
    pub transformer: Gpt2Model,
    qa_outputs: Linear,      // C → 2
    load_report: LoadReport, // which head weights `from_weights` initialised
}

/// The answer-span scores of every token.
#[derive(Debug, Clone)]
pub struct SpanLogits {
    /// How likely the answer starts at each token, `(B, T)`.
    pub start_logits: Tensor,
    /// How likely the answer ends at each token, `(B, T)`.
    pub end_logits: Tensor,
}

impl Gpt2ForQuestionAnswering {
    /// Reads the transformer and the `qa_outputs` head from `vb`, which must hold the head (see
    /// [`with_head`]); for inference [`from_weights`](Self::from_weights) does both.
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Self> {
        Ok(Self {
            transformer: Gpt2Model::load(vb.clone(), cfg, dropout)?,
            qa_outputs: head_linear(&vb, "qa_outputs", cfg.n_embd, 2, true)?,
            load_report: LoadReport::default(),
        })
    }

    // ANCHOR: question_answering
    /// The start and end scores of every token.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<SpanLogits> {
        let hidden = self.transformer.forward(input_ids, attention_mask, None)?; // (B, T, C)
        let logits = self.qa_outputs.forward(&hidden)?; // (B, T, 2)
        Ok(SpanLogits {
            start_logits: logits.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?, // (B, T)
            end_logits: logits.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?,   // (B, T)
        })
    }
    // ANCHOR_END: question_answering
}

impl Gpt2ForQuestionAnswering {
    /// Builds the class for inference from a checkpoint (see [`Gpt2Head::from_weights`]);
    /// [`load_report`](Self::load_report) says which head weights were new.
    pub fn from_weights(weights: &Weights, cfg: &Gpt2Config) -> Result<Self> {
        let class = ModelClass::QuestionAnswering;
        let (weights, report) = with_head(weights, cfg, class, HEAD_SEED)?;
        let mut model = Self::load(weights.var_builder(), cfg, &Dropout::seeded(0))?;
        model.load_report = report;
        Ok(model)
    }

    /// What [`from_weights`](Self::from_weights) found: the head weights it initialised because
    /// the checkpoint lacked them, and other classes' head weights it ignored. Empty when built
    /// with `load`, whose weights already hold the head.
    pub fn load_report(&self) -> &LoadReport {
        &self.load_report
    }

    /// Dropout on (training) or off (inference), as PyTorch's `train()` / `eval()`.
    pub fn set_training(&mut self, training: bool) {
        self.transformer.set_training(training);
    }
}

/// Any of the five classes, chosen at run time (what transformers' `AutoModelFor...` picks).
#[derive(Debug, Clone)]
pub enum Gpt2Head {
    /// `GPT2Model`.
    Base(Gpt2Model),
    /// `GPT2LMHeadModel`.
    LmHead(Gpt2LmHeadModel),
    /// `GPT2ForSequenceClassification`.
    SequenceClassification(Gpt2ForSequenceClassification),
    /// `GPT2ForTokenClassification`.
    TokenClassification(Gpt2ForTokenClassification),
    /// `GPT2ForQuestionAnswering`.
    QuestionAnswering(Gpt2ForQuestionAnswering),
}

impl Gpt2Head {
    /// Builds `class` from `vb`, which must already hold its head (see [`with_head`]). For
    /// training, `vb` comes from `Weights::to_varmap`.
    pub fn load(
        vb: VarBuilder,
        cfg: &Gpt2Config,
        class: ModelClass,
        dropout: &Dropout,
    ) -> Result<Self> {
        Ok(match class {
            ModelClass::Base => Self::Base(Gpt2Model::load(vb, cfg, dropout)?),
            ModelClass::LmHead => Self::LmHead(Gpt2LmHeadModel::load(vb, cfg, dropout)?),
            ModelClass::SequenceClassification(n) => Self::SequenceClassification(
                Gpt2ForSequenceClassification::load(vb, cfg, n, dropout)?,
            ),
            ModelClass::TokenClassification(n) => {
                Self::TokenClassification(Gpt2ForTokenClassification::load(vb, cfg, n, dropout)?)
            }
            ModelClass::QuestionAnswering => {
                Self::QuestionAnswering(Gpt2ForQuestionAnswering::load(vb, cfg, dropout)?)
            }
        })
    }

    /// `GPT2For....from_pretrained(checkpoint)` for inference: the checkpoint's head if it has
    /// one, else a new one drawn with [`HEAD_SEED`]; [`load_report`](Self::load_report) says
    /// which it was. Every class's `from_weights` returns the model alone, the report kept inside.
    pub fn from_weights(weights: &Weights, cfg: &Gpt2Config, class: ModelClass) -> Result<Self> {
        let (weights, report) = with_head(weights, cfg, class, HEAD_SEED)?;
        let mut model = Self::load(weights.var_builder(), cfg, class, &Dropout::seeded(0))?;
        match &mut model {
            Self::SequenceClassification(m) => m.load_report = report,
            Self::TokenClassification(m) => m.load_report = report,
            Self::QuestionAnswering(m) => m.load_report = report,
            // They add no parameters, so nothing is ever new; see `load_report`.
            Self::Base(_) | Self::LmHead(_) => {}
        }
        Ok(model)
    }

    /// The classifier heads' [`LoadReport`]: which head weights `from_weights` initialised.
    /// The base model and the LM head add no parameters (the LM head is `wte` itself), so for
    /// them it is always empty - other classes' head weights in the checkpoint included, which
    /// they ignore unreported.
    pub fn load_report(&self) -> &LoadReport {
        static NOTHING_NEW: LoadReport = LoadReport {
            new_weights: Vec::new(),
            unused_weights: Vec::new(),
        };
        match self {
            Self::SequenceClassification(m) => m.load_report(),
            Self::TokenClassification(m) => m.load_report(),
            Self::QuestionAnswering(m) => m.load_report(),
            Self::Base(_) | Self::LmHead(_) => &NOTHING_NEW,
        }
    }

    /// Which class this is, with its number of labels.
    pub fn class(&self) -> ModelClass {
        match self {
            Self::Base(_) => ModelClass::Base,
            Self::LmHead(_) => ModelClass::LmHead,
            Self::SequenceClassification(m) => {
                ModelClass::SequenceClassification(m.score.weight().dims()[0])
            }
            Self::TokenClassification(m) => {
                ModelClass::TokenClassification(m.classifier.weight().dims()[0])
            }
            Self::QuestionAnswering(_) => ModelClass::QuestionAnswering,
        }
    }

    /// The outputs, named as the fields of transformers' output classes.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Vec<(&'static str, Tensor)>> {
        Ok(match self {
            Self::Base(m) => vec![(
                "last_hidden_state",
                m.forward(input_ids, attention_mask, None)?,
            )],
            Self::LmHead(m) => vec![("logits", m.forward(input_ids, attention_mask, None)?)],
            Self::SequenceClassification(m) => {
                vec![("logits", m.forward(input_ids, attention_mask)?)]
            }
            Self::TokenClassification(m) => vec![("logits", m.forward(input_ids, attention_mask)?)],
            Self::QuestionAnswering(m) => {
                let span = m.forward(input_ids, attention_mask)?;
                vec![
                    ("start_logits", span.start_logits),
                    ("end_logits", span.end_logits),
                ]
            }
        })
    }

    /// Dropout on (training) or off (inference), in the transformer and the head alike.
    pub fn set_training(&mut self, training: bool) {
        match self {
            Self::Base(m) => m.set_training(training),
            Self::LmHead(m) => m.transformer.set_training(training),
            Self::SequenceClassification(m) => m.set_training(training),
            Self::TokenClassification(m) => m.set_training(training),
            Self::QuestionAnswering(m) => m.set_training(training),
        }
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        match self {
            Self::Base(m) => m.device(),
            Self::LmHead(m) => m.transformer.device(),
            Self::SequenceClassification(m) => m.transformer.device(),
            Self::TokenClassification(m) => m.transformer.device(),
            Self::QuestionAnswering(m) => m.transformer.device(),
        }
    }
}
