#!/usr/bin/env bash
# Chapter 7's padding measurement: the IMDB example's default run (the tutorial's arguments,
# bundled tiny model and 240 sentences, max_length 1024) once padded to max_length and once per
# batch (longest), on the CPU. Writes benchmarks/imdb-padding-<date>.md with the machine, the
# commands and each run's TrainOutput; tests/trainer.rs checks chapter 7 quotes that record.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
date=$(date -u +%Y-%m-%d)
out=benchmarks/imdb-padding-$date.md
cargo build --release --example 07_imdb_finetune >/dev/null 2>&1
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
simd=$(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || echo "AVX2, no AVX-512")
{
    echo "# IMDB example: padding to max_length vs per batch"
    echo
    echo "Recorded $(date -u '+%Y-%m-%d %H:%M UTC') at $(git rev-parse --short HEAD) on $cpu ($(nproc) cores, $simd), f32, release."
    echo
    echo "| padding | train_samples_per_second | train_runtime (s) | total_flos |"
    echo "|---|---|---|---|"
} >"$out"
for padding in max_length longest; do
    json=$(./target/release/examples/07_imdb_finetune --device cpu --quiet --json --padding "$padding" \
        --out "target/bench-imdb-$padding")
    echo "$json" | python3 -c '
import json, sys
t = json.load(sys.stdin)["train_output"]
m = t.get("metrics", t)
print("| `%s` | %.1f | %.1f | %d |" % (sys.argv[1], m["train_samples_per_second"], m["train_runtime"], m["total_flos"]))
' "$padding" >>"$out"
done
cat "$out"
