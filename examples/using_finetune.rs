//! Fine-tuning from a program of your own: chapter 6's loop on your texts - the page "Using the
//! crate in your own program" shows this file. Runs offline on the bundled tiny model.
//!
//! ```text
//! cargo run --release --example using_finetune
//! ```

// For programs that train: zeroed memory is written at once (see the page's memory section).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
    gpt2_tutorial::memory::ZeroFilledAllocator;

// ANCHOR: finetune
use candle_core::{DType, Device};
use gpt2_tutorial::train::{JokesSettings, JokesTrainer, RunOptions};
use gpt2_tutorial::{LoadedModel, ModelSource};

fn main() -> anyhow::Result<()> {
    gpt2_tutorial::memory::reuse_freed_buffers(); // keep large freed buffers for the next step
    let model = LoadedModel::load(&ModelSource::Bundled, &Device::Cpu, DType::F32)?;
    // Your texts, each ending with <|endoftext|> so the model learns where one stops.
    let texts = ["The cat sat on the mat.", "The dog sat on the log."];
    let tokenized = texts
        .iter()
        .map(|t| model.tokenizer.encode(&format!("{t}<|endoftext|>")))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = JokesSettings {
        epochs: 30,
        accumulate: 1,
        max_seq_len: 64,
        lr: 1e-3,
        ..JokesSettings::fixed() // averaged gradients, warm-up and decay, clipping, AdamW
    };
    let out = std::path::Path::new("target/using-finetune");
    std::fs::create_dir_all(out)?;
    let tokenizer = out.join("tokenizer.json");
    model.tokenizer.save(&tokenizer)?;
    let mut trainer = JokesTrainer::new(
        &model.weights,
        &model.config,
        &tokenized,
        settings,
        out,
        &tokenizer,
    )?;
    let report = trainer.run(&RunOptions::default())?;
    let (first, last) = (
        &report.history.steps[0],
        report.history.steps.last().unwrap(),
    );
    println!(
        "loss {:.1} at step 1, {:.1} at step {}",
        first.loss, last.loss, last.step
    );
    println!("saved: {}", report.checkpoint.unwrap_or_default().display());
    Ok(())
}
// ANCHOR_END: finetune
