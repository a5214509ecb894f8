//! Writes the bundled tiny GPT-2 (`data/tiny-gpt2/`) with the crate's own initialisation.
//!
//! The model has GPT-2's real vocabulary (50,257) and context (1,024) but two layers of width
//! 64, so every example runs offline in moments. Its weights are random: its text is gibberish,
//! but it exercises exactly the code paths the real models do. A test checks that this command
//! reproduces the committed file bit for bit.
//!
//! ```text
//! cargo run --release --example make_tiny_gpt2
//! ```

use candle_core::Device;
use gpt2_tutorial::source::{bundled_model_dir, TINY_SEED};
use gpt2_tutorial::{Gpt2Config, Weights};

fn main() -> anyhow::Result<()> {
    let dir = bundled_model_dir()?;
    std::fs::create_dir_all(&dir)?;
    let cfg = Gpt2Config::tiny();
    let weights = Weights::init(&cfg, TINY_SEED, &Device::Cpu)?;
    std::fs::write(dir.join("config.json"), cfg.to_json() + "\n")?;
    weights.save(&dir.join("model.safetensors"))?;
    println!(
        "wrote {} ({} parameters)",
        dir.display(),
        cfg.num_parameters()
    );
    Ok(())
}
