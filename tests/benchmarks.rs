//! Every performance figure the README and the book show comes from a recorded run: the raw
//! times of both sides in `benchmarks/*.json` (`scripts/bench.py`) or a GPU record's `raw/`
//! (`scripts/gpu_run.sh`). These tests recompute every row of the recorded tables from those raw
//! figures, exactly as the scripts do, check the current tables (`benchmarks/current-*.md`) row
//! for row against the records they name and the README's table against its file, and compute
//! the figures the chapters quote into `chapters/generated/` fragments. No sentence is asserted,
//! and nothing here is timed.

mod common;

use std::path::PathBuf;

use gpt2_tutorial::tutorial::architecture::group_digits;
use serde_json::Value;

fn benchmarks_dir() -> PathBuf {
    common::root().join("benchmarks")
}

/// Python's `statistics.median` of every timed repetition of `figure` over all rounds.
fn median(runs: &Value, figure: &str) -> Option<f64> {
    let times: Vec<f64> = runs
        .as_array()?
        .iter()
        .filter_map(|r| r.get(figure))
        .flat_map(|f| f["times"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_f64().expect("times are numbers"))
        .collect();
    (!times.is_empty()).then(|| median_of(times))
}

/// The table rows `scripts/bench.py` prints for one size.
fn rows(size: &Value) -> Vec<String> {
    let (candle, torch) = (&size["candle"], &size["transformers"]);
    let figures = [
        (
            "decode",
            "decode, 64 tokens, KV cache (tokens/s)",
            64.0,
            Some(("1.5", 1.5)),
        ),
        (
            "naive",
            "naive loop, 64 tokens, no cache (tokens/s)",
            64.0,
            None,
        ),
        (
            "prefill",
            "prefill, one forward of 500 tokens (tokens/s)",
            500.0,
            Some(("1.0", 1.0)),
        ),
        (
            "train",
            "training step, 500 tokens (tokens/s)",
            500.0,
            Some(("1.0", 1.0)),
        ),
    ];
    let mut out = Vec::new();
    let mut secs = std::collections::HashMap::new();
    for (fig, name, n, goal) in figures {
        let (Some(c), Some(t)) = (median(candle, fig), median(torch, fig)) else {
            continue;
        };
        secs.insert(fig, (c, t));
        let ratio = t / c;
        let mark = match goal {
            None => String::new(),
            Some((text, g)) => format!("≥ {text} {}", if ratio >= g { "met" } else { "NOT met" }),
        };
        out.push(format!(
            "| {name} | {:.1} | {:.1} | {ratio:.2}x | {mark} |",
            n / c,
            n / t
        ));
    }
    if let (Some(d), Some(nv)) = (secs.get("decode"), secs.get("naive")) {
        let (sc, st) = (nv.0 / d.0, nv.1 / d.1);
        let ok = if sc >= 5.0 { "met" } else { "NOT met" };
        out.push(format!(
            "| cached over naive loop (speed-up) | {sc:.1}x | {st:.1}x | | ≥ 5.0 {ok} |"
        ));
    }
    let (rc, rt) = (&size["rss"][0], &size["rss"][1]);
    let mib = (1u64 << 20) as f64;
    let f = |v: &Value, k: &str| v[k].as_f64().expect("a number");
    let (oc, ot) = (f(rc, "rss_over_weights"), f(rt, "rss_over_weights"));
    out.push(format!(
        "| peak RSS of inference (MiB; × weights {:.0} MiB) | {:.0} ({oc:.2}x) | {:.0} ({ot:.2}x) | {:.2}x | ≤ 1.3x {} |",
        f(rc, "weights_bytes") / mib,
        f(rc, "peak_rss_bytes") / mib,
        f(rt, "peak_rss_bytes") / mib,
        ot / oc,
        if oc <= 1.3 { "met" } else { "NOT met" },
    ));
    out
}

/// Python's `statistics.median` of a list of numbers.
fn median_of(mut xs: Vec<f64>) -> f64 {
    assert!(!xs.is_empty());
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn goal_mark(ratio: f64) -> String {
    format!("≥ 1.2 {}", if ratio >= 1.2 { "met" } else { "NOT met" })
}

/// Each timed fine-tune figure of a record, in the order its table prints them: its name
/// ("jokes f32", "max_length train"), this crate's median rate and PyTorch's, as
/// `scripts/bench_finetune.py` computes them (for the jokes loop PyTorch's faster attention per
/// round, then the median over rounds).
fn finetune_rates(results: &Value) -> Vec<(String, f64, f64)> {
    let f = &results["finetune"];
    let field = |runs: &Value, key: &str| -> Vec<f64> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r[key].as_f64().expect("a number"))
            .collect()
    };
    let mut out = Vec::new();
    if let Some(jokes) = f["jokes"].as_object() {
        for (dtype, e) in jokes {
            let c = median_of(field(&e["candle"], "jokes_per_second"));
            let t = median_of(
                e["pytorch"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|variants| {
                        field(variants, "jokes_per_second")
                            .into_iter()
                            .fold(f64::MIN, f64::max)
                    })
                    .collect(),
            );
            out.push((format!("jokes {dtype}"), c, t));
        }
    }
    if let Some(imdb) = f["imdb"].as_object() {
        for (padding, e) in imdb {
            for what in ["train", "eval"] {
                let key = format!("{what}_samples_per_second");
                let c = median_of(field(&e["candle"], &key));
                let t = median_of(field(&e["transformers"], &key));
                out.push((format!("{padding} {what}"), c, t));
            }
        }
    }
    out
}

