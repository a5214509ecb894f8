//! Fine-tuning from a program of your own: chapter 6's loop on your texts - the page "Using the
//! crate in your own program" shows this file. Runs offline on the bundled tiny model.
//!
//! ```text
//! cargo run --release --example using_finetune
//! ```

// For programs that train: zeroed memory is written at once (see the page's memory section).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::prelude::ZeroFilledAllocator =
    gpt2_tutorial::prelude::ZeroFilledAllocator;

// ANCHOR: finetune
use gpt2_tutorial::prelude::*;

fn main() -> anyhow::Result<()> {
    reuse_freed_buffers(); // keep large freed buffers for the next step
    let model = LoadedModel::load(&ModelSource::Bundled, &Device::Cpu, DType::F32)?;
    // Your texts; each gets <|endoftext|> appended, so the model learns where one stops.
    let texts = ["The cat sat on the mat.", "The dog sat on the log."];
    let settings = FineTuneSettings {
        epochs: 30,
        accumulate: 1,
        max_seq_len: 64,
        lr: 1e-3,
        ..FineTuneSettings::fixed() // averaged gradients, warm-up and decay, clipping, AdamW
    };
    // Optional: checkpoints that resume, in a folder this run holds (`true`: replace an
    // earlier run's files there, so the program can be run again).
    let out = RunDir::fresh("target/using-finetune", true)?;
    let mut tuner =
        LmFineTuner::on_texts(&model, &texts, settings)?.save_checkpoints(out, &model.tokenizer);
    let report = tuner.run()?;
    let steps = &report.history.steps;
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        println!(
            "loss {:.1} at step 1, {:.1} at step {}",
            first.loss, last.loss, last.step
        );
    }
    // One call writes a directory this crate and transformers' from_pretrained both open.
    let saved = std::path::Path::new("target/using-finetune/final");
    tuner.save_pretrained(saved, &model.tokenizer)?;
    println!("saved: {}", saved.display());

    // The trained model comes back ready for inference (dropout off).
    let lm = tuner.into_model()?;
    let prompt = model.tokenizer.encode("The cat")?;
    let generated = generate(&lm, &prompt, &GenerationConfig::greedy(6))?;
    println!("{}", model.tokenizer.decode(&generated.sequences[0])?);
    Ok(())
}
// ANCHOR_END: finetune
