//! The GPU records of `benchmarks/gpu-*/` (`scripts/gpu_run.sh`): every table recomputed from
//! the raw outputs beside it, and the figures the chapters quote from them computed into
//! `chapters/generated/` fragments. No sentence is asserted, and nothing here is timed.

mod common;

use std::path::PathBuf;

use gpt2_tutorial::tutorial::architecture::group_digits;
use serde_json::Value;

fn benchmarks_dir() -> PathBuf {
    common::root().join("benchmarks")
}

/// The first GPU run (a record of its own: see its README.md).
const GPU_RECORD: &str = "gpu-2026-11-26-h200";
/// The second: the loops re-timed with dropout drawn on the device.
const GPU_RECORD_2: &str = "gpu-2026-11-27-h100";
/// The third, the latest: the whole experiment again on an H200, binaries of 08ef1cb.
const GPU_RECORD_3: &str = "gpu-2026-11-27-h200";

/// A file of a GPU record's `raw/dir/`.
fn gpu_raw_path(record: &str, dir: &str, name: &str) -> PathBuf {
    benchmarks_dir()
        .join(record)
        .join("raw")
        .join(dir)
        .join(name)
}

/// One side's output in a GPU record's `raw/`: the whole file when it is one pretty-printed
/// JSON object, else its last line; `None` for a run that printed nothing (it failed).
fn gpu_raw(record: &str, dir: &str, name: &str) -> Option<Value> {
    let path = gpu_raw_path(record, dir, name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let json = if text.starts_with("{\n") {
        text
    } else {
        text.lines().last().unwrap()
    };
    Some(serde_json::from_str(json).unwrap_or_else(|e| panic!("{path:?}: {e}")))
}

/// The number at `path` (keys, outermost first) in one side's output of a GPU record.
fn gpu_number(record: &str, dir: &str, name: &str, path: &[&str]) -> f64 {
    let value = gpu_raw(record, dir, name).unwrap();
    path.iter()
        .fold(&value, |v, key| &v[*key])
        .as_f64()
        .unwrap_or_else(|| panic!("{record}/raw/{dir}/{name}: no number at {path:?}"))
}

/// The largest `nvidia-smi` memory.used sample (MiB) taken while a side ran.
fn gpu_peak_mib(record: &str, dir: &str, name: &str) -> u64 {
    std::fs::read_to_string(gpu_raw_path(record, dir, &format!("{name}.mem")))
        .unwrap()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .max()
        .unwrap()
}

fn gpu_table(record: &str, name: &str) -> String {
    std::fs::read_to_string(benchmarks_dir().join(record).join(name)).unwrap()
}

/// The line of `table` that holds `key` (exactly one does).
fn line_with<'a>(table: &'a str, key: &str) -> &'a str {
    let lines: Vec<&str> = table.lines().filter(|l| l.contains(key)).collect();
    assert_eq!(lines.len(), 1, "lines with {key:?}: {lines:?}");
    lines[0]
}

/// Each fine-tune table (`md`, made from `raw/dir/`) of a GPU record against its raw outputs:
/// rates, ratios and peak device memory of both sides, or the error of a run that failed.
/// Returns how many jokes-loop rows it checked.
fn loop_tables_are_the_raw_figures(record: &str, loops: &[(&str, &str)]) -> usize {
    let mut jokes_rows = 0;
    for &(md, dir) in loops {
        let table = gpu_table(record, md);
        for dt in ["f16", "bf16"] {
            let name = format!("jokes-candle-{dt}.json");
            if !gpu_raw_path(record, dir, &name).exists() {
                continue;
            }
            let c = gpu_raw(record, dir, &name).unwrap()["jokes_per_second"]
                .as_f64()
                .unwrap();
            let torch = format!("jokes-torch-{dt}.json");
            let t = gpu_raw(record, dir, &torch).unwrap()["jokes_per_second"]
                .as_f64()
                .unwrap();
            let line = line_with(&table, &format!("pure {dt},"));
            let row = format!("| {c:.2} | {t:.2} | {:.2}x |", c / t);
            assert!(line.contains(&row), "{md}: {line}\nwants {row}");
            let mem = format!(
                "| {} | {} |",
                gpu_peak_mib(record, dir, &name),
                gpu_peak_mib(record, dir, &torch)
            );
            assert!(line.ends_with(&mem), "{md}: {line}\nwants {mem}");
            jokes_rows += 1;
        }
        let t = gpu_raw(record, dir, "imdb-torch.json").unwrap();
        let train = line_with(&table, "train (samples/s)");
        let eval = line_with(&table, "eval (samples/s)");
        let mem = format!(
            "| {} | {} |",
            gpu_peak_mib(record, dir, "imdb-candle.json"),
            gpu_peak_mib(record, dir, "imdb-torch.json")
        );
        assert!(train.ends_with(&mem), "{md}: {train}\nwants {mem}");
        let t_train = t["train_samples_per_second"].as_f64().unwrap();
        let t_eval = t["eval_samples_per_second"].as_f64().unwrap();
        match gpu_raw(record, dir, "imdb-candle.json") {
            Some(c) => {
                let c_train = c["train_output"]["metrics"]["train_samples_per_second"]
                    .as_f64()
                    .unwrap();
                let c_eval = c["eval"]["eval_samples_per_second"].as_f64().unwrap();
                for (line, c, t) in [(train, c_train, t_train), (eval, c_eval, t_eval)] {
                    let row = format!("| {c:.2} | {t:.2} | {:.2}x |", c / t);
                    assert!(line.contains(&row), "{md}: {line}\nwants {row}");
                }
            }
            None => {
                // The run that failed: its own error, out of device memory.
                let err =
                    std::fs::read_to_string(gpu_raw_path(record, dir, "imdb-candle.json.err"))
                        .unwrap();
                assert!(err.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{err}");
                for (line, t) in [(train, t_train), (eval, t_eval)] {
                    let row = format!("| failed (exit 1: Error: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")) | {t:.2} | - |");
                    assert!(line.contains(&row), "{md}: {line}\nwants {row}");
                }
            }
        }
    }
    jokes_rows
}

