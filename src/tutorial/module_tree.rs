//! Printing a model the way PyTorch prints an `nn.Module`, and counting its parameters.
//!
//! The tutorial shows `print(model)` for GPT-2; [`module_tree`] writes the same tree from a
//! config, with transformers' class names, so the two can be read side by side.

use crate::heads::ModelClass;
use crate::Gpt2Config;

/// A float the way Python's `repr` writes it (what PyTorch's module reprs use): the shortest
/// digits that read back, always with a decimal point or an exponent, and scientific notation
/// with a two-digit exponent below 1e-4 (`1e-05`, `0.001`, `0.0`).
fn py_float(x: f64) -> String {
    let sci = format!("{x:e}"); // shortest round-trip digits, e.g. "1e-5", "2.5e-1"
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if x != 0.0 && !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let plain = format!("{x}");
    if plain.contains('.') {
        plain
    } else {
        format!("{plain}.0")
    }
}

fn layer_norm(c: usize, eps: f64) -> String {
    format!(
        "LayerNorm(({c},), eps={}, elementwise_affine=True, bias=True)",
        py_float(eps)
    )
}

fn dropout(p: f32) -> String {
    // The config holds a Python float; `p.to_string()` gives the f32's shortest digits, which
    // are the ones config.json was written with.
    let p: f64 = p.to_string().parse().expect("a float reads back");
    format!("Dropout(p={}, inplace=False)", py_float(p))
}

/// The module tree of the base model, indented by `pad`.
fn base_tree(cfg: &Gpt2Config, pad: &str) -> String {
    let (c, i, eps) = (cfg.n_embd, cfg.inner_dim(), cfg.layer_norm_epsilon);
    let act = match cfg.activation_function.as_str() {
        "gelu" => "GELUActivation()",
        "relu" => "ReLU()",
        "gelu_pytorch_tanh" => "GELUTanh()",
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
    let linear = |name: &str, out: usize, bias: bool| {
        let bias = if bias { "True" } else { "False" };
        format!("({name}): Linear(in_features={c}, out_features={out}, bias={bias})")
    };
    let head = match class {
        ModelClass::Base => return base_tree(cfg, ""),
        // Tied to wte: printed as a layer, but it adds no parameters.
        ModelClass::LmHead => vec![linear("lm_head", cfg.vocab_size, false)],
        ModelClass::SequenceClassification(n) => vec![linear("score", n, false)],
        ModelClass::TokenClassification(n) => vec![
            format!("(dropout): {}", dropout(cfg.token_classifier_dropout())),
            linear("classifier", n, true),
        ],
        ModelClass::QuestionAnswering => vec![linear("qa_outputs", 2, true)],
    };
    let mut out = format!(
        "{}(\n  (transformer): {}\n",
        class.class_name(),
        base_tree(cfg, "  ")
    );
    for line in head {
        out.push_str(&format!("  {line}\n"));
    }
    out.push(')');
    out
}
// ANCHOR_END: module_tree
