//! `Gpt2Config`: the hyper-parameters of a GPT-2, read from a Hugging Face `config.json`.
//!
//! Field names are the keys of `config.json` (`n_embd`, `n_layer`, ...), as in transformers'
//! `GPT2Config`, so a checkpoint's config deserialises as it is. The four presets are the sizes
//! OpenAI released: 124M, 355M, 774M and 1.5B parameters.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// GPT-2's vocabulary: 50,000 BPE merges + 256 byte tokens + `<|endoftext|>`.
pub const GPT2_VOCAB_SIZE: usize = 50257;
/// GPT-2's context length.
pub const GPT2_CONTEXT: usize = 1024;
/// `<|endoftext|>`: GPT-2's only special token, also used as BOS, EOS and (by convention) padding.
pub const EOS_TOKEN_ID: u32 = 50256;

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".to_string()
}
/// transformers' dropout for a token classifier when the config names none.
pub const DEFAULT_TOKEN_CLASSIFIER_DROPOUT: f32 = 0.1;

/// Writes an f32 as its shortest decimal (`0.1`, not the f64 `0.10000000149011612`), as
/// transformers writes `config.json`.
fn f32_as_written<S: serde::Serializer>(x: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(x.to_string().parse().unwrap_or(f64::from(*x)))
}

fn default_pdrop() -> f32 {
    0.1
}
fn default_init_range() -> f64 {
    0.02
}
fn default_true() -> bool {
    true
}

/// The hyper-parameters of a GPT-2 model, with the key names of Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Number of tokens in the vocabulary: the rows of the token embedding `wte`, and the
    /// width V of the logits `(B, T, V)`. 50257 for GPT-2.
    pub vocab_size: usize,
    /// The context length: the most positions a sequence can have, the rows of the position
    /// embedding `wpe` (`max_position_embeddings` in transformers). 1024 for GPT-2.
    pub n_positions: usize,
    /// The width of the residual stream, `hidden_size` in transformers: 768 for gpt2.
    pub n_embd: usize,
    /// Number of transformer blocks, `num_hidden_layers` in transformers: 12 for gpt2.
    pub n_layer: usize,
    /// Number of attention heads per block, `num_attention_heads` in transformers: 12 for
    /// gpt2. Must divide `n_embd`.
    pub n_head: usize,
    /// Width of the MLP's hidden layer; `None` means the usual 4 × `n_embd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
    /// The MLP's non-linearity: `gelu_new` (GPT-2's tanh approximation of GELU, the
    /// default) or `gelu_pytorch_tanh` (the same), `gelu` (the exact, erf one) or `relu`.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// The epsilon added to the variance in every LayerNorm: 1e-5.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Dropout probability on the output of each attention and MLP sub-layer, before it is
    /// added to the residual stream. 0.1; only active in training.
    #[serde(default = "default_pdrop", serialize_with = "f32_as_written")]
    pub resid_pdrop: f32,
    /// Dropout probability on the sum of token and position embeddings. 0.1.
    #[serde(default = "default_pdrop", serialize_with = "f32_as_written")]
    pub embd_pdrop: f32,
    /// Dropout probability on the attention weights, after the softmax. 0.1.
    #[serde(default = "default_pdrop", serialize_with = "f32_as_written")]
    pub attn_pdrop: f32,
    /// Standard deviation of the normal distribution new weights are drawn from: 0.02.
    /// Used here for a freshly initialised classification head.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Divide attention scores by sqrt(head size), as the paper does.
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// The beginning-of-sequence token: `<|endoftext|>` (50256) in GPT-2's configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// The end-of-sequence token generation stops at: `<|endoftext|>` (50256) in GPT-2's
    /// configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    /// The padding token. GPT-2 has none (`None`): set it (usually to 50256) to classify
    /// padded batches. Generation pads finished rows with it, else with `eos_token_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// Number of classes for the classification heads (transformers derives it from `id2label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// Dropout before a token classifier; GPT-2's own configs have none (see
    /// [`Gpt2Config::token_classifier_dropout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_dropout: Option<f32>,
    /// transformers' fallback for the token classifier's dropout when `classifier_dropout`
    /// is unset (see [`Gpt2Config::token_classifier_dropout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_dropout: Option<f32>,
    /// transformers' model family: `"gpt2"`. Kept so a written `config.json` loads there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// The transformers class the checkpoint was saved from, such as `["GPT2LMHeadModel"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
}

