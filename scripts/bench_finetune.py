"""The fine-tune figures of scripts/bench.py (`--figures jokes,imdb,memory`): chapter 6's and
chapter 7's loops against their PyTorch originals, in one run on one machine.

- jokes: `06_jokes_finetune --recipe tutorial` against the tutorial's own loop
  (scripts/reference/bench_jokes_loop.py), on the gpt2-size random model `bench prepare` writes
  and the bundled jokes repeated to JOKE_ROWS rows, a fixed seed and a fixed number of optimizer
  steps; f32, and bf16 where the CPU has bf16 instructions (avx512_bf16 or AMX). PyTorch runs
  with "eager" and "sdpa" attention and is credited with the faster, with its fastest AdamW
  (fused, the tutorial's eps).
- imdb: `07_imdb_finetune` against transformers' Trainer (scripts/reference/bench_imdb_trainer.py)
  with the tutorial's TrainingArguments (so no evaluation during training and no checkpoint in
  so short a run: transformers' defaults, which the example's `--eval-strategy no
  --save-strategy no` select), padded to max_length and per batch (longest), at a CPU-sized
  max_length, on the same rows in the same order: train samples/s as each side's `train()`
  reports it, eval samples/s as its `evaluate()` does.
- memory: the peak resident memory of a training process (the jokes loop, one sequence per
  step) for gpt2 and gpt2-medium in f32 and bf16, each side measured the same way (the child's
  rusage); from those, a straight line per side and precision gives the largest GPT-2 that fits
  in 24 GiB, and one step of the crate's loop at that size checks it (up to --check-up-to).

Every figure is the median over --rounds rounds, the sides alternating within a round.
"""

import json
import os
import shutil
import pathlib
import statistics
import subprocess
import sys
import threading

ROOT = pathlib.Path(__file__).resolve().parents[1]
RELEASE = ROOT / "target/release/examples"
MODELS = ROOT / "target/bench-models"
DATA = ROOT / "target/bench-data"
JOKES_REF = ROOT / "scripts/reference/bench_jokes_loop.py"
IMDB_REF = ROOT / "scripts/reference/bench_imdb_trainer.py"

# The crate's release build as a user on this machine would make it fastest: with the gemm
# crate's AVX-512 kernels (the `avx512` feature; they are chosen only on a CPU that has them).
FEATURES = ["--features", "avx512"]
JOKE_ROWS = 1000
# Both sides: the tutorial recipe (16 sequences per step) with fewer sequences per step, so that
# a round takes a minute; the same in both precisions (bf16 once had one sequence per step, when
# the crate's bf16 products were candle's scalar loops).
JOKES = {
    "f32": {"accumulate": 4, "steps": 2},
    "bf16": {"accumulate": 4, "steps": 2},
}
IMDB = {"max_length": 128, "train_rows": 96, "eval_rows": 80, "epochs": 1, "batch_size": 16,
        "eval_batch_size": 64}
PADDINGS = ["max_length", "longest"]
MEMORY_SIZES = ["gpt2", "gpt2-medium"]
PARAMETERS = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
              "gpt2-xl": 1_557_611_200}
BUDGET = 24 << 30
GOAL = 1.2
ATTENTION = ["eager", "sdpa"]


def cpu_has_bf16():
    flags = pathlib.Path("/proc/cpuinfo").read_text().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def rusage_run(cmd, env):
    """`cmd` as a child whose peak RSS we read from wait4; returns (parsed JSON, peak RSS bytes)."""
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Not communicate(), which reaps the child itself: read the pipes (stderr through a thread,
    # so that neither pipe fills), then wait4 on the pid for its rusage.
    err_chunks = []
    reader = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()))
    reader.start()
    out = p.stdout.read()
    reader.join()
    err = err_chunks[0]
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}")
    text = out.decode(errors="replace").strip()
    value = json.loads(text) if text.startswith("{\n") else json.loads(text.splitlines()[-1])
    return value, usage.ru_maxrss * 1024


def prepare(sizes):
    for size in sizes:
        subprocess.run([str(RELEASE / "bench"), "prepare", "--size", size], cwd=ROOT, check=True)
    DATA.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq
    jokes = pq.read_table(ROOT / "data/jokes-sample/jokes.parquet").column("Joke").to_pylist()
    rows = [jokes[i % len(jokes)] for i in range(JOKE_ROWS)]
    pq.write_table(pa.table({"ID": list(range(1, JOKE_ROWS + 1)), "Joke": rows}), DATA / "jokes.parquet")


def crate_jokes(size, dtype, s, env, out):
    cmd = [str(RELEASE / "06_jokes_finetune"), "--model", str(MODELS / size), "--data",
           str(DATA / "jokes.parquet"), "--recipe", "tutorial", "--dtype", dtype, "--accumulate",
           str(s["accumulate"]), "--max-steps", str(s["steps"]), "--quiet", "--json", "--out", str(out)]
    r, rss = rusage_run(cmd, env)
    shutil.rmtree(out, ignore_errors=True)  # its checkpoint: gigabytes a run at the larger sizes
    return {"jokes_per_second": r["jokes_per_second"], "sequences": r["sequences"],
            "optimizer_steps": r["optimizer_steps"], "losses": r["losses"], "peak_rss_bytes": rss}


