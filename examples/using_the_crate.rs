//! The crate in a program of your own: load a GPT-2, generate, decode - the page "Using the
//! crate in your own program" shows this file.
//!
//! Unlike the chapters' examples it has no flags: the first argument, if any, names the model
//! (a Hub id such as `openai-community/gpt2`, a directory, or `bundled`, the default, which runs
//! offline).
//!
//! ```text
//! cargo run --release --example using_the_crate                          # the bundled tiny model
//! cargo run --release --example using_the_crate -- openai-community/gpt2
//! ```

// ANCHOR: allocator
// For programs that train: zeroed memory is written at once (see the page).
#[global_allocator]
static ALLOCATOR: gpt2_tutorial::prelude::ZeroFilledAllocator =
    gpt2_tutorial::prelude::ZeroFilledAllocator;
// ANCHOR_END: allocator

// ANCHOR: program
use gpt2_tutorial::prelude::*;

fn main() -> anyhow::Result<()> {
    reuse_freed_buffers(); // keep large freed buffers for the next step
    let name = std::env::args().nth(1).unwrap_or_else(|| "bundled".into());
    let source: ModelSource = name.parse()?; // a Hub id, a directory, or "bundled"
    let model = LoadedModel::load(&source, &Device::Cpu, DType::F32)?;
    let lm = Gpt2LmHeadModel::from_weights(&model.weights, &model.config)?;

    let prompt = model.tokenizer.encode("The Rust programming language is")?;
    let settings = GenerationConfig {
        max_new_tokens: Some(20),
        ..GenerationConfig::default() // greedy, stops at <|endoftext|>
    };
    let generated = generate(&lm, &prompt, &settings)?;
    println!("{}", model.tokenizer.decode(&generated.sequences[0])?);
    Ok(())
}
// ANCHOR_END: program
