//! Chapter 1's figures: the four GPT-2 sizes, their module trees and exact parameter counts.

use serde::Serialize;

use super::module_tree::module_tree;
use crate::heads::ModelClass;
use crate::{Gpt2Config, LoadedModel};

/// One preset's row in the sizes table.
#[derive(Debug, Clone, Serialize)]
pub struct PresetSummary {
    pub name: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub parameters: usize,
}

/// The model actually loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub vocab_size: usize,
    pub n_positions: usize,
    /// Parameters in the loaded weights, the tied LM head counted once.
    pub parameters: usize,
}

/// What `01_architecture --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ArchitectureReport {
    pub presets: Vec<PresetSummary>,
    pub model: ModelSummary,
}

// ANCHOR: report
impl ArchitectureReport {
    pub fn new(model: &LoadedModel) -> Self {
        let presets = Gpt2Config::presets()
            .into_iter()
            .map(|(name, cfg)| PresetSummary {
                name: name.to_string(),
                n_layer: cfg.n_layer,
                n_head: cfg.n_head,
                n_embd: cfg.n_embd,
                parameters: cfg.num_parameters(),
            })
            .collect();
        let cfg = &model.config;
        Self {
            presets,
            model: ModelSummary {
                name: model.name.clone(),
                n_layer: cfg.n_layer,
                n_head: cfg.n_head,
                n_embd: cfg.n_embd,
                vocab_size: cfg.vocab_size,
                n_positions: cfg.n_positions,
                parameters: model.weights.num_parameters(),
            },
        }
    }
}
// ANCHOR_END: report

impl std::fmt::Display for ArchitectureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "GPT-2 sizes (tied LM head counted once):")?;
        writeln!(
            f,
            "  {:<12} {:>7} {:>6} {:>6} {:>15}",
            "name", "layers", "heads", "width", "parameters"
        )?;
        for p in &self.presets {
            writeln!(
                f,
                "  {:<12} {:>7} {:>6} {:>6} {:>15}",
                p.name,
                p.n_layer,
                p.n_head,
                p.n_embd,
                group_digits(p.parameters)
            )?;
        }
        let m = &self.model;
        writeln!(f)?;
        writeln!(f, "Loaded model: {}", m.name)?;
        writeln!(
            f,
            "  {} layers, {} heads, width {}, vocabulary {}, context {}",
            m.n_layer, m.n_head, m.n_embd, m.vocab_size, m.n_positions
        )?;
        write!(f, "  parameters: {}", group_digits(m.parameters))
    }
}

/// `124439808` → `124,439,808`.
pub fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The module tree of the loaded model as `GPT2LMHeadModel`, like `print(model)`.
pub fn lm_tree(model: &LoadedModel) -> String {
    module_tree(&model.config, ModelClass::LmHead)
}