def torch_jokes(size, dtype, s, attention, threads, env):
    cmd = [sys.executable, str(JOKES_REF), "--model-dir", str(MODELS / size), "--data",
           str(DATA / "jokes.parquet"), "--threads", str(threads), "--dtype", dtype, "--accumulate",
           str(s["accumulate"]), "--steps", str(s["steps"]), "--attention", attention]
    r, rss = rusage_run(cmd, env)
    return {"jokes_per_second": r["jokes_per_second"], "sequences": r["sequences"],
            "optimizer_steps": r["optimizer_steps"], "losses": r["losses"], "peak_rss_bytes": rss,
            "attention": attention}


def crate_imdb(padding, env, out):
    a = IMDB
    cmd = [str(RELEASE / "07_imdb_finetune"), "--model", str(MODELS / "gpt2"), "--data", "bundled",
           "--device", "cpu", "--quiet", "--json", "--padding", padding, "--max-length", str(a["max_length"]),
           "--train-limit", str(a["train_rows"]), "--eval-limit", str(a["eval_rows"]), "--epochs",
           str(a["epochs"]), "--batch-size", str(a["batch_size"]), "--eval-batch-size",
           str(a["eval_batch_size"]), "--eval-strategy", "no", "--save-strategy", "no", "--out", str(out)]
    r, rss = rusage_run(cmd, env)
    m = r["train_output"]["metrics"]
    return {"train_samples_per_second": m["train_samples_per_second"], "train_runtime": m["train_runtime"],
            "eval_samples_per_second": r["eval"]["eval_samples_per_second"], "total_flos": m["total_flos"],
            "peak_rss_bytes": rss}


def torch_imdb(padding, threads, env):
    a = IMDB
    cmd = [sys.executable, str(IMDB_REF), "--model-dir", str(MODELS / "gpt2"), "--padding", padding,
           "--max-length", str(a["max_length"]), "--train-rows", str(a["train_rows"]), "--eval-rows",
           str(a["eval_rows"]), "--epochs", str(a["epochs"]), "--batch-size", str(a["batch_size"]),
           "--eval-batch-size", str(a["eval_batch_size"]), "--threads", str(threads)]
    r, rss = rusage_run(cmd, env)
    return {"train_samples_per_second": r["train_samples_per_second"], "train_runtime": r["train_runtime"],
            "eval_samples_per_second": r["eval_samples_per_second"], "total_flos": r["total_flos"],
            "peak_rss_bytes": rss, "attention": r.get("attention")}


def alternate(label, rounds, sides):
    """Each side's results over `rounds` rounds, every round running each side once, in order, so
    that a slow spell of the machine falls on both sides alike."""
    entry = {name: [] for name in sides}
    for r in range(rounds):
        print(f"[{label}] round {r + 1}/{rounds}", file=sys.stderr)
        for name, side in sides.items():
            entry[name].append(side())
    return entry


def run(figures, rounds, threads, env, base, check_up_to):
    """Runs the fine-tune figures; returns the raw results (the "finetune" part of the record)."""
    subprocess.run(["cargo", "build", "--release", *FEATURES, "--example", "bench", "--example",
                    "06_jokes_finetune", "--example", "07_imdb_finetune"], cwd=ROOT, check=True)
    prepare(["gpt2"] + (["gpt2-medium"] if "memory" in figures else []))
    out = ROOT / "target/bench-finetune"
    res = {"settings": {"jokes": JOKES, "joke_rows": JOKE_ROWS, "imdb": IMDB, "bf16_cpu": cpu_has_bf16()}}
    dtypes = ["f32"] + (["bf16"] if cpu_has_bf16() else [])
    if "jokes" in figures:
        res["jokes"] = {}
        for dtype in dtypes:
            res["jokes"][dtype] = alternate(f"jokes {dtype}", rounds, {
                "candle": lambda: crate_jokes("gpt2", dtype, JOKES[dtype], env, out / "jokes"),
                "pytorch": lambda: [torch_jokes("gpt2", dtype, JOKES[dtype], a, threads, base) for a in ATTENTION],
            })
    if "imdb" in figures:
        res["imdb"] = {}
        for padding in PADDINGS:
            res["imdb"][padding] = alternate(f"imdb {padding}", rounds, {
                "candle": lambda: crate_imdb(padding, env, out / f"imdb-{padding}"),
                "transformers": lambda: torch_imdb(padding, threads, base),
            })
    if "memory" in figures:
        res["memory"] = {}
        one = {"accumulate": 1, "steps": 1}
        for dtype in dtypes:
            for size in MEMORY_SIZES:
                print(f"[memory {dtype} {size}]", file=sys.stderr)
                res["memory"][f"{size} {dtype}"] = {
                    "candle": crate_jokes(size, dtype, one, env, out / "memory"),
                    "pytorch": torch_jokes(size, dtype, one, "sdpa", threads, base),
                }
        res["fits"] = fits(res["memory"], dtypes)
        res["fit_checks"] = {}
        for dtype in dtypes:
            size = res["fits"][dtype]["candle"]["largest"]
            if size and size not in MEMORY_SIZES and PARAMETERS[size] <= PARAMETERS[check_up_to]:
                print(f"[memory check {dtype} {size}]", file=sys.stderr)
                prepare([size])
                res["fit_checks"][f"{size} {dtype}"] = crate_jokes(size, dtype, one, env, out / "memory")
    return res


