//! Chapter 1: GPT-2's architecture.
//!
//! Prints the four released sizes with their exact parameter counts, then loads a model and
//! prints its module tree the way PyTorch prints `GPT2LMHeadModel`.
//!
//! ```text
//! cargo run --release --example 01_architecture                   # openai-community/gpt2, or bundled offline
//! cargo run --release --example 01_architecture -- --model bundled --json
//! ```

use clap::Parser;
use gpt2_tutorial::cli::ModelArgs;
use gpt2_tutorial::heads::ModelClass;
use gpt2_tutorial::tutorial::architecture::{lm_tree, ArchitectureReport};
use gpt2_tutorial::tutorial::module_tree::module_tree;
use gpt2_tutorial::Gpt2Config;

/// GPT-2's sizes, module tree and parameter counts.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // ANCHOR: load
    let model = args.model.load()?;
    let report = ArchitectureReport::new(&model);
    // ANCHOR_END: load
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{report}\n");
    // ANCHOR: tree
    println!("The smallest GPT-2 as PyTorch prints it:\n");
    println!("{}\n", module_tree(&Gpt2Config::gpt2(), ModelClass::LmHead));
    println!("The loaded model ({}):\n", model.name);
    println!("{}", lm_tree(&model));
    // ANCHOR_END: tree
    Ok(())
}
