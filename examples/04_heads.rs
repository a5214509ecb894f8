//! Chapter 4: one transformer, five heads.
//!
//! Builds `GPT2Model`, `GPT2LMHeadModel`, `GPT2ForSequenceClassification`,
//! `GPT2ForTokenClassification` and `GPT2ForQuestionAnswering` from the same checkpoint, prints
//! the base model's module tree as PyTorch would and then, for each head class, only the lines
//! its tree adds, the shapes it returns for the tutorial's prompt, and the head weights the
//! checkpoint did not have and that were newly initialised.
//!
//! ```text
//! cargo run --release --example 04_heads                          # openai-community/gpt2, or bundled offline
//! cargo run --release --example 04_heads -- --model bundled --json
//! ```

use std::collections::BTreeMap;

use candle_core::Tensor;
use clap::Parser;
use gpt2_tutorial::cli::PromptArgs;
use gpt2_tutorial::dropout::Dropout;
use gpt2_tutorial::heads::ModelClass;
use gpt2_tutorial::heads::{with_head, Gpt2Head, HEAD_SEED};
use gpt2_tutorial::tutorial::module_tree::module_tree;

/// Every GPT-2 head on one checkpoint: module trees, output shapes, new weights.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: PromptArgs,
    /// Number of classes of the two classification heads (the tutorial uses 5).
    #[arg(long, default_value_t = 5)]
    num_labels: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = args.common.model.load()?;
    let ids = model.tokenizer.encode(&args.common.prompt)?;
    let input_ids = Tensor::new(ids.as_slice(), model.weights.device())?.unsqueeze(0)?; // (1, T)
    let mut heads = serde_json::Map::new();
    for class in ModelClass::all(args.num_labels) {
        // ANCHOR: build
        // The checkpoint's head if it has one; otherwise a new one, N(0, 0.02) from a fixed seed.
        let (weights, report) = with_head(&model.weights, &model.config, class, HEAD_SEED)?;
        let head = Gpt2Head::load(
            weights.var_builder(),
            &model.config,
            class,
            &Dropout::seeded(0),
        )?;
        let outputs = head.forward(&input_ids, None)?;
        // ANCHOR_END: build
        let shapes: BTreeMap<&str, Vec<usize>> = outputs
            .iter()
            .map(|(name, t)| (*name, t.dims().to_vec()))
            .collect();
        if args.common.json {
            let entry =
                serde_json::json!({"output_shapes": shapes, "new_weights": report.new_weights});
            heads.insert(class.class_name().to_string(), entry);
            continue;
        }
        // The base model's tree in full; each head class then only with the lines it adds.
        let tree = module_tree(&model.config, class);
        println!("{}\n", without_the_base_tree(&tree));
        println!("  input_ids: {:?}", input_ids.dims());
        for (name, t) in &outputs {
            println!("  {name}: {:?}", t.dims());
        }
        if report.new_weights.is_empty() {
            println!("  every weight came from the checkpoint");
        }
        for w in report.describe_new(&weights)? {
            println!(
                "  newly initialised: {} {:?} (mean {:.4}, std {:.4})",
                w.name, w.shape, w.mean, w.std
            );
        }
        println!();
    }
    if args.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "heads": heads }))?
        );
    }
    Ok(())
}

/// A head class's module tree with its `(transformer): GPT2Model(...)` part, which is the base
/// model's tree printed first, folded into one line; the base model's tree is returned whole.
fn without_the_base_tree(tree: &str) -> String {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in tree.lines() {
        match line {
            "  (transformer): GPT2Model(" => inside = true,
            "  )" if inside => {
                inside = false;
                lines.push("  (transformer): GPT2Model(...)  # the GPT2Model tree above");
            }
            _ if inside => {}
            _ => lines.push(line),
        }
    }
    lines.join("\n")
}