impl Gpt2Config {
    fn preset(n_embd: usize, n_layer: usize, n_head: usize) -> Self {
        Self {
            vocab_size: GPT2_VOCAB_SIZE,
            n_positions: GPT2_CONTEXT,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            activation_function: default_act(),
            layer_norm_epsilon: default_eps(),
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            initializer_range: default_init_range(),
            scale_attn_weights: true,
            bos_token_id: Some(EOS_TOKEN_ID),
            eos_token_id: Some(EOS_TOKEN_ID),
            pad_token_id: None,
            num_labels: None,
            classifier_dropout: None,
            hidden_dropout: None,
            model_type: Some("gpt2".to_string()),
            architectures: Some(vec!["GPT2LMHeadModel".to_string()]),
        }
    }

    /// The dropout of `GPT2ForTokenClassification`, chosen as transformers chooses it:
    /// `classifier_dropout` if the config has one, else `hidden_dropout`, else 0.1 (what
    /// OpenAI's GPT-2 configs, which have neither, get).
    pub fn token_classifier_dropout(&self) -> f32 {
        self.classifier_dropout
            .or(self.hidden_dropout)
            .unwrap_or(DEFAULT_TOKEN_CLASSIFIER_DROPOUT)
    }

    // ANCHOR: presets
    /// `openai-community/gpt2`: 12 layers, 12 heads, width 768 (124M parameters).
    pub fn gpt2() -> Self {
        Self::preset(768, 12, 12)
    }
    /// `openai-community/gpt2-medium`: 24 layers, 16 heads, width 1024 (355M).
    pub fn gpt2_medium() -> Self {
        Self::preset(1024, 24, 16)
    }
    /// `openai-community/gpt2-large`: 36 layers, 20 heads, width 1280 (774M).
    pub fn gpt2_large() -> Self {
        Self::preset(1280, 36, 20)
    }
    /// `openai-community/gpt2-xl`: 48 layers, 25 heads, width 1600 (1.5B).
    pub fn gpt2_xl() -> Self {
        Self::preset(1600, 48, 25)
    }
    // ANCHOR_END: presets
    /// The bundled tiny model: GPT-2's real vocabulary and context, but 2 narrow layers.
    pub fn tiny() -> Self {
        Self::preset(64, 2, 4)
    }

    /// The four released sizes, by their Hub names.
    pub fn presets() -> Vec<(&'static str, Self)> {
        vec![
            ("gpt2", Self::gpt2()),
            ("gpt2-medium", Self::gpt2_medium()),
            ("gpt2-large", Self::gpt2_large()),
            ("gpt2-xl", Self::gpt2_xl()),
        ]
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        cfg.validate().map_err(|e| Error::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Writes the config as `config.json` would be written by transformers.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serialises")
    }

    /// Rejects configurations no GPT-2 can have.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.n_embd == 0 || self.n_layer == 0 || self.n_head == 0 {
            return bad("n_embd, n_layer and n_head must be positive".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size == 0 || self.n_positions == 0 {
            return bad("vocab_size and n_positions must be positive".into());
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu" | "relu"
        ) {
            return bad(format!(
                "activation_function {:?} is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu)",
                self.activation_function
            ));
        }
        Ok(())
    }

    /// Width of the MLP's hidden layer.
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    // ANCHOR: parameter_count
    /// Every parameter of the base model with its shape, in checkpoint order and naming
    /// (`wte.weight`, `h.0.attn.c_attn.weight`, ...). Conv1D weights are `[in, out]`.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (c, i) = (self.n_embd, self.inner_dim());
        let mut v = vec![
            ("wte.weight".to_string(), vec![self.vocab_size, c]),
            ("wpe.weight".to_string(), vec![self.n_positions, c]),
        ];
        for l in 0..self.n_layer {
            let p = |s: &str| format!("h.{l}.{s}");
            v.extend([
                (p("ln_1.weight"), vec![c]),
                (p("ln_1.bias"), vec![c]),
                (p("attn.c_attn.weight"), vec![c, 3 * c]),
                (p("attn.c_attn.bias"), vec![3 * c]),
                (p("attn.c_proj.weight"), vec![c, c]),
                (p("attn.c_proj.bias"), vec![c]),
                (p("ln_2.weight"), vec![c]),
                (p("ln_2.bias"), vec![c]),
                (p("mlp.c_fc.weight"), vec![c, i]),
                (p("mlp.c_fc.bias"), vec![i]),
                (p("mlp.c_proj.weight"), vec![i, c]),
                (p("mlp.c_proj.bias"), vec![c]),
            ]);
        }
        v.push(("ln_f.weight".to_string(), vec![c]));
        v.push(("ln_f.bias".to_string(), vec![c]));
        v
    }

    /// Exact number of parameters, the tied LM head counted once (as transformers'
    /// `num_parameters()` does).
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
    // ANCHOR_END: parameter_count
}
