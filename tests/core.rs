//! The GPT-2 core against Hugging Face transformers, rung by rung: hidden states → logits →
//! loss → greedy tokens; then loading in both directions, and the errors bad input gets.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;
use gpt2_tutorial::source::{bundled_model_dir, TINY_SEED};
use gpt2_tutorial::{
    generation, loss, Error, Gpt2Config, Gpt2LmHeadModel, Gpt2Model, KvCache, LoadedModel,
    ModelSource, Weights,
};

fn input(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

#[test]
fn seed_prompt_tokenizes_like_gpt2() {
    let ids = bundled()
        .tokenizer
        .encode("Hello, I'm a language model,")
        .unwrap();
    with_snapshots(|| insta::assert_json_snapshot!("seed_prompt_ids", ids));
    let fx = fixture_json("core");
    assert_eq!(ids, common::ids(&fx["prompts"][0]["input_ids"]));
}

#[test]
fn exact_parameter_counts_of_the_four_sizes() {
    let counts: Vec<usize> = Gpt2Config::presets()
        .iter()
        .map(|(_, c)| c.num_parameters())
        .collect();
    assert_eq!(
        counts,
        [124_439_808, 354_823_168, 774_030_080, 1_557_611_200]
    );
    // The bundled model's stored tensors add up to its config's count.
    assert_eq!(
        bundled().weights.num_parameters(),
        bundled().config.num_parameters()
    );
}

#[test]
fn hidden_states_match_transformers_layer_by_layer() {
    let fx = fixture_json("core");
    let want = fixture_tensors("core");
    let m = bundled();
    let base = Gpt2Model::from_weights(&m.weights, &m.config).unwrap();
    let ids = common::ids(&fx["prompts"][0]["input_ids"]);
    // transformers' hidden_states: the embeddings, then each block's output, the last one
    // after ln_f. We check the final one through the public forward...
    let hidden = base
        .forward(&input(&ids), None, None)
        .unwrap()
        .i(0)
        .unwrap();
    let last = m.config.n_layer;
    assert_close(
        "hidden_states (after ln_f)",
        &hidden,
        &want[&format!("prompt0.hidden_states.{last}")],
        HIDDEN_TOL,
    );
    // ...and the embeddings from wte + wpe directly.
    let ids_t = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
    let tok = m
        .weights
        .get("wte.weight")
        .unwrap()
        .index_select(&ids_t, 0)
        .unwrap();
    let pos = m
        .weights
        .get("wpe.weight")
        .unwrap()
        .i(0..ids.len())
        .unwrap();
    assert_close(
        "embeddings (wte + wpe)",
        &(tok + pos).unwrap(),
        &want["prompt0.hidden_states.0"],
        HIDDEN_TOL,
    );
}

#[test]
fn logits_match_transformers() {
    let fx = fixture_json("core");
    let want = fixture_tensors("core");
    let model = bundled_lm();
    for (i, p) in fx["prompts"].as_array().unwrap().iter().enumerate() {
        let ids = common::ids(&p["input_ids"]);
        let logits = model
            .forward(&input(&ids), None, None)
            .unwrap()
            .i(0)
            .unwrap();
        assert_close(
            &format!("prompt{i} logits"),
            &logits,
            &want[&format!("prompt{i}.logits")],
            LOGITS_TOL,
        );
    }
}

#[test]
fn lm_loss_matches_transformers() {
    let fx = fixture_json("core");
    let model = bundled_lm();
    for p in fx["prompts"].as_array().unwrap() {
        let ids = common::ids(&p["input_ids"]);
        let logits = model.forward(&input(&ids), None, None).unwrap();
        let labels = input(&ids).to_dtype(DType::I64).unwrap();
        let got = loss::lm_loss(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = p["loss"].as_f64().unwrap() as f32;
        assert!((got - want).abs() <= LOSS_TOL, "loss {got} vs {want}");
    }
}

#[test]
fn greedy_ids_match_transformers_generate() {
    let fx = fixture_json("core");
    let model = bundled_lm();
    for p in fx["prompts"].as_array().unwrap() {
        let ids = common::ids(&p["input_ids"]);
        let want = common::ids(&p["greedy_ids"]);
        let got = generation::greedy(&model, &ids, want.len() - ids.len()).unwrap();
        assert_eq!(got, want, "greedy ids for {:?}", p["text"]);
        let text = bundled().tokenizer.decode(&got).unwrap();
        assert_eq!(text, p["greedy_text"].as_str().unwrap());
    }
}

#[test]
fn cached_logits_equal_full_forward() {
    let model = bundled_lm();
    let ids = bundled()
        .tokenizer
        .encode("Hello, I'm a language model,")
        .unwrap();
    let full = model
        .forward(&input(&ids), None, None)
        .unwrap()
        .i(0)
        .unwrap(); // (T, V)
    let mut cache = KvCache::new(model.config().n_layer);
    model
        .forward(&input(&ids[..3]), None, Some(&mut cache))
        .unwrap();
    for (t, &id) in ids.iter().enumerate().skip(3) {
        let step = model
            .forward(&input(&[id]), None, Some(&mut cache))
            .unwrap();
        assert_close(
            &format!("cached step {t}"),
            &step.i((0, 0)).unwrap(),
            &full.i(t).unwrap(),
            1e-5,
        );
    }
    assert_eq!(cache.seq_len(), ids.len());
    cache.clear();
    assert_eq!(cache.seq_len(), 0);
}

#[test]
fn fused_and_differentiable_paths_agree() {
    // Training takes candle's composed LayerNorm/softmax (they have a backward pass); inference
    // takes the fused kernels. Both must give the same logits.
    let m = bundled();
    let ids = m.tokenizer.encode("Hello, I'm a language model,").unwrap();
    let fused = bundled_lm().forward(&input(&ids), None, None).unwrap();
    let varmap = m.weights.to_varmap().unwrap();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let trainable =
        Gpt2LmHeadModel::load(vb, &m.config, &gpt2_tutorial::dropout::Dropout::seeded(0)).unwrap();
    let composed = trainable.forward(&input(&ids), None, None).unwrap();
    assert!(composed.track_op());
    assert_close("fused vs composed logits", &fused, &composed.detach(), 1e-5);
}

#[test]
fn bundled_model_is_the_crates_own_seeded_initialisation() {
    let cfg = Gpt2Config::tiny();
    let fresh = Weights::init(&cfg, TINY_SEED, &Device::Cpu).unwrap();
    let bundled = &bundled().weights;
    assert_eq!(fresh.names(), bundled.names());
    for name in fresh.names() {
        let d = max_abs_diff(fresh.get(&name).unwrap(), bundled.get(&name).unwrap());
        assert_eq!(
            d, 0.0,
            "{name} differs: regenerate with `cargo run --example make_tiny_gpt2`"
        );
    }
}

#[test]
fn initialisation_follows_gpt2() {
    let cfg = Gpt2Config {
        n_layer: 8,
        ..Gpt2Config::tiny()
    };
    let w = Weights::init(&cfg, 7, &Device::Cpu).unwrap();
    let std = |name: &str| {
        let v: Vec<f32> = w
            .get(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
    };
    assert!((std("wte.weight") - 0.02).abs() < 2e-4);
    assert!((std("h.0.mlp.c_fc.weight") - 0.02).abs() < 1e-3);
    // Residual scaling: c_proj weights get 0.02 / sqrt(2 · n_layer) = 0.005 for 8 layers.
    assert!((std("h.3.mlp.c_proj.weight") - 0.005).abs() < 2e-4);
    assert!((std("h.3.attn.c_proj.weight") - 0.005).abs() < 5e-4);
    let ones = w
        .get("h.0.ln_1.weight")
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(ones, cfg.n_embd as f32);
    let zeros = w
        .get("h.0.attn.c_attn.bias")
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(zeros.to_scalar::<f32>().unwrap(), 0.0);
    // Same seed, same weights; another seed, other weights.
    let again = Weights::init(&cfg, 7, &Device::Cpu).unwrap();
    let other = Weights::init(&cfg, 8, &Device::Cpu).unwrap();
    let first = |w: &Weights| {
        w.get("wte.weight")
            .unwrap()
            .i((0, 0))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(first(&w), first(&again));
    assert_ne!(first(&w), first(&other));
}

#[test]
fn crate_written_checkpoint_loads_cleanly_in_transformers() {
    // The bundled model was written by `Weights::save`; the fixture script loaded it into
    // GPT2LMHeadModel and recorded what transformers reported. Its logits match (above).
    let fx = fixture_json("core");
    for key in [
        "missing_keys",
        "unexpected_keys",
        "mismatched_keys",
        "error_msgs",
    ] {
        assert_eq!(fx["loading_info"][key], serde_json::json!([]), "{key}");
    }
}

#[test]
fn transformers_written_checkpoint_loads_here() {
    let fx = fixture_json("core");
    let want = fixture_tensors("core");
    let dir = fixtures_dir().join("hf-written");
    let m = LoadedModel::load(&ModelSource::Local(dir), &Device::Cpu, DType::F32).unwrap();
    let model = Gpt2LmHeadModel::from_weights(&m.weights, &m.config).unwrap();
    let ids = common::ids(&fx["hf_written"]["input_ids"]);
    let logits = model
        .forward(&input(&ids), None, None)
        .unwrap()
        .i(0)
        .unwrap();
    assert_close(
        "hf-written logits",
        &logits,
        &want["hf_written.logits"],
        LOGITS_TOL,
    );
}

#[test]
fn saved_weights_round_trip() {
    let dir = tempdir("roundtrip");
    let m = bundled();
    std::fs::write(dir.join("config.json"), m.config.to_json()).unwrap();
    m.weights.save(&dir.join("model.safetensors")).unwrap();
    let back =
        LoadedModel::load(&ModelSource::Local(dir.clone()), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.weights.names(), m.weights.names());
    let ids = m.tokenizer.encode("round trip").unwrap();
    let a = bundled_lm().forward(&input(&ids), None, None).unwrap();
    let b = Gpt2LmHeadModel::from_weights(&back.weights, &back.config)
        .unwrap()
        .forward(&input(&ids), None, None)
        .unwrap();
    assert_close("round-trip logits", &a, &b, 0.0);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn base_model_checkpoint_without_prefix_loads() {
    // transformers' GPT2Model saves `wte.weight`, `h.0...` with no `transformer.` prefix.
    let dir = tempdir("unprefixed");
    let m = bundled();
    save_unprefixed_bundled(&dir);
    let back =
        LoadedModel::load(&ModelSource::Local(dir.clone()), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.weights.names(), m.weights.names());
    std::fs::remove_dir_all(dir).ok();
}

// ----- bad input -----------------------------------------------------------------------------

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-tutorial-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn load_err(dir: &std::path::Path) -> Error {
    LoadedModel::load(
        &ModelSource::Local(dir.to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_err()
}

#[test]
fn missing_directory_is_a_clear_error() {
    let e = load_err(std::path::Path::new("/no/such/model/dir"));
    assert!(matches!(e, Error::MissingModelDir(_)), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
    let parsed: Result<ModelSource, _> = "./no-such-dir".parse();
    assert_eq!(parsed.unwrap(), ModelSource::Local("./no-such-dir".into()));
}

#[test]
fn missing_safetensors_is_a_clear_error() {
    let dir = tempdir("nosafetensors");
    std::fs::copy(
        bundled_model_dir().unwrap().join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn truncated_or_corrupt_safetensors_is_a_clear_error() {
    let dir = tempdir("corrupt");
    std::fs::copy(
        bundled_model_dir().unwrap().join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(bundled_model_dir().unwrap().join("model.safetensors")).unwrap();
    // Truncated: half of the file.
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, Error::CorruptWeights { .. }), "{e}");
    assert!(e.to_string().contains("truncated or corrupt"), "{e}");
    // Corrupt: garbage where the header should be.
    let mut garbage = bytes.clone();
    garbage[8..40].copy_from_slice(&[0xAB; 32]);
    std::fs::write(dir.join("model.safetensors"), &garbage).unwrap();
    assert!(matches!(load_err(&dir), Error::CorruptWeights { .. }));
    // Too short to hold even the header length.
    std::fs::write(dir.join("model.safetensors"), b"abc").unwrap();
    assert!(matches!(load_err(&dir), Error::CorruptWeights { .. }));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn config_and_weights_that_disagree_are_a_clear_error() {
    let dir = tempdir("mismatch");
    let cfg = Gpt2Config {
        n_embd: 128,
        ..Gpt2Config::tiny()
    };
    std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    std::fs::copy(
        bundled_model_dir().unwrap().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, Error::WeightMismatch(_)), "{e}");
    assert!(
        e.to_string().contains("wte.weight has shape [50257, 64]"),
        "{e}"
    );
    // A layer the weights do not have.
    let cfg = Gpt2Config {
        n_layer: 3,
        ..Gpt2Config::tiny()
    };
    std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    let e = load_err(&dir);
    assert!(e.to_string().contains("h.2.ln_1.weight is missing"), "{e}");
    // A config that is not JSON.
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert!(matches!(load_err(&dir), Error::BadConfig { .. }));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unknown_hub_id_while_offline_is_a_clear_error() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let src: ModelSource = "no-such-org/no-such-gpt2".parse().unwrap();
    let e = LoadedModel::load(&src, &Device::Cpu, DType::F32).unwrap_err();
    assert!(matches!(e, Error::Hub { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("no-such-org/no-such-gpt2") && msg.contains("HF_HUB_OFFLINE"),
        "{msg}"
    );
    // The examples fall back to the bundled model and say why.
    let (m, note) = LoadedModel::load_or_bundled(&src, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(m.name, "bundled");
    assert!(note.unwrap().contains("bundled tiny GPT-2"));
}

#[test]
fn empty_prompt_is_a_clear_error() {
    let e = bundled().tokenizer.encode("").unwrap_err();
    assert!(matches!(e, Error::EmptyPrompt), "{e}");
    let model = bundled_lm();
    let e = generation::greedy(&model, &[], 5).unwrap_err();
    assert!(matches!(e, Error::EmptyPrompt), "{e}");
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let model = bundled_lm();
    let ids = vec![198u32; 1025];
    let e = model.forward(&input(&ids), None, None).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ContextOverflow {
                len: 1025,
                max: 1024
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("shorten the prompt"), "{e}");
    let e = generation::greedy(&model, &ids[..1000], 30).unwrap_err();
    assert!(matches!(e, Error::ContextOverflow { len: 1030, .. }), "{e}");
}

// ----- batches, sources and the bundled files, as a library user meets them -------------------

#[test]
fn a_batch_is_right_padded_with_its_mask_as_transformers_pads_it() {
    let tok = &bundled().tokenizer;
    let fx = fixture_json("core");
    let texts = ["Hello, I'm a language model,", "Hi", ""];
    let batch = tok.encode_batch(&texts, 50256, &Device::Cpu).unwrap();
    let rows: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode_allow_empty(t).unwrap())
        .collect();
    assert_eq!(rows[0], common::ids(&fx["prompts"][0]["input_ids"]));
    assert_eq!(batch.lengths, [8, rows[1].len(), 0]);
    // transformers' `tokenizer(texts, padding=True)`: each row, then the pad token, to the longest.
    let padded: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| [r.clone(), vec![50256; 8 - r.len()]].concat())
        .collect();
    let mask: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| [vec![1; r.len()], vec![0; 8 - r.len()]].concat())
        .collect();
    assert_eq!(batch.input_ids.to_vec2::<u32>().unwrap(), padded);
    assert_eq!(batch.attention_mask.to_vec2::<u32>().unwrap(), mask);
    // With the mask, a padded row's real positions get the logits the row gets alone.
    let lm = bundled_lm();
    let logits = lm
        .forward(&batch.input_ids, Some(&batch.attention_mask), None)
        .unwrap(); // (3, 8, V)
    for (i, row) in rows.iter().enumerate().take(2) {
        let alone = lm.forward(&input(row), None, None).unwrap().i(0).unwrap();
        let in_batch = logits.i((i, 0..row.len())).unwrap();
        assert_close(&format!("row {i} padded"), &in_batch, &alone, LOGITS_TOL);
    }
    // Chapter 7's collate pads through the same code.
    let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
    let longest = gpt2_tutorial::data::collate::Padding::Longest;
    let collated =
        gpt2_tutorial::data::collate::collate(&refs, &[0, 1, 0], longest, 8, 50256, &Device::Cpu)
            .unwrap();
    assert_eq!(collated.input_ids.to_vec2::<u32>().unwrap(), padded);
    assert_eq!(collated.attention_mask.to_vec2::<u32>().unwrap(), mask);
    assert_eq!(collated.real_tokens, 8 + rows[1].len());
}

#[test]
fn a_batch_without_tokens_is_a_clear_error() {
    let tok = &bundled().tokenizer;
    let e = tok.encode_batch(&[], 50256, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("at least one text")),
        "{e}"
    );
    let e = tok
        .encode_batch(&["", ""], 50256, &Device::Cpu)
        .unwrap_err();
    assert!(matches!(e, Error::EmptyPrompt), "{e}");
}

#[test]
fn a_source_that_looks_like_a_path_is_a_missing_directory_not_a_hub_model() {
    let parse = |s: &str| s.parse::<ModelSource>().unwrap();
    // The tests run from the crate root, where `data/` and `tests/` exist.
    for s in [
        "/abs/model",
        "./m",
        "../m",
        "~/m",
        "a\\b",
        "a/b/c",
        "owner/",
        "data/checkpoint-99",
        "tests/ft-out",
    ] {
        assert_eq!(parse(s), ModelSource::Local(s.into()), "{s}");
    }
    assert_eq!(
        parse("someone/tiny-gpt2"),
        ModelSource::Hub("someone/tiny-gpt2".into())
    );
    assert_eq!(
        parse("gpt2"),
        ModelSource::Hub("openai-community/gpt2".into())
    );
    // A mistyped checkpoint under an existing folder: the missing directory is what is reported.
    let e = LoadedModel::load(&parse("data/checkpoint-99"), &Device::Cpu, DType::F32).unwrap_err();
    assert!(
        matches!(&e, Error::MissingModelDir(p) if p.ends_with("checkpoint-99")),
        "{e}"
    );
    assert!(e.to_string().contains("does not exist"), "{e}");
    // Library errors name the argument, not a command-line flag.
    let e = "".parse::<ModelSource>().unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("model source is empty") && !text.contains("--"),
        "{text}"
    );
}

/// Runs this binary's test [`bundled_data_child`] alone, in a child process with
/// `GPT2_TUTORIAL_DATA` set: every test that loads `bundled` reads the variable, so it is never
/// set in this process, where they run in parallel.
fn run_bundled_data_child(data_dir: &std::path::Path, expect: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["bundled_data_child", "--exact", "--nocapture"])
        .env(gpt2_tutorial::source::DATA_DIR_ENV, data_dir)
        .env("GPT2_TUTORIAL_TEST_EXPECT", expect)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "child ({expect}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("child checked: {expect}")),
        "{stdout}"
    );
    stdout
}

#[test]
fn the_environment_variable_says_where_the_bundled_files_are() {
    let copy = tempdir("bundled-copy");
    for sub in ["tiny-gpt2", "gpt2-tokenizer"] {
        let from = root().join("data").join(sub);
        std::fs::create_dir_all(copy.join(sub)).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, copy.join(sub).join(f.file_name().unwrap())).unwrap();
        }
    }
    run_bundled_data_child(&copy, "found");
    std::fs::remove_dir_all(&copy).ok();
    run_bundled_data_child(&copy, "missing");
}

/// The child half of [`the_environment_variable_says_where_the_bundled_files_are`]; without
/// its variables (every ordinary run) it does nothing.
#[test]
fn bundled_data_child() {
    let Ok(expect) = std::env::var("GPT2_TUTORIAL_TEST_EXPECT") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var_os("GPT2_TUTORIAL_DATA").unwrap());
    let found = gpt2_tutorial::source::bundled_data_dir();
    let load = LoadedModel::load(&ModelSource::Bundled, &Device::Cpu, DType::F32);
    match expect.as_str() {
        "found" => {
            assert_eq!(found.unwrap(), dir);
            let files = ModelSource::Bundled.resolve().unwrap();
            assert!(files.config.starts_with(&dir), "{}", files.config.display());
            assert_eq!(load.unwrap().config, bundled().config);
        }
        "missing" => {
            for e in [
                found.unwrap_err(),
                load.unwrap_err(),
                gpt2_tutorial::Gpt2Tokenizer::bundled().unwrap_err(),
            ] {
                assert!(
                    matches!(&e, Error::BundledDataMissing { tried } if tried.as_slice() == [dir.as_path()]),
                    "{e:?}"
                );
                let text = e.to_string();
                assert!(text.contains("GPT2_TUTORIAL_DATA"), "{text}");
            }
        }
        other => panic!("unknown expectation {other}"),
    }
    println!("child checked: {expect}");
}