/// A GPU record's `report.md` (made from `raw/dir/`) against its raw outputs: the training step
/// and decoding against PyTorch in the four precisions, logits against the CPU, greedy ids and
/// decoding against transformers, and the long run's sentence.
fn report_is_the_raw_figures(record: &str, dir: &str) {
    let report = gpu_table(record, "report.md");
    for prec in ["f32", "mixed-bf16", "mixed-f16", "bf16"] {
        let c = gpu_raw(record, dir, &format!("bench-candle-{prec}.json")).unwrap();
        let t = gpu_raw(record, dir, &format!("bench-torch-{prec}.json")).unwrap();
        let f = |v: &Value, what: &str| v[what]["tokens_per_s"].as_f64().unwrap();
        let (ct, tt, cd, td) = (
            f(&c, "train"),
            f(&t, "train"),
            f(&c, "decode"),
            f(&t, "decode"),
        );
        let row = format!(
            "| {ct:.0} | {tt:.0} | {:.2} | {cd:.1} | {td:.1} | {:.2} |",
            ct / tt,
            cd / td
        );
        let line = line_with(&report, &format!("| {prec} (decode in"));
        assert!(line.contains(&row), "report.md: {line}\nwants {row}");
    }

    // The first table: logits against the CPU (the check's own line), greedy ids, decoding.
    let logits = std::fs::read_to_string(gpu_raw_path(record, dir, "logits.txt")).unwrap();
    let cpu = gpu_raw(record, dir, "greedy-cpu-f32.json").unwrap();
    let hf = gpu_raw(record, dir, "transformers.json").unwrap();
    for dt in ["f32", "f16", "bf16"] {
        let check = line_with(&logits, &format!("dtype={dt} "));
        let field = |key: &str| {
            check
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .unwrap()
                .to_string()
        };
        let ours = gpu_raw(record, dir, &format!("greedy-cuda-{dt}.json")).unwrap();
        let tps = 20.0 / ours["seconds_cached"].as_f64().unwrap();
        let theirs = hf[dt]["tokens_per_s"].as_f64().unwrap();
        let cap = |b: bool| if b { "True" } else { "False" };
        let row = format!(
            "| {dt} | {} | {} | {} | ",
            field("max_abs_diff"),
            field("tol"),
            check.split_whitespace().last().unwrap()
        );
        let tail = format!(
            "| {} | {} | {tps:.1} | {theirs:.1} | {:.2} |",
            cap(ours["generated_ids"] == cpu["generated_ids"]),
            cap(ours["generated_ids"] == hf[dt]["ids"]),
            tps / theirs
        );
        let line = line_with(&report, &format!("| {dt} | "));
        assert!(
            line.starts_with(&row) && line.ends_with(&tail),
            "report.md: {line}\nwants {row} ... {tail}"
        );
    }
    let long = &gpu_raw(record, dir, "bench-long.json").unwrap()["train"];
    let sentence = format!(
        "Long run: {} mixed-bf16 training steps on one 500-token input: loss {:.4} -> {:.4}, {:.0} tokens/s (median).",
        long["times"].as_array().unwrap().len() + 1,
        long["loss_first"].as_f64().unwrap(),
        long["loss_last"].as_f64().unwrap(),
        long["tokens_per_s"].as_f64().unwrap()
    );
    assert!(report.contains(&sentence), "report.md wants {sentence}");
}