/// A fine-tune record of `benchmarks/` by file name.
fn record(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(benchmarks_dir().join(name)).unwrap()).unwrap()
}

/// One timed figure of a fine-tune record: (this crate's rate, PyTorch's).
fn finetune_rate(name: &str, figure: &str) -> (f64, f64) {
    finetune_rates(&record(name))
        .into_iter()
        .find(|(n, _, _)| n == figure)
        .map(|(_, c, t)| (c, t))
        .unwrap_or_else(|| panic!("{name} has no figure {figure:?}"))
}

/// The fine-tune table rows `scripts/bench_finetune.py` prints (`tables`), from the raw runs.
fn finetune_rows(results: &Value) -> Vec<String> {
    let f = &results["finetune"];
    let num = |v: &Value| v.as_f64().expect("a number");
    let mut out = Vec::new();
    let max_length = &f["settings"]["imdb"]["max_length"];
    for (name, c, t) in finetune_rates(results) {
        let label = match name.split_once(' ') {
            Some(("jokes", dtype)) => {
                let s = &f["settings"]["jokes"][dtype];
                format!(
                    "jokes loop, tutorial recipe, {dtype}, {} sequences x {} steps (jokes/s)",
                    s["accumulate"], s["steps"]
                )
            }
            Some((padding, what)) => format!(
                "IMDB Trainer, padding {padding} (max_length {max_length}), {what} (samples/s)"
            ),
            None => unreachable!("{name}"),
        };
        out.push(format!(
            "| {label} | {c:.2} | {t:.2} | {:.2}x | {} |",
            c / t,
            goal_mark(c / t)
        ));
    }
    let mib = (1u64 << 20) as f64;
    if let Some(memory) = f["memory"].as_object() {
        for (key, e) in memory {
            let (c, t) = (
                num(&e["candle"]["peak_rss_bytes"]),
                num(&e["pytorch"]["peak_rss_bytes"]),
            );
            out.push(format!(
                "| peak RSS of the jokes loop, {key} (MiB) | {:.0} | {:.0} | {:.2}x | ≤ PyTorch's {} |",
                c / mib,
                t / mib,
                t / c,
                if c <= t { "met" } else { "NOT met" }
            ));
        }
    }
    if let Some(fits) = f["fits"].as_object() {
        for (dtype, e) in fits {
            let largest = |side: &str| e[side]["largest"].as_str().unwrap_or("none").to_string();
            // The largest size is the straight line through the two measured sizes, recomputed.
            for side in ["candle", "pytorch"] {
                let point = |size: &str, p: f64| {
                    (
                        p,
                        num(&f["memory"][format!("{size} {dtype}")][side]["peak_rss_bytes"]),
                    )
                };
                let ((p1, r1), (p2, r2)) = (
                    point("gpt2", 124_439_808.0),
                    point("gpt2-medium", 354_823_168.0),
                );
                let b = (r2 - r1) / (p2 - p1);
                let a = r1 - b * p1;
                let fitting = [
                    ("gpt2", 124_439_808.0),
                    ("gpt2-medium", 354_823_168.0),
                    ("gpt2-large", 774_030_080.0),
                    ("gpt2-xl", 1_557_611_200.0),
                ]
                .into_iter()
                .rev()
                .find(|(_, p)| a + b * p <= (24u64 << 30) as f64)
                .map_or("none", |(s, _)| s);
                assert_eq!(
                    fitting,
                    largest(side),
                    "{dtype} {side}: the largest size that fits"
                );
            }
            out.push(format!(
                "| largest GPT-2 to fine-tune in 24 GiB, {dtype} (computed) | {} | {} | | |",
                largest("candle"),
                largest("pytorch")
            ));
        }
    }
    if let Some(checks) = f["fit_checks"].as_object() {
        for (key, e) in checks {
            let rss = num(&e["peak_rss_bytes"]);
            out.push(format!(
                "| one step of the jokes loop, {key}: peak RSS (MiB) | {:.0} | | | ≤ 24576 {} |",
                rss / mib,
                if rss <= (24u64 << 30) as f64 {
                    "met"
                } else {
                    "NOT met"
                }
            ));
        }
    }
    out
}

