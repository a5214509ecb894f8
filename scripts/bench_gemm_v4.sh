#!/usr/bin/env bash
# The A/B of the gemm crate's `x86-v4` feature (its AVX-512 kernels, chosen at run time) on an
# AVX-512 machine: builds the bench example with this crate's `avx512` feature (which turns it
# on) into target/release and without it into target/gemm-ab, then times both binaries'
# decoding, prefill, training step and matmul profile in alternation. Writes
# benchmarks/gemm-x86-v4-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qw avx512f /proc/cpuinfo || { echo "no AVX-512 on this CPU: nothing to compare" >&2; exit 1; }
rounds=${ROUNDS:-3}
date=$(date -u +%Y-%m-%d)
out=benchmarks/gemm-x86-v4-$date.md
ab=target/gemm-ab
cargo build --release --features avx512 --example bench >/dev/null 2>&1
CARGO_TARGET_DIR=$ab/target cargo build --release --example bench >/dev/null 2>&1
./target/release/examples/bench prepare --size gpt2 2>/dev/null
export RAYON_NUM_THREADS=$(nproc)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
results=$(mktemp)
for r in $(seq "$rounds"); do
    for side in with without; do
        bin=./target/release/examples/bench
        [ "$side" = without ] && bin=$ab/target/release/examples/bench
        step=$($bin run --size gpt2 --reps 2 --figures decode,prefill,train)
        prof=$($bin profile --reps 5)
        echo "{\"side\": \"$side\", \"train\": $step, \"profile\": $prof}" >>"$results"
    done
done
python3 - "$results" "$out" "$cpu" "$rounds" "$(git describe --always --dirty)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, cpu, rounds, commit = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def med(side, f):
    return statistics.median([f(r) for r in rows if r["side"] == side])
lines = [f"# gemm's `x86-v4` feature (AVX-512 kernels) in the training step", "",
         f"Recorded by scripts/bench_gemm_v4.sh at {commit} on {cpu} (AVX-512), gpt2-size random model, f32, "
         f"{rounds} rounds alternating the two builds; medians.", "",
         "| figure | with x86-v4 | without | ratio |", "|---|---:|---:|---:|"]
names = {"decode": "decode, 64 tokens, KV cache (tokens/s)", "prefill": "prefill, 500 tokens (tokens/s)",
         "train": "training step, 500 tokens (tokens/s)"}
for fig, name in names.items():
    w = med("with", lambda r: r["train"][fig]["tokens_per_s"]); o = med("without", lambda r: r["train"][fig]["tokens_per_s"])
    lines.append(f"| {name} | {w:.1f} | {o:.1f} | {w / o:.2f}x |")
for k in sorted(rows[0]["profile"]):
    if k.startswith("matmul") or k.startswith("gemv"):
        w = med("with", lambda r: r["profile"][k]); o = med("without", lambda r: r["profile"][k])
        unit = "GFLOP/s" if k.startswith("matmul") else "GB/s of weights"
        lines.append(f"| {k} ({unit}) | {w:.1f} | {o:.1f} | {w / o:.2f}x |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
rm -f "$results"