/// Every figure of the GPU record's tables, recomputed from the raw outputs beside them: the
/// fine-tune loops (rates, ratios, peak device memory, the run that ran out of memory), the
/// training step and decoding against PyTorch, and the dropout experiment.
#[test]
fn gpu_record_tables_are_the_raw_figures() {
    let loops = [
        ("finetune.md", "run1-finetune"),
        ("finetune-max_length-512.md", "run2-max_length-512"),
        ("finetune-longest-1024.md", "run2-longest-1024"),
    ];
    assert_eq!(
        loop_tables_are_the_raw_figures(GPU_RECORD, &loops),
        2,
        "the jokes loop in f16 and bf16"
    );

    report_is_the_raw_figures(GPU_RECORD, "run1-log");

    let dropout = gpu_table(GPU_RECORD, "dropout.md");
    let rate = |name| {
        gpu_raw(GPU_RECORD, "run3-dropout", name).unwrap()["train_output"]["metrics"]
            ["train_samples_per_second"]
            .as_f64()
            .unwrap()
    };
    let base = rate("gpt2.json");
    for (name, attn, rest) in [
        ("gpt2.json", "0.1", "0.1"),
        ("nodrop-attn.json", "0", "0.1"),
        ("nodrop-all.json", "0", "0"),
    ] {
        let m = &gpu_raw(GPU_RECORD, "run3-dropout", name).unwrap()["train_output"]["metrics"];
        let row = format!(
            "| {attn} | {rest} | {:.2} | {:.2} | {:.2}x |",
            rate(name),
            m["train_runtime"].as_f64().unwrap(),
            rate(name) / base
        );
        assert!(dropout.contains(&row), "dropout.md wants {row}");
    }
}

/// The second GPU run (an H100, the loops re-timed with dropout drawn on the device) and the
/// third (an H200, the whole experiment again): every table against the raw outputs, the
/// first-use compile each table reports, the dropout checks' own lines, and the third run's
/// losses, which are the second's exactly (the same code on the GPU).
#[test]
fn later_gpu_records_are_their_raw_figures() {
    let loops = [
        ("finetune-run1.md", "run1-finetune"),
        ("finetune-run2.md", "run2-finetune"),
        ("finetune-run2-longest-1024.md", "run2-longest-1024"),
        ("finetune.md", "run4-finetune"),
    ];
    assert_eq!(loop_tables_are_the_raw_figures(GPU_RECORD_2, &loops), 5);
    let r = GPU_RECORD_3;
    let (log, ft, longest) = ("log", "finetune", "longest-1024");
    report_is_the_raw_figures(r, log);
    let loops = [("finetune.md", ft), ("finetune-longest-1024.md", longest)];
    assert_eq!(loop_tables_are_the_raw_figures(r, &loops), 3);
    let report = gpu_table(r, "report.md");
    // report.md ends with call 1's fine-tune table, as finetune.md has it.
    assert!(report.contains(gpu_table(r, "finetune.md").trim()));
    let read = |record: &str, dir: &str, name: &str| {
        std::fs::read_to_string(gpu_raw_path(record, dir, name))
            .unwrap()
            .trim()
            .to_string()
    };
    for (record, md, dir) in [
        (GPU_RECORD_2, "finetune.md", "run4-finetune"),
        (r, "finetune.md", ft),
        (r, "finetune-longest-1024.md", longest),
    ] {
        let said = format!(
            "(16 rows, max_length 64) took {} s:",
            read(record, dir, "warmup.seconds")
        );
        assert!(gpu_table(record, md).contains(&said), "{md} wants {said}");
    }
    let dropout = read(r, log, "dropout.txt");
    let masks: Vec<&str> = dropout
        .lines()
        .filter_map(|l| l.strip_prefix("gpu-check dropout "))
        .collect();
    assert_eq!(masks.len(), 3);
    for line in &masks {
        assert!(line.ends_with(" ok"), "{line}");
        assert!(report.contains(&format!("- {line}")), "report.md: {line}");
    }
    let same_losses: [(&str, &str, &str, &[&str]); 5] = [
        (ft, "jokes-candle-f16.json", "run4-finetune", &["losses"]),
        (ft, "jokes-candle-bf16.json", "run1-finetune", &["losses"]),
        (
            ft,
            "imdb-candle.json",
            "run4-finetune",
            &["train_output", "training_loss"],
        ),
        (
            ft,
            "imdb-candle.json",
            "run4-finetune",
            &["eval", "eval_loss"],
        ),
        (
            longest,
            "imdb-candle.json",
            "run2-longest-1024",
            &["train_output", "training_loss"],
        ),
    ];
    for (dir, name, h100_dir, path) in same_losses {
        let at = |v: Value| path.iter().fold(&v, |v, k| &v[*k]).clone();
        let here = at(gpu_raw(r, dir, name).unwrap());
        assert!(!here.is_null(), "{dir}/{name}: no {path:?}");
        assert_eq!(
            here,
            at(gpu_raw(GPU_RECORD_2, h100_dir, name).unwrap()),
            "{dir}/{name} {path:?}"
        );
    }
}

