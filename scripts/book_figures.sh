#!/usr/bin/env bash
# Redraws every figure the book commits (chapters/figures/*.svg) from the bundled model and
# data, offline. The examples write their figures under target/ by default, so running one never
# changes the book; this script is the one place that does. Tests compare each committed figure
# with what the code draws now, and their failure messages name this script.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

cargo run --release --example 03_greedy -- --model bundled --device cpu \
    --figure chapters/figures/03_top10.svg >/dev/null