fn recorded() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(benchmarks_dir())
        .expect("benchmarks/ holds the recorded runs")
        .map(|e| e.unwrap().path())
        // Every record but `current.json`, which names rows of records.
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("current.json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no recorded benchmark in benchmarks/");
    files
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect()
}

#[test]
fn recorded_tables_are_the_raw_figures() {
    for (json, results) in recorded() {
        let md = std::fs::read_to_string(json.with_extension("md"))
            .unwrap_or_else(|e| panic!("{}: {e}", json.with_extension("md").display()));
        if results.get("finetune").is_some() {
            let rows = finetune_rows(&results);
            assert!(!rows.is_empty(), "{}: nothing was measured", json.display());
            for row in rows {
                assert!(md.contains(&row), "{}: missing row\n{row}", json.display());
            }
            continue;
        }
        let sizes = results["sizes"].as_object().expect("sizes");
        assert!(!sizes.is_empty());
        for (name, size) in sizes {
            let rows = rows(size);
            // At least one timed figure and the memory row (a run may time a subset).
            assert!(rows.len() >= 2, "{name}: nothing was measured");
            for row in rows {
                assert!(
                    md.contains(&row),
                    "{}: {name}: missing row\n{row}",
                    json.display()
                );
            }
        }
    }
}

/// The rows of a record's tables as `scripts/bench.py --from-results` renders them.
fn record_rows(results: &Value) -> Vec<String> {
    match results.get("sizes") {
        Some(sizes) => sizes.as_object().unwrap().values().flat_map(rows).collect(),
        None => finetune_rows(results),
    }
}

/// One row of a current table, as `scripts/bench.py --current` writes it: the record's row whose
/// figure starts with `prefix`, the goal cell replaced by the record's date and commit, an
/// inference figure naming its model size.
fn current_row(name: &str, results: &Value, prefix: &str) -> String {
    let found: Vec<String> = record_rows(results)
        .into_iter()
        .filter(|r| r.starts_with(&format!("| {prefix}")))
        .collect();
    assert_eq!(found.len(), 1, "{name}: rows starting with {prefix:?}");
    let mut cells: Vec<String> = found[0]
        .trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect();
    if let Some(sizes) = results.get("sizes").and_then(Value::as_object) {
        assert_eq!(sizes.len(), 1, "{name}: one size per current row's record");
        cells[0] = format!("{}, {}", cells[0], sizes.keys().next().unwrap());
    }
    let date = &results["machine"]["date"].as_str().unwrap()[..10];
    let commit = results["commit"].as_str().unwrap_or("unknown");
    cells.truncate(4);
    cells.push(format!("{date}, {commit}"));
    format!("| {} |", cells.join(" | "))
}

/// `benchmarks/current.json`: for each kind of machine, the rows of the records its current table
/// shows.
fn current_spec() -> Value {
    record("current.json")
}

/// The table lines (header and rows) of a markdown file.
fn table_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with('|')).collect()
}

/// Each current table is the rows of the records it names, recomputed from their raw figures,
/// in the order `current.json` lists them; its heading names the records' CPU, the flags
/// `current.json` gives it, which every record that recorded its flags agrees with, and the
/// threads both sides ran on.
#[test]
fn current_tables_are_their_records_rows() {
    let spec = current_spec();
    let tables = spec["tables"].as_object().unwrap();
    assert!(tables.contains_key("cpu-avx2") && tables.contains_key("cpu-avx512"));
    for (kind, table) in tables {
        let path = benchmarks_dir().join(format!("current-{kind}.md"));
        let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let simd = table["simd"].as_str().unwrap();
        let mut want = Vec::new();
        for spec_row in table["rows"].as_array().unwrap() {
            let (name, prefix) = (spec_row[0].as_str().unwrap(), spec_row[1].as_str().unwrap());
            let results = record(&format!("{name}.json"));
            let m = &results["machine"];
            let heading = format!(
                "{}, {} cores, {simd}; both sides on {} threads",
                m["cpu"].as_str().unwrap(),
                m["nproc"],
                m["threads"]
            );
            assert!(md.contains(&heading), "{kind}: wants {heading:?}");
            if let Some(recorded) = m["simd"].as_str() {
                assert!(simd.starts_with(recorded), "{kind}: {name} says {recorded}");
            }
            want.push(current_row(name, &results, prefix));
        }
        let got: Vec<&str> = table_lines(&md).into_iter().skip(2).collect();
        assert_eq!(
            got, want,
            "{kind}: run `python3 scripts/bench.py --current`"
        );
    }
}

