//! Printing a model the way PyTorch prints an `nn.Module`, and counting its parameters.
//!
//! The tutorial shows `print(model)` for GPT-2; [`module_tree`] writes the same tree from a
//! config, with transformers' class names, so the two can be read side by side.

use crate::Gpt2Config;

/// Which model class to print.
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

fn layer_norm(c: usize, eps: f64) -> String {
    format!("LayerNorm(({c},), eps={eps:e}, elementwise_affine=True)").replace("e-5", "e-05")
}

fn dropout(p: f32) -> String {
    format!("Dropout(p={p}, inplace=False)")
}

/// The module tree of the base model, indented by `pad`.
fn base_tree(cfg: &Gpt2Config, pad: &str) -> String {
    let (c, i, eps) = (cfg.n_embd, cfg.inner_dim(), cfg.layer_norm_epsilon);
    let act = match cfg.activation_function.as_str() {
        "gelu" => "GELUActivation()",
        "relu" => "ReLU()",
        "gelu_pytorch_tanh" => "PytorchGELUTanh()",
        _ => "NewGELUActivation()",
    };
    let layers = if cfg.n_layer == 1 {
        "(0): GPT2Block(".to_string()
    } else {
        format!("(0-{}): {} x GPT2Block(", cfg.n_layer - 1, cfg.n_layer)
    };
    let lines = [
        "GPT2Model(".to_string(),
        format!("  (wte): Embedding({}, {c})", cfg.vocab_size),
        format!("  (wpe): Embedding({}, {c})", cfg.n_positions),
        format!("  (drop): {}", dropout(cfg.embd_pdrop)),
        "  (h): ModuleList(".to_string(),
        format!("    {layers}"),
        format!("      (ln_1): {}", layer_norm(c, eps)),
        "      (attn): GPT2Attention(".to_string(),
        format!("        (c_attn): Conv1D(nf={}, nx={c})", 3 * c),
        format!("        (c_proj): Conv1D(nf={c}, nx={c})"),
        format!("        (attn_dropout): {}", dropout(cfg.attn_pdrop)),
        format!("        (resid_dropout): {}", dropout(cfg.resid_pdrop)),
        "      )".to_string(),
        format!("      (ln_2): {}", layer_norm(c, eps)),
        "      (mlp): GPT2MLP(".to_string(),
        format!("        (c_fc): Conv1D(nf={i}, nx={c})"),
        format!("        (c_proj): Conv1D(nf={c}, nx={i})"),
        format!("        (act): {act}"),
        format!("        (dropout): {}", dropout(cfg.resid_pdrop)),
        "      )".to_string(),
        "    )".to_string(),
        "  )".to_string(),
        format!("  (ln_f): {}", layer_norm(c, eps)),
        ")".to_string(),
    ];
    lines
        .iter()
        .enumerate()
        .map(|(n, l)| {
            if n == 0 {
                l.clone()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ANCHOR: module_tree
/// The module tree PyTorch prints for `class` built from `cfg`.
pub fn module_tree(cfg: &Gpt2Config, class: ModelClass) -> String {
    let c = cfg.n_embd;
    let (name, head) = match class {
        ModelClass::Base => return base_tree(cfg, ""),
        ModelClass::LmHead => (
            "GPT2LMHeadModel",
            vec![format!(
                "(lm_head): Linear(in_features={c}, out_features={}, bias=False)",
                cfg.vocab_size
            )],
        ),
        ModelClass::SequenceClassification(n) => (
            "GPT2ForSequenceClassification",
            vec![format!(
                "(score): Linear(in_features={c}, out_features={n}, bias=False)"
            )],
        ),
        ModelClass::TokenClassification(n) => (
            "GPT2ForTokenClassification",
            vec![
                format!("(dropout): {}", dropout(0.1)),
                format!("(classifier): Linear(in_features={c}, out_features={n}, bias=True)"),
            ],
        ),
        ModelClass::QuestionAnswering => (
            "GPT2ForQuestionAnswering",
            vec![format!(
                "(qa_outputs): Linear(in_features={c}, out_features=2, bias=True)"
            )],
        ),
    };
    let mut out = format!("{name}(\n  (transformer): {}\n", base_tree(cfg, "  "));
    for line in head {
        out.push_str(&format!("  {line}\n"));
    }
    out.push(')');
    out
}
// ANCHOR_END: module_tree
