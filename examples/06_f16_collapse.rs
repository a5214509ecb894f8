//! Chapter 6, why the tutorial's model says `!!!!`: the four suspects of its pure-f16
//! fine-tune, measured - f16's numbers, one weight through the tutorial's whole schedule in five
//! precisions, the bundled model's real gradients and one update at the tutorial's learning
//! rates, and the largest activations of a small and a gpt2-size random model in f32 and f16.
//!
//! Everything runs on the bundled tiny model and on random weights (no pretrained weights are
//! needed, or used); about a minute on two cores.
//!
//! ```text
//! cargo run --release --example 06_f16_collapse
//! cargo run --release --example 06_f16_collapse -- --json
//! ```

use clap::Parser;
use gpt2_tutorial::cli::ModelArgs;
use gpt2_tutorial::tutorial::f16_collapse::{self, CollapseSettings};

/// Measure why pure-f16 fine-tuning with the tutorial's AdamW collapses.
#[derive(Parser)]
struct Args {
    /// Packed joke sequences (500 tokens, the tutorial's packing) whose gradients are summed.
    #[arg(long, default_value_t = CollapseSettings::default().sequences)]
    sequences: usize,
    /// Seeds dropout and the gpt2-size random weights.
    #[arg(long, default_value_t = CollapseSettings::default().seed)]
    seed: u64,
    /// Skip the gpt2-size random model (the slowest part).
    #[arg(long)]
    no_gpt2_size: bool,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let model = ModelArgs::bundled().load()?;
    let settings = CollapseSettings {
        sequences: args.sequences,
        seed: args.seed,
        gpt2_size: !args.no_gpt2_size,
        ..CollapseSettings::default()
    };
    let report = f16_collapse::run(&model.weights, &model.config, &model.tokenizer, &settings)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", f16_collapse::render(&report));
    }
    Ok(())
}