/// The README's one performance table is a current table, copied verbatim (the README cannot
/// include a file): its heading line and every table line, one after the other.
#[test]
fn readme_table_is_a_current_table() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let md = std::fs::read_to_string(benchmarks_dir().join("current-cpu-avx2.md")).unwrap();
    let block: Vec<&str> = md
        .lines()
        .skip_while(|l| l.starts_with("<!--") || l.is_empty())
        .collect();
    let block = block.join("\n");
    assert!(
        readme.contains(block.trim()),
        "README.md should hold benchmarks/current-cpu-avx2.md's table as it is:\n{block}"
    );
}

/// The `x86-v4` A/B (scripts/bench_gemm_v4.sh keeps only its table): every ratio is its row's
/// two figures divided, the training step is among them, and the performance page shows it.
#[test]
fn the_gemm_ab_table_is_consistent() {
    let name = "gemm-x86-v4-2026-11-26.md";
    let md = std::fs::read_to_string(benchmarks_dir().join(name)).unwrap();
    let rows: Vec<Vec<&str>> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    assert!(rows.iter().any(|r| r[0].starts_with("training step")));
    for r in &rows {
        let (with, without): (f64, f64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
        // The figures are rounded to 0.1, the ratio computed before rounding.
        let ratio: f64 = r[3].trim_end_matches('x').parse().unwrap();
        let (lo, hi) = (
            (with - 0.05) / (without + 0.05),
            (with + 0.05) / (without - 0.05),
        );
        assert!(
            lo - 0.005 <= ratio && ratio <= hi + 0.005,
            "{}: {ratio} vs {with}/{without}",
            r[0]
        );
    }
}

/// Five epochs of the tutorial's 231,657 jokes: the tutorial's own run.
const TUTORIAL_JOKES: f64 = 5.0 * 231_657.0;

/// The CPU figures chapters 6 and 7 quote from the benchmark records, each in a fragment of
/// `chapters/generated/` the chapter includes: the latest runs of the two loops, the hours a
/// full run of the tutorial's jokes loop would take at that rate, and peak memory
/// (`tests/gpu_records.rs` writes the GPU's).
#[test]
fn cpu_figures_the_chapters_quote() {
    let machine = |name: &str| {
        let r = record(name);
        let m = &r["machine"];
        format!(
            "a {}-core {} ({}) on {}, commit {}",
            m["nproc"],
            m["cpu"].as_str().unwrap(),
            m["simd"].as_str().unwrap(),
            &m["date"].as_str().unwrap()[..10],
            r["commit"].as_str().unwrap()
        )
    };
    let (jokes, imdb) = (JOKES_RECORD, IMDB_RECORD);
    let (jc, jt) = finetune_rate(jokes, "jokes f32");
    let (ic, it) = finetune_rate(imdb, "max_length train");
    let memory = record(MEMORY_RECORD);
    let peak = |side: &str| {
        let bytes = memory["finetune"]["memory"]["gpt2 f32"][side]["peak_rss_bytes"]
            .as_f64()
            .unwrap();
        group_digits((bytes / (1u64 << 20) as f64).round() as usize)
    };
    let f = |name: &str, value: String| common::fragment(name, &value);
    f("bench_jokes_cpu_machine.md", machine(jokes));
    f("bench_jokes_cpu_crate.md", format!("{jc:.2}"));
    f("bench_jokes_cpu_pytorch.md", format!("{jt:.2}"));
    f("bench_jokes_cpu_ratio.md", format!("{:.2}x", jc / jt));
    f(
        "bench_jokes_full_run_hours.md",
        format!("{:.0}", TUTORIAL_JOKES / jc / 3600.0),
    );
    f("bench_jokes_cpu_peak_mib.md", peak("candle"));
    f("bench_jokes_cpu_pytorch_peak_mib.md", peak("pytorch"));
    f("bench_memory_cpu_machine.md", machine(MEMORY_RECORD));
    f("bench_imdb_cpu_machine.md", machine(imdb));
    f("bench_imdb_cpu_crate.md", format!("{ic:.2}"));
    f("bench_imdb_cpu_pytorch.md", format!("{it:.2}"));
    f("bench_imdb_cpu_ratio.md", format!("{:.2}x", ic / it));
}

/// The CPU records the chapters quote: the latest jokes loop (on the machine without AVX-512),
/// the latest IMDB Trainer and memory runs (on the AVX-512 machine without AMX).
const JOKES_RECORD: &str = "cpu-2026-12-05-jokes-after-layout.json";
const IMDB_RECORD: &str = "cpu-2026-11-27-finetune-packed.json";
const MEMORY_RECORD: &str = "cpu-2026-11-27-memory-packed.json";
