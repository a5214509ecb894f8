//! Chapter 5: how the language-modelling loss shifts logits and labels.
//!
//! Runs the tutorial's prompt with `labels = input_ids`, prints the loss the model returns, then
//! computes the same by hand - shift, flatten, log-softmax, gather, mean - with every intermediate
//! shape, and finally the loss with the first labels set to -100 (ignored), as one does for a
//! prompt that should not be learned.
//!
//! ```text
//! cargo run --release --example 05_loss_shift                     # openai-community/gpt2, or bundled offline
//! cargo run --release --example 05_loss_shift -- --model bundled --json
//! ```

use candle_core::{DType, Tensor, D};
use candle_nn::ops::log_softmax;
use clap::Parser;
use gpt2_tutorial::cli::PromptArgs;
use gpt2_tutorial::loss::IGNORE_INDEX;
use gpt2_tutorial::Error;

/// The LM loss from the model and by hand.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: PromptArgs,
    /// How many leading labels the last variant sets to -100.
    #[arg(long, default_value_t = 3)]
    ignore_first: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (model, lm) = args.common.load_lm()?;
    let ids = model.tokenizer.encode(&args.common.prompt)?;
    let device = model.weights.device();
    if ids.len() < 2 {
        // Checked here, not left to the loss, so that the message can name the flag to change.
        return Err(Error::InvalidArgument(format!(
            "the prompt {:?} is 1 token, but the loss needs at least 2 (one to read, one to predict): pass a longer --prompt, two words or more",
            args.common.prompt
        ))
        .into());
    }

    // ANCHOR: model_loss
    let input_ids = Tensor::new(ids.as_slice(), device)?.unsqueeze(0)?; // (1, T)
    let labels = input_ids.to_dtype(DType::I64)?; // labels = input_ids: the model shifts them
    let out = lm.forward_with_labels(&input_ids, None, &labels)?;
    let loss = out.loss.to_scalar::<f32>()?;
    // ANCHOR_END: model_loss

    // ANCHOR: by_hand
    let (_, t, v) = out.logits.dims3()?;
    let shift_logits = out.logits.narrow(1, 0, t - 1)?; // logits[..., :-1, :]  (1, T-1, V)
    let shift_labels = labels.narrow(1, 1, t - 1)?; // labels[..., 1:]  (1, T-1)
    let flat_logits = shift_logits.reshape((t - 1, v))?; // (T-1, V)
    let flat_labels = shift_labels.flatten_all()?; // (T-1)

    // cross-entropy: minus the mean log-probability of the right token
    let log_probs = log_softmax(&flat_logits, D::Minus1)?; // (T-1, V)
    let picked = log_probs.gather(&flat_labels.unsqueeze(1)?, 1)?; // (T-1, 1)
    let manual_loss = picked.neg()?.mean_all()?.to_scalar::<f32>()?;
    // ANCHOR_END: by_hand

    // ANCHOR: ignored
    let mut ignored: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
    let n_ignored = args.ignore_first.min(ignored.len());
    ignored[..n_ignored].fill(IGNORE_INDEX); // these positions count for nothing
    let ignored_labels = Tensor::new(ignored.as_slice(), device)?.unsqueeze(0)?; // (1, T)
    let loss_with_ignored = lm
        .forward_with_labels(&input_ids, None, &ignored_labels)?
        .loss
        .to_scalar::<f32>()?;
    // ANCHOR_END: ignored
    // The first label is dropped by the shift anyway, so it never counts.
    let counted = ignored[1..].iter().filter(|&&l| l != IGNORE_INDEX).count();

    if args.common.json {
        let report = serde_json::json!({
            "input_ids": ids,
            "loss": loss,
            "manual_loss": manual_loss,
            "loss_with_ignored": loss_with_ignored,
            "labels_with_ignored": ignored,
            "shapes": {
                "logits": out.logits.dims(),
                "shift_logits": shift_logits.dims(),
                "shift_labels": shift_labels.dims(),
                "flat_logits": flat_logits.dims(),
                "flat_labels": flat_labels.dims(),
                "log_probs": log_probs.dims(),
                "picked": picked.dims(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("prompt: {:?} ({t} tokens)", args.common.prompt);
    println!("input_ids: {ids:?}\n");
    println!("loss from the model (labels = input_ids): {loss:.4}\n");
    println!("by hand:");
    println!("  logits               {:?}", out.logits.dims());
    println!(
        "  logits[..., :-1, :]  {:?}  (the last position predicts nothing we know)",
        shift_logits.dims()
    );
    println!(
        "  labels[..., 1:]      {:?}  (the first token is predicted by nothing)",
        shift_labels.dims()
    );
    println!("  flattened logits     {:?}", flat_logits.dims());
    println!("  flattened labels     {:?}", flat_labels.dims());
    println!(
        "  log_softmax          {:?}  (log-probabilities over the vocabulary)",
        log_probs.dims()
    );
    println!(
        "  gather(labels)       {:?}  (the log-probability of each right token)",
        picked.dims()
    );
    println!("  -mean = cross-entropy {manual_loss:.4}\n");
    println!("labels with the first {n_ignored} set to -100: {ignored:?}");
    println!("loss over the {counted} predictions that still count: {loss_with_ignored:.4}");
    Ok(())
}
