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

# Chapter 6: the default jokes fine-tune (fixed recipe, bundled model and jokes), whose loss
# falls visibly on its own axis: its history and figure.
out=target/book-figures/06
rm -rf "$out"
cargo run --release --example 06_jokes_finetune -- --quiet --out "$out" >/dev/null
cp "$out/history.csv" chapters/figures/06_history.csv
cp "$out/loss_lr.svg" chapters/figures/06_loss_lr.svg

# Chapter 7: the book's IMDB run (tests/trainer.rs's BOOK_RUN) - its history (training loss,
# eval accuracy, eval loss) and figure.
out=target/book-figures/07
rm -rf "$out"
cargo run --release --example 07_imdb_finetune -- --model bundled --device cpu --quiet --out "$out" \
    --lr 1e-3 --epochs 6 --padding longest --max-length 64 --logging-steps 15 >/dev/null
cp "$out/history.json" chapters/figures/07_imdb_history.json
cp "$out/loss_accuracy.svg" chapters/figures/07_imdb_loss_accuracy.svg
