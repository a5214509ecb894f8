#!/usr/bin/env python3
"""This crate against Hugging Face transformers, in one run on one machine.

Builds `examples/bench.rs` in release mode, writes the random benchmark models (the crate's own
initialisation, real GPT-2 shapes) into target/bench-models/, then runs the two sides in turn,
round after round, on the same weights and the same number of threads, and prints the medians
and their ratios against the goals of issue 6. The raw figures go to target/bench-results-<malloc>.json.

    python3 scripts/bench.py                       # gpt2, 3 rounds
    python3 scripts/bench.py --sizes gpt2,gpt2-medium --rounds 5
    python3 scripts/bench.py --malloc tuned        # both sides with glibc's malloc tuned
    python3 scripts/bench.py --figures jokes,imdb,memory --rounds 3   # the fine-tunes (bench_finetune.py)
    python3 scripts/bench.py --current             # benchmarks/current-*.md from benchmarks/current.json

Take figures on a quiet machine: the script prints the load average and refuses to start above
--max-load unless told otherwise.

`--malloc tuned` runs both processes with GLIBC_TUNABLES set so that freed memory is kept for
reuse and backed by huge pages (see TUNED_MALLOC). Both frameworks allocate a fresh buffer for
most operations; with glibc's defaults every buffer over 32 MiB is mapped from the kernel and
zero-filled page by page, and given back on free.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys

import bench_finetune

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "target/release/examples/bench"
PYTHON_SIDE = ROOT / "scripts/reference/bench_transformers.py"
MODELS = ROOT / "target/bench-models"

# Goals of issue 6: the crate's tokens/s over transformers'.
GOALS = {
    "decode": 1.5,
    "prefill": 1.0,
    "train": 1.0,
}
CACHED_OVER_NAIVE_GOAL = 5.0
TUNED_MALLOC = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000"
RSS_GOAL = 1.3


def cpu_model():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_simd():
    flags = pathlib.Path("/proc/cpuinfo").read_text()
    return "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512"


def run_json(cmd, env=None):
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs, figure):
    times = [t for r in runs if figure in r for t in r[figure]["times"]]
    return statistics.median(times) if times else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="gpt2", help="comma-separated: gpt2, gpt2-medium")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    p.add_argument("--reps", type=int, default=2, help="timed repetitions per figure and run")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both sides")
    p.add_argument("--figures", default="decode,naive,prefill,train",
                   help="any of decode, naive, prefill, train, train-candle-adamw (the crate's train with "
                        "candle_nn::AdamW); or the fine-tune figures, recorded on their own: jokes, imdb, memory")
    p.add_argument("--check-up-to", default="gpt2-large",
                   help="memory: check the computed 24 GiB fit with one step up to this size (gpt2-xl takes long)")
    p.add_argument("--malloc", choices=["default", "tuned"], default="default",
                   help="glibc malloc settings for both sides")
    p.add_argument("--max-load", type=float, default=0.5, help="refuse to start above this 1-minute load")
    p.add_argument("--force", action="store_true", help="start whatever the load")
    p.add_argument("--record", metavar="PREFIX",
                   help="also write PREFIX.json (the raw figures) and PREFIX.md (the tables), e.g. "
                        "benchmarks/cpu-2026-11-25; tests/benchmarks.rs recomputes every row of the tables from "
                        "the raw figures, and --current takes the current tables' rows from them")
    p.add_argument("--from-results", metavar="FILE",
                   help="run nothing: render the tables of a results file this script wrote (with --record, record them)")
    p.add_argument("--current", action="store_true",
                   help="run nothing: write benchmarks/current-*.md, one table per kind of machine, from the rows "
                        "of the records benchmarks/current.json names")
    args = p.parse_args()
    if args.current:
        write_current()
        return
    if args.from_results:
        results = json.loads((ROOT / args.from_results).read_text())
        if "finetune" in results:
            table = "\n".join(bench_finetune.tables(results))
            print(table)
            if args.record:
                record(args.record, results, [table])
            return
        tables = ["\n".join(table_lines(size, r["candle"], r["transformers"], *r["rss"], results["machine"]))
                  for size, r in results["sizes"].items()]
        print("\n\n".join(tables))
        if args.record:
            record(args.record, results, tables)
        return

    load1 = os.getloadavg()[0]
    if load1 > args.max_load and not args.force:
        sys.exit(f"load average {load1:.2f} > {args.max_load}: the machine is busy; wait, or pass --force")
    subprocess.run(["cargo", "build", "--release", *bench_finetune.FEATURES, "--example", "bench"], cwd=ROOT, check=True)

    base = dict(os.environ)
    if args.malloc == "tuned":
        base["GLIBC_TUNABLES"] = TUNED_MALLOC
    else:
        base.pop("GLIBC_TUNABLES", None)
    env = dict(base, RAYON_NUM_THREADS=str(args.threads))
    machine = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "cpu": cpu_model(),
        "simd": cpu_simd(),
        "nproc": os.cpu_count(),
        "threads": args.threads,
        "load_at_start": load1,
        "malloc": args.malloc,
    }
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    results = {"machine": machine, "command": " ".join(["python3", "scripts/bench.py", *sys.argv[1:]]),
               "commit": commit.stdout.strip() or "unknown"}
    figures = args.figures.split(",")
    finetune = [f for f in figures if f in ("jokes", "imdb", "memory")]
    if finetune:
        if len(finetune) != len(figures):
            sys.exit("the fine-tune figures (jokes, imdb, memory) are recorded on their own: run them apart")
        machine["rounds"] = args.rounds
        results["finetune"] = bench_finetune.run(finetune, args.rounds, args.threads, env, base, args.check_up_to)
        table = "\n".join(bench_finetune.tables(results))
        print("\n" + table)
        out = ROOT / f"target/bench-finetune-results-{args.malloc}.json"
        out.write_text(json.dumps(results, indent=1))
        print(f"\nraw figures: {out.relative_to(ROOT)}")
        if args.record:
            record(args.record, results, [table])
        return
    results["sizes"] = {}
    tables = []
    for size in args.sizes.split(","):
        subprocess.run([str(BENCH), "prepare", "--size", size], cwd=ROOT, check=True)
        model_dir = MODELS / size
        candle, torch = [], []
        for r in range(args.rounds):
            print(f"[{size}] round {r + 1}/{args.rounds}", file=sys.stderr)
            common = ["--reps", str(args.reps), "--figures", args.figures]
            candle.append(run_json([str(BENCH), "run", "--size", size, *common], env))
            torch.append(run_json([sys.executable, str(PYTHON_SIDE), "run", "--model-dir", str(model_dir),
                                   "--threads", str(args.threads), *common], base))
        rss_c = run_json([str(BENCH), "rss", "--size", size], env)
        rss_t = run_json([sys.executable, str(PYTHON_SIDE), "rss", "--model-dir", str(model_dir),
                          "--threads", str(args.threads)], base)
        results["sizes"][size] = {"candle": candle, "transformers": torch, "rss": [rss_c, rss_t]}
        table = table_lines(size, candle, torch, rss_c, rss_t, machine)
        print("\n" + "\n".join(table))
        tables.append("\n".join(table))

    out = ROOT / f"target/bench-results-{args.malloc}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"\nraw figures: {out.relative_to(ROOT)}")
    if args.record:
        record(args.record, results, tables)


def record(prefix, results, tables):
    """PREFIX.json with the raw figures, PREFIX.md with the tables printed from them."""
    path = ROOT / prefix
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    path.with_suffix(".md").write_text(
        f"<!-- scripts/bench.py --from-results {prefix}.json writes this again; tests/benchmarks.rs "
        f"checks it against the raw figures. Measured with: {results.get('command', 'scripts/bench.py')} "
        f"at commit {results.get('commit', 'unknown')} -->\n\n"
        + "\n\n".join(tables) + "\n")
    print(f"recorded: {prefix}.json, {prefix}.md")


def table_lines(size, candle, torch, rss_c, rss_t, machine):
    """The results of one size as markdown: a heading line, the table, and two notes."""
    lines = []
    tokens = {"decode": 64, "naive": 64, "prefill": 500, "train": 500, "train_candle_adamw": 500}
    names = {
        "decode": "decode, 64 tokens, KV cache (tokens/s)",
        "naive": "naive loop, 64 tokens, no cache (tokens/s)",
        "prefill": "prefill, one forward of 500 tokens (tokens/s)",
        "train": "training step, 500 tokens (tokens/s)",
        "train_candle_adamw": "training step with candle_nn::AdamW (tokens/s)",
    }
    lines.append(f"{size}, f32, batch 1, {machine['threads']} threads, {machine['cpu']} ({machine['nproc']} cores), "
                 f"{machine['date']}, {machine['malloc']} malloc, load {machine['load_at_start']:.2f} at start:")
    lines.append("")
    lines.append("| figure | this crate | transformers | ratio | goal |")
    lines.append("|---|---:|---:|---:|---|")
    secs = {}
    for fig, n in tokens.items():
        # The candle_nn::AdamW variant is compared with the same transformers step.
        c, t = median_of(candle, fig), median_of(torch, "train" if fig == "train_candle_adamw" else fig)
        if c is None or t is None:
            continue
        secs[fig] = (c, t)
        ratio = t / c
        goal = GOALS.get(fig)
        mark = "" if goal is None else f"≥ {goal} {'met' if ratio >= goal else 'NOT met'}"
        lines.append(f"| {names[fig]} | {n / c:.1f} | {n / t:.1f} | {ratio:.2f}x | {mark} |")
    if "decode" in secs and "naive" in secs:
        sc = secs["naive"][0] / secs["decode"][0]
        st = secs["naive"][1] / secs["decode"][1]
        ok = "met" if sc >= CACHED_OVER_NAIVE_GOAL else "NOT met"
        lines.append(f"| cached over naive loop (speed-up) | {sc:.1f}x | {st:.1f}x | | ≥ {CACHED_OVER_NAIVE_GOAL} {ok} |")
    mib = 1 << 20
    rc, rt = rss_c["rss_over_weights"], rss_t["rss_over_weights"]
    ok = "met" if rc <= RSS_GOAL else "NOT met"
    lines.append(f"| peak RSS of inference (MiB; × weights {rss_c['weights_bytes'] / mib:.0f} MiB) | "
                 f"{rss_c['peak_rss_bytes'] / mib:.0f} ({rc:.2f}x) | {rss_t['peak_rss_bytes'] / mib:.0f} ({rt:.2f}x) | "
                 f"{rt / rc:.2f}x | ≤ {RSS_GOAL}x {ok} |")
    variants = {fig: torch[0][fig].get("variant") for fig in tokens if fig in torch[0]}
    phases = {k: round(statistics.median([r["train"][k] for r in candle if "train" in r]), 2)
              for k in ("forward_s", "backward_s", "forward_backward_s", "optimizer_s")
              if any(k in r.get("train", {}) for r in candle)}
    if phases:
        lines.append("")
        lines.append(f"This crate's training step, median seconds by phase: {phases}.")
    lines.append("")
    lines.append(f"transformers' fastest variants (the figure above is the fastest): {variants}.")
    return lines


def record_rows(results):
    """Every table row of a record, as --from-results renders it (the header and notes left out)."""
    if "finetune" in results:
        lines = bench_finetune.tables(results)
    else:
        lines = [line for size, r in results["sizes"].items()
                 for line in table_lines(size, r["candle"], r["transformers"], *r["rss"], results["machine"])]
    return [line for line in lines if line.startswith("| ") and not line.startswith("| figure")]


def current_row(name, results, prefix):
    """The row of record `name` whose figure starts with `prefix`, its goal cell replaced by the record's
    date and commit; an inference figure names its model size."""
    found = [line for line in record_rows(results) if line.startswith(f"| {prefix}")]
    if len(found) != 1:
        sys.exit(f"{name}: {len(found)} rows start with {prefix!r}")
    cells = [c.strip() for c in found[0].strip().strip("|").split("|")]
    if "sizes" in results:
        (size,) = results["sizes"]
        cells[0] = f"{cells[0]}, {size}"
    when = f"{results['machine']['date'][:10]}, {results.get('commit', 'unknown')}"
    return "| " + " | ".join(cells[:4] + [when]) + " |"


def write_current():
    """benchmarks/current-KIND.md for each kind of machine in benchmarks/current.json: the latest
    recorded figures of that machine in one table, each row copied from its record's table."""
    spec = json.loads((ROOT / "benchmarks/current.json").read_text())
    for kind, table in spec["tables"].items():
        records = {name: json.loads((ROOT / f"benchmarks/{name}.json").read_text()) for name, _ in table["rows"]}
        machines = {(r["machine"]["cpu"], r["machine"]["nproc"], r["machine"]["threads"]) for r in records.values()}
        if len(machines) != 1:
            sys.exit(f"{kind}: the records come from different machines: {machines}")
        # A record made before `simd` was recorded for every run has none; the older ones say less.
        simd = {r["machine"]["simd"] for r in records.values() if "simd" in r["machine"]}
        if not all(table["simd"].startswith(s) for s in simd):
            sys.exit(f"{kind}: current.json says {table['simd']!r}, a record says otherwise: {simd}")
        ((cpu, nproc, threads),) = machines
        lines = [f"<!-- scripts/bench.py --current writes this from benchmarks/current.json and the records it names; "
                 f"tests/benchmarks.rs checks every row against their raw figures. -->", "",
                 f"{cpu}, {nproc} cores, {table['simd']}; both sides on {threads} threads, random weights, "
                 f"f32 and gpt2-size unless the row says otherwise, default malloc:",
                 "", "| figure | this crate | PyTorch | ratio (> 1: this crate ahead) | recorded |", "|---|---:|---:|---:|---|"]
        lines += [current_row(name, records[name], prefix) for name, prefix in table["rows"]]
        out = ROOT / f"benchmarks/current-{kind}.md"
        out.write_text("\n".join(lines) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