/// The GPU figures chapters 6 and 7 quote, each in a fragment of `chapters/generated/` the
/// chapter includes: the latest run's loops (rates, ratios, peak device memory) and, from the
/// first run, what transformers needed at the tutorial's own IMDB setting (16 rows of 1,024
/// tokens), where this crate ran out of the GPU's memory.
#[test]
fn gpu_figures_the_chapters_quote() {
    let gpu = |dir: &str, name: &str, path: &[&str]| gpu_number(GPU_RECORD_3, dir, name, path);
    let gmib = |record: &str, dir: &str, name: &str| {
        group_digits(gpu_peak_mib(record, dir, name) as usize)
    };
    let (gjc, gjt) = (
        gpu("finetune", "jokes-candle-f16.json", &["jokes_per_second"]),
        gpu("finetune", "jokes-torch-f16.json", &["jokes_per_second"]),
    );
    let (gic, git) = (
        gpu(
            "finetune",
            "imdb-candle.json",
            &["train_output", "metrics", "train_samples_per_second"],
        ),
        gpu("finetune", "imdb-torch.json", &["train_samples_per_second"]),
    );
    // "## The fine-tune loops against PyTorch, 2026-11-27, cuda (NVIDIA H200, 580.159.04)"
    let heading = gpu_table(GPU_RECORD_3, "finetune.md");
    let heading = heading.lines().next().unwrap();
    let date = heading.split(", ").nth(1).unwrap();
    let card = heading
        .split('(')
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    // The first run's Trainer at the tutorial's 16 x 1,024 ran out of the GPU's memory.
    assert!(gpu_raw(GPU_RECORD, "run1-finetune", "imdb-candle.json").is_none());
    let f = |name: &str, value: String| common::fragment(name, &value);
    f("bench_gpu_machine.md", format!("one {card} on {date}"));
    f("bench_jokes_gpu_crate.md", format!("{gjc:.2}"));
    f("bench_jokes_gpu_pytorch.md", format!("{gjt:.2}"));
    f("bench_jokes_gpu_ratio.md", format!("{:.2}x", gjc / gjt));
    f(
        "bench_jokes_gpu_peak_mib.md",
        gmib(GPU_RECORD_3, "finetune", "jokes-candle-f16.json"),
    );
    f(
        "bench_jokes_gpu_pytorch_peak_mib.md",
        gmib(GPU_RECORD_3, "finetune", "jokes-torch-f16.json"),
    );
    f("bench_imdb_gpu_crate.md", format!("{gic:.2}"));
    f("bench_imdb_gpu_pytorch.md", format!("{git:.2}"));
    f("bench_imdb_gpu_ratio.md", format!("{:.2}x", gic / git));
    f(
        "bench_imdb_gpu_peak_mib.md",
        gmib(GPU_RECORD_3, "finetune", "imdb-candle.json"),
    );
    f(
        "bench_imdb_gpu_pytorch_peak_mib.md",
        gmib(GPU_RECORD_3, "finetune", "imdb-torch.json"),
    );
    f(
        "bench_imdb_gpu_1024_pytorch_peak_mib.md",
        gmib(GPU_RECORD, "run1-finetune", "imdb-torch.json"),
    );
    // The driver's first compile of candle's PTX on the H100: the short first-use run, and the
    // first process of the diagnosis run, which paid it inside its training time.
    let warmup = std::fs::read_to_string(gpu_raw_path(
        GPU_RECORD_2,
        "run4-finetune",
        "warmup.seconds",
    ))
    .unwrap();
    let diag = std::fs::read_to_string(gpu_raw_path(GPU_RECORD_2, "", "run3-diag.txt")).unwrap();
    let words: Vec<&str> = line_with(&diag, "max_length=128 rows=48")
        .split_whitespace()
        .collect();
    let at = words.iter().position(|w| *w == "train_runtime").unwrap();
    let first: f64 = words[at + 1].parse().unwrap();
    f(
        "bench_gpu_first_use_seconds.md",
        format!("{} to {first:.0}", warmup.trim()),
    );
}
