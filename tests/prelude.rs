//! A program of a library user, written only against `gpt2_tutorial::prelude`: load the
//! bundled model, read the next-token distribution, score a text, fine-tune on a `Vec<String>`
//! with the general loop, save, load the saved directory again, and classify a padded batch.
//! It builds without the crate's optional dependencies too (`.ci/run` runs it with
//! `--no-default-features`).

use gpt2_tutorial::prelude::*;

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt2-prelude-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn bundled() -> Result<LoadedModel> {
    LoadedModel::load(&ModelSource::Bundled, &Device::Cpu, DType::F32)
}

#[test]
fn top_k_next_tokens_are_the_most_likely_in_order() -> Result<()> {
    let m = bundled()?;
    let lm = Gpt2LmHeadModel::from_weights(&m.weights, &m.config)?;
    // ANCHOR: top_k
    let prompt = m.tokenizer.encode("Hello, I'm a language model,")?;
    for next in top_k_next_tokens(&lm, &prompt, 5)? {
        println!("{:>8.4}  {:?}", next.prob, m.tokenizer.decode(&[next.id])?);
    }
    // ANCHOR_END: top_k
    let top = top_k_next_tokens(&lm, &prompt, 5)?;
    assert_eq!(top.len(), 5);
    assert!(top.windows(2).all(|w| w[0].prob >= w[1].prob), "{top:?}");
    // The first is greedy decoding's choice, and the probabilities are the softmax's.
    let greedy = generate(&lm, &prompt, &GenerationConfig::greedy(1))?;
    assert_eq!(top[0].id, greedy.sequences[0][prompt.len()]);
    let logits = lm.forward_last(
        &Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?,
        None,
        None,
    )?;
    let probs: Vec<f32> =
        candle_core::Tensor::exp(&logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?)?
            .squeeze(0)?
            .to_vec1()?;
    let total: f32 = probs.iter().sum();
    for t in &top {
        let want = probs[t.id as usize] / total;
        assert!(
            (t.prob - want).abs() <= 1e-6 * want.max(1e-3),
            "{t:?} vs {want}"
        );
    }
    Ok(())
}

#[test]
fn a_text_scores_its_mean_loss_and_perplexity() -> Result<()> {
    let m = bundled()?;
    let lm = Gpt2LmHeadModel::from_weights(&m.weights, &m.config)?;
    // ANCHOR: score
    let ids = m.tokenizer.encode("The cat sat on the mat.")?;
    let score = lm.score(&ids)?;
    println!("loss {:.3}, perplexity {:.1}", score.loss, score.perplexity);
    // ANCHOR_END: score
    let labels = Tensor::new(ids.as_slice(), &Device::Cpu)?
        .unsqueeze(0)?
        .to_dtype(DType::I64)?;
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let loss = lm.forward_with_labels(&input, None, &labels)?.loss;
    assert_eq!(score.loss, f64::from(loss.to_scalar::<f32>()?));
    assert_eq!(score.perplexity, score.loss.exp());
    assert_eq!(score.tokens, ids.len());
    assert!(lm.score(&ids[..1]).is_err(), "one token predicts nothing");
    Ok(())
}

/// Fine-tune a few steps on texts of our own, save, and load the directory again: the model
/// that comes back from training generates exactly what the saved one does.
#[test]
fn fine_tune_save_reload_and_generate_the_same() -> Result<()> {
    let m = bundled()?;
    assert!(
        m.config.resid_pdrop > 0.0,
        "the check needs a model with dropout"
    );
    let texts: Vec<String> = (0..12)
        .map(|i| format!("Note {i}: the cat sat on the mat, and the dog sat on the log."))
        .collect();
    let settings = FineTuneSettings {
        epochs: 2,
        accumulate: 2,
        max_seq_len: 48,
        lr: 1e-3,
        max_steps: Some(4),
        ..FineTuneSettings::fixed()
    };
    let out = scratch("finetune");
    let mut tuner = LmFineTuner::on_texts(&m, &texts, settings)?
        .save_checkpoints(RunDir::fresh(&out, false)?, &m.tokenizer);
    let report = tuner.run()?;
    assert_eq!(report.optimizer_steps, 4);
    assert_eq!(report.history.steps.len(), 4);
    let first = report.history.steps[0].loss;
    let last = report.history.steps[3].loss;
    assert!(last < first, "the loss falls: {first} -> {last}");
    let saved = out.join("final");
    tuner.save_pretrained(&saved, &m.tokenizer)?;
    let trained = tuner.into_model()?;

    let prompt = m.tokenizer.encode("Note 3: the cat")?;
    let sampled = GenerationConfig {
        max_new_tokens: Some(12),
        seed: 7,
        ..GenerationConfig::sampling()
    };
    let checkpoint = report.checkpoint.clone().expect("a checkpoint at the end");
    for dir in [saved, checkpoint] {
        let back = LoadedModel::load(&dir.to_string_lossy().parse()?, &Device::Cpu, DType::F32)?;
        let reloaded = Gpt2LmHeadModel::from_weights(&back.weights, &back.config)?;
        for config in [GenerationConfig::greedy(12), sampled.clone()] {
            let a = generate(&trained, &prompt, &config)?;
            let b = generate(&reloaded, &prompt, &config)?;
            assert_eq!(a.sequences, b.sequences, "{}", dir.display());
        }
        // Not only the argmax: the logits are the same to the last bit.
        let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let a = trained.forward(&input, None, None)?;
        let b = reloaded.forward(&input, None, None)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{}", dir.display());
        assert_eq!(
            back.tokenizer.encode("Note 3")?,
            m.tokenizer.encode("Note 3")?
        );
    }
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}

/// A padded batch through a classifier gives each row what the row alone gives.
#[test]
fn a_padded_batch_classifies_each_row_as_alone() -> Result<()> {
    let m = bundled()?;
    // ANCHOR: batch
    let mut classifier = Gpt2ForSequenceClassification::from_weights(&m.weights, &m.config, 2)?;
    classifier.set_pad_token_id(Some(EOS_TOKEN_ID)); // GPT-2 pads with <|endoftext|>
    let texts = [
        "A short one.",
        "A rather longer review, which needs no padding at all.",
    ];
    let batch = m
        .tokenizer
        .encode_batch(&texts, EOS_TOKEN_ID, &Device::Cpu)?;
    let logits = classifier.forward(&batch.input_ids, Some(&batch.attention_mask))?; // (2, 2)
                                                                                     // ANCHOR_END: batch
    assert!(
        !classifier.load_report().new_weights.is_empty(),
        "score is new"
    );
    assert_eq!(logits.dims(), &[2, 2]);
    for (i, text) in texts.iter().enumerate() {
        let ids = m.tokenizer.encode(text)?;
        let alone = classifier.forward(
            &Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?,
            None,
        )?;
        let row = logits.get(i)?.unsqueeze(0)?;
        let diff = (row - alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "row {i}: {diff}");
    }
    Ok(())
}