def fits(memory, dtypes):
    """Per side and precision: peak RSS = a + b × parameters through the two measured sizes, and
    the largest GPT-2 whose predicted peak is within 24 GiB."""
    out = {}
    for dtype in dtypes:
        out[dtype] = {}
        for side in ("candle", "pytorch"):
            (p1, r1), (p2, r2) = [(PARAMETERS[s], memory[f"{s} {dtype}"][side]["peak_rss_bytes"])
                                  for s in MEMORY_SIZES]
            b = (r2 - r1) / (p2 - p1)
            a = r1 - b * p1
            predicted = {s: a + b * p for s, p in PARAMETERS.items()}
            fitting = [s for s, v in predicted.items() if v <= BUDGET]
            out[dtype][side] = {"bytes_per_parameter": b, "fixed_bytes": a, "predicted_peak_bytes": predicted,
                                "largest": fitting[-1] if fitting else None}
    return out


# ----- tables ---------------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs)


def best_torch(runs):
    """Per round, PyTorch's faster attention; then the median over rounds."""
    return med([max(r["jokes_per_second"] for r in variants) for variants in runs])


def mark(ratio, goal=GOAL):
    return f"≥ {goal} {'met' if ratio >= goal else 'NOT met'}"


def tables(results):
    """The fine-tune tables as markdown lines (tests/benchmarks.rs recomputes every row)."""
    f = results["finetune"]
    m = results["machine"]
    lines = [f"Fine-tuning, {m['threads']} threads, {m['cpu']} ({m['nproc']} cores, {m['simd']}), {m['date']}, "
             f"{m['malloc']} malloc, load {m['load_at_start']:.2f} at start; gpt2-size random weights "
             f"(the crate's initialisation), median of {m['rounds']} rounds:", "",
             "| figure | this crate | PyTorch | ratio | goal |", "|---|---:|---:|---:|---|"]
    for dtype, e in f.get("jokes", {}).items():
        s = f["settings"]["jokes"][dtype]
        c, t = med([r["jokes_per_second"] for r in e["candle"]]), best_torch(e["pytorch"])
        lines.append(f"| jokes loop, tutorial recipe, {dtype}, {s['accumulate']} sequences x {s['steps']} steps "
                     f"(jokes/s) | {c:.2f} | {t:.2f} | {c / t:.2f}x | {mark(c / t)} |")
    for padding, e in f.get("imdb", {}).items():
        ml = f["settings"]["imdb"]["max_length"]
        for what in ("train", "eval"):
            key = f"{what}_samples_per_second"
            c, t = med([r[key] for r in e["candle"]]), med([r[key] for r in e["transformers"]])
            lines.append(f"| IMDB Trainer, padding {padding} (max_length {ml}), {what} (samples/s) | {c:.2f} | "
                         f"{t:.2f} | {c / t:.2f}x | {mark(c / t)} |")
    mib = 1 << 20
    for key, e in f.get("memory", {}).items():
        c, t = e["candle"]["peak_rss_bytes"], e["pytorch"]["peak_rss_bytes"]
        ok = "met" if c <= t else "NOT met"
        lines.append(f"| peak RSS of the jokes loop, {key} (MiB) | {c / mib:.0f} | {t / mib:.0f} | {t / c:.2f}x | "
                     f"≤ PyTorch's {ok} |")
    for dtype, e in f.get("fits", {}).items():
        c, t = e["candle"], e["pytorch"]
        lines.append(f"| largest GPT-2 to fine-tune in 24 GiB, {dtype} (computed) | {c['largest'] or 'none'} | "
                     f"{t['largest'] or 'none'} | | |")
    for key, e in f.get("fit_checks", {}).items():
        lines.append(f"| one step of the jokes loop, {key}: peak RSS (MiB) | {e['peak_rss_bytes'] / mib:.0f} | | | "
                     f"≤ 24576 {'met' if e['peak_rss_bytes'] <= BUDGET else 'NOT met'} |")
    if "jokes" in f:
        lines += ["", "PyTorch's faster attention per round (jokes): "
                  + str({d: [max(v, key=lambda r: r['jokes_per_second'])['attention'] for v in e['pytorch']]
                         for d, e in f['jokes'].items()}) + "."]
    return lines
