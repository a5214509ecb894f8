#!/usr/bin/env bash
# The GPU run, end to end: this crate on CUDA in f32, f16 and bf16 against the CPU, and against
# transformers (PyTorch) on the same GPU with the same weights. Prints a table with the date and
# the device, and writes it to WORK/report.md.
#
#   scripts/gpu_run.sh                         # build with --features cuda, then run on cuda
#   scripts/gpu_run.sh --build-only            # only build: WORK/bin, and WORK/gpu-bin.tar.xz to carry
#   scripts/gpu_run.sh --bin-archive FILE      # on a GPU machine without Rust: unpack and run those
#   scripts/gpu_run.sh --bin-dir DIR           # run prebuilt binaries from DIR
#   scripts/gpu_run.sh --device cpu            # the same steps on the CPU (checks the script)
#
# Options: --device cuda|cuda:N|cpu (default cuda), --work DIR (default target/gpu-run),
# --max-new-tokens N (default 20, the tutorial's), --bench-reps N (default 5), --train-steps N
# (default 200), --bench-precisions "LIST" (default "f32 mixed-bf16 mixed-f16 bf16"), --python PY
# (default python3), --finetune-size SIZE (default gpt2-xl, the tutorial's), --finetune-accumulate N
# (default 16), --finetune-steps N (default 2), --finetune-dtypes "LIST" (default "f16 bf16"),
# --imdb-max-length N (default 1024), --imdb-padding max_length|longest (default max_length, the
# tutorial's), --imdb-rows "TRAIN EVAL" (default "240 80"), --run-timeout S
# (default 240: the limit of each fine-tune run), --skip-finetune, --only-finetune.
#
# Steps:
#  1. binaries: 03_greedy, 06_jokes_finetune, 07_imdb_finetune, bench (if it exists) and the
#     dtypes test binary, built with the `cuda`
#     feature (the toolkit from scripts/cuda-build-env.sh) or taken from --bin-archive/--bin-dir;
#  2. gpt2-size random weights (transformers' own initialisation, seed 0), written once;
#  3. logits on the device in f32/f16/bf16 against the CPU's f32 (tests/dtypes.rs,
#     gpu_logits_match_cpu: f32 within 1e-3, f16 within 5e-3 and bf16 within 3e-2 of the largest
#     |logit|; the reasons are beside the constants there), and dropout masks drawn on the
#     device (gpu_dropout_masks_are_seeded_and_scaled);
#  4. 03_greedy on the device in each dtype: next token, greedy ids against the CPU, decode speed;
#  5. the bench example against scripts/reference/bench_transformers.py on the device: decoding
#     and a 500-token training step in f32, mixed-bf16, mixed-f16 and pure bf16, then a run of
#     TRAIN_STEPS training steps (mixed-bf16) whose first and last losses are reported;
#  6. transformers' greedy `generate` on the same device, weights and prompt ids, in each dtype;
#  7. the table;
#  8. the fine-tune loops against PyTorch on the same device (WORK/finetune.md, appended to the
#     report): on a GPU, one short untimed run first, which pays the driver's one-time compile of
#     candle's PTX kernels (the table says how long it took); then chapter 7's `07_imdb_finetune` against transformers' Trainer
#     (scripts/reference/bench_imdb_trainer.py) on gpt2-size weights with the tutorial's
#     arguments (f32, padding to max_length 1,024) on the bundled 240 train and 80 test reviews;
#     then chapter 6's `06_jokes_finetune --recipe tutorial` against the tutorial's own loop
#     (scripts/reference/bench_jokes_loop.py) on FINETUNE_SIZE-size random weights (the crate's
#     initialisation, `bench prepare`), pure f16 (the tutorial's `model.half()`) and pure bf16,
#     ACCUMULATE sequences x OPT_STEPS optimizer steps of the bundled jokes repeated to 1,000 rows.
#     Each run has its own time limit; one that fails or runs out is reported as such.
# At run time the binaries need the CUDA driver and CUDA 13's runtime, cuBLAS, cuRAND and NVRTC;
# PyTorch's cu13 wheels (nvidia/cu13/lib) or /usr/local/cuda/lib64 provide them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DEVICE=cuda
WORK="$ROOT/target/gpu-run"
BIN_DIR=""
BIN_ARCHIVE=""
BUILD_ONLY=0
MAX_NEW=20
BENCH_REPS=5
TRAIN_STEPS=200
BENCH_PRECISIONS="f32 mixed-bf16 mixed-f16 bf16"
PY=python3
FINETUNE=1
ONLY_FINETUNE=0
FT_SIZE=gpt2-xl
FT_ACCUMULATE=16
FT_STEPS=2
FT_DTYPES="f16 bf16"
IMDB_MAX_LENGTH=1024
IMDB_PADDING=max_length
IMDB_ROWS="240 80"
RUN_TIMEOUT=240
while [ $# -gt 0 ]; do
    case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --bin-archive) BIN_ARCHIVE="$2"; shift 2 ;;
    --build-only) BUILD_ONLY=1; shift ;;
    --max-new-tokens) MAX_NEW="$2"; shift 2 ;;
    --bench-reps) BENCH_REPS="$2"; shift 2 ;;
    --train-steps) TRAIN_STEPS="$2"; shift 2 ;;
    --bench-precisions) BENCH_PRECISIONS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --finetune-size) FT_SIZE="$2"; shift 2 ;;
    --finetune-accumulate) FT_ACCUMULATE="$2"; shift 2 ;;
    --finetune-steps) FT_STEPS="$2"; shift 2 ;;
    --finetune-dtypes) FT_DTYPES="$2"; shift 2 ;;
    --imdb-max-length) IMDB_MAX_LENGTH="$2"; shift 2 ;;
    --imdb-padding) IMDB_PADDING="$2"; shift 2 ;;
    --imdb-rows) IMDB_ROWS="$2"; shift 2 ;;
    --run-timeout) RUN_TIMEOUT="$2"; shift 2 ;;
    --skip-finetune) FINETUNE=0; shift ;;
    --only-finetune) ONLY_FINETUNE=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_run: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in
cpu | cuda | cuda:[0-9]*) ;;
*) echo "gpu_run: --device $DEVICE: expected cpu, cuda or cuda:N" >&2; exit 2 ;;
esac
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
LOG="$WORK/log"
mkdir -p "$LOG"
say() { echo "gpu_run: $*" >&2; }

# --- 1. binaries ------------------------------------------------------------------------------
# Builds with cargo and copies the executables into WORK/bin: the examples by name, the dtypes
# test binary (whose file name carries a hash) as `dtypes`.
collect_binaries() {
    local features=() target
    if [ "$DEVICE" != cpu ]; then
        # shellcheck source=scripts/cuda-build-env.sh
        source scripts/cuda-build-env.sh
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda}"
        features=(--features cuda)
    fi
    target="${CARGO_TARGET_DIR:-$ROOT/target}"
    local examples=(--example 03_greedy --example 06_jokes_finetune --example 07_imdb_finetune)
    [ -f examples/bench.rs ] && examples+=(--example bench)
    nice -n 19 cargo build --locked --release "${features[@]}" "${examples[@]}"
    local tests_json
    tests_json="$(nice -n 19 cargo test --locked --release "${features[@]}" --test dtypes --no-run --message-format=json)"
    mkdir -p "$WORK/bin"
    local ex
    for ex in 03_greedy bench 06_jokes_finetune 07_imdb_finetune; do
        if [ -x "$target/release/examples/$ex" ]; then
            cp "$target/release/examples/$ex" "$WORK/bin/$ex"
        fi
    done
    echo "$tests_json" | "$PY" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "dtypes":
        print(m["executable"])' | head -n 1 | xargs -I{} cp {} "$WORK/bin/dtypes"
    # Line tables are for local debugging; without them the binaries carry in far less space.
    strip "$WORK/bin"/* 2>/dev/null || true
    say "binaries in $WORK/bin: $(cd "$WORK/bin" && echo *) ($(du -sh "$WORK/bin" | cut -f1))"
}

if [ -n "$BIN_ARCHIVE" ]; then
    rm -rf "${WORK:?}/bin"
    tar -xJf "$BIN_ARCHIVE" -C "$WORK"
    BIN_DIR="$WORK/bin"
elif [ -z "$BIN_DIR" ]; then
    collect_binaries
    BIN_DIR="$WORK/bin"
fi
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
if [ "$BUILD_ONLY" = 1 ]; then
    # Each CUDA binary is over 50 MB even stripped (candle's kernels are inside), and what can be
    # carried to a GPU machine is limited. Most of each binary is the same kernels: with a
    # dictionary larger than the tar (xz's default is 8 MiB) the copies compress away, 284 MB
    # to 12 MB rather than 42 MB (it needs that much memory to pack, and to unpack).
    tar -c -C "$WORK" bin | xz -T1 --lzma2=preset=6,dict=320MiB >"$WORK/gpu-bin.tar.xz"
    say "to carry: $WORK/gpu-bin.tar.xz ($(du -h "$WORK/gpu-bin.tar.xz" | cut -f1)); run it with --bin-archive"
    exit 0
fi
if [ "$ONLY_FINETUNE" = 0 ]; then
    for need in 03_greedy dtypes; do
        [ -x "$BIN_DIR/$need" ] || { say "$BIN_DIR/$need is missing: build with scripts/gpu_run.sh --build-only"; exit 1; }
    done
fi

if [ "$DEVICE" != cpu ]; then
    # CUDA 13's libraries from PyTorch's wheels and the system toolkit, whichever exist.
    nvlibs="$("$PY" -c 'import os, nvidia
print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)"
    export LD_LIBRARY_PATH="${nvlibs:+$nvlibs:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    probe="$BIN_DIR/03_greedy"
    [ -x "$probe" ] || probe="$BIN_DIR/06_jokes_finetune"
    if ldd "$probe" | grep -q 'not found'; then
        say "libraries not found for $probe:"
        ldd "$probe" | grep 'not found' >&2
        say "install PyTorch's CUDA 13 wheels or the CUDA 13 toolkit, or add their lib folder to LD_LIBRARY_PATH"
        exit 1
    fi
    # `cuda` is GPU 0; nvidia-smi -i wants the bare index.
    GPU_INDEX=0
    case "$DEVICE" in cuda:*) GPU_INDEX="${DEVICE#cuda:}" ;; esac
    DEVICE_DESC="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "$GPU_INDEX")"
    DEVICE_DESC="$DEVICE ($DEVICE_DESC)"
else
    DEVICE_DESC="cpu ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores)"
fi
TORCH_DEVICE="$DEVICE"
[ "$DEVICE" = cuda ] && TORCH_DEVICE=cuda:0

# --- 8. the fine-tune loops against PyTorch (defined here, run after the table) -----------------
# One side's run: its stdout (one JSON object) to FILE, stderr to FILE.err, exit status to
# FILE.rc, under RUN_TIMEOUT seconds; on a GPU, the device memory in use while it ran (nvidia-smi
# every 200 ms) to FILE.mem, whose largest value the table shows.
ft_side() { # file command...
    local file="$1" poll="" rc=0
    shift
    if [ "$DEVICE" != cpu ]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU_INDEX" -lms 200 \
            >"$file.mem" 2>/dev/null &
        poll=$!
    fi
    timeout "$RUN_TIMEOUT" "$@" >"$file" 2>"$file.err" || rc=$?
    if [ -n "$poll" ]; then
        kill "$poll" 2>/dev/null || true
        wait "$poll" 2>/dev/null || true
    fi
    echo "$rc" >"$file.rc"
    if [ "$rc" != 0 ]; then
        say "$(basename "$file"): exit $rc$([ "$rc" = 124 ] && echo " (over $RUN_TIMEOUT s)") - see $file.err"
    fi
}

# The table of what has run so far, to WORK/finetune.md (rewritten after each run, so that a run
# cut short still leaves the figures before it); a run not made yet reads "not run".
finetune_table() {
    # shellcheck disable=SC2086 # IMDB_ROWS is meant to split into its two numbers
    "$PY" - "$WORK/finetune" "$DEVICE_DESC" "$FT_SIZE" "$FT_ACCUMULATE" "$FT_STEPS" "$FT_DTYPES" "$IMDB_PADDING" \
        "$IMDB_MAX_LENGTH" $IMDB_ROWS >"$WORK/finetune.md" <<'PY'
import datetime, json, os, sys
ft, desc, size, acc, steps, dtypes, padding, max_length, train_rows, eval_rows = sys.argv[1:]

def side(name):
    """(parsed JSON or None, a note on what went wrong, peak device MiB or None)."""
    path = os.path.join(ft, name)
    if not os.path.exists(path + ".rc"):
        return None, "not run", None
    rc = open(path + ".rc").read().strip()
    mem = None
    if os.path.exists(path + ".mem"):
        vals = [int(v) for v in open(path + ".mem").read().split() if v.isdigit()]
        mem = max(vals) if vals else None
    if rc != "0":
        err = open(path + ".err", errors="replace").read().strip().splitlines() if os.path.exists(path + ".err") else []
        why = "over the time limit" if rc == "124" else f"exit {rc}"
        # The error's own line (a backtrace follows it), else the last one.
        said = [l for l in err if l.startswith(("Error", "error"))] or err[-1:]
        return None, f"failed ({why}: {said[0][:160] if said else 'no output'})", mem
    text = open(path).read().strip()
    try:
        return (json.loads(text) if text.startswith("{\n") else json.loads(text.splitlines()[-1])), "", mem
    except (ValueError, IndexError):
        return None, "failed (no JSON)", mem

def cell(v, fmt="{:.2f}"):
    return fmt.format(v) if v is not None else "-"

print(f"## The fine-tune loops against PyTorch, {datetime.date.today().isoformat()}, {desc}\n")
print("| loop | this crate | PyTorch | crate / PyTorch | losses, crate (first -> last) | losses, PyTorch "
      "| peak device MiB, crate | peak device MiB, PyTorch |")
print("|---|---:|---:|---:|---|---|---:|---:|")
for dt in dtypes.split():
    (c, cn, cm), (t, tn, tm) = side(f"jokes-candle-{dt}.json"), side(f"jokes-torch-{dt}.json")
    cv = c["jokes_per_second"] if c else None
    tv = t["jokes_per_second"] if t else None
    ratio = f"{cv / tv:.2f}x" if cv and tv else "-"
    cl = f"{c['losses'][0]:.4f} -> {c['losses'][-1]:.4f}" if c and c.get("losses") else cn or "-"
    tl = f"{t['losses'][0]:.4f} -> {t['losses'][-1]:.4f}" if t and t.get("losses") else tn or "-"
    print(f"| jokes, tutorial recipe, {size}, {'' if dt == 'f32' else 'pure '}{dt}, {acc} sequences x {steps} steps (jokes/s) "
          f"| {cell(cv) if c else cn} | {cell(tv) if t else tn} | {ratio} | {cl} | {tl} | {cell(cm, '{}')} | {cell(tm, '{}')} |")
(c, cn, cm), (t, tn, tm) = side("imdb-candle.json"), side("imdb-torch.json")
for what in ("train", "eval"):
    cv = (c["train_output"]["metrics"]["train_samples_per_second"] if what == "train"
          else c["eval"]["eval_samples_per_second"]) if c else None
    tv = t[f"{what}_samples_per_second"] if t else None
    ratio = f"{cv / tv:.2f}x" if cv and tv else "-"
    if what == "train":
        cl = f"train loss {c['train_output']['training_loss']:.4f}" if c and "training_loss" in c.get("train_output", {}) else cn or "-"
        tl = f"train loss {t['train_loss']:.4f}" if t else tn or "-"
    else:
        cl = f"eval loss {c['eval']['eval_loss']:.4f}" if c else "-"
        tl = f"eval loss {t['eval_loss']:.4f}" if t else "-"
    print(f"| IMDB Trainer, gpt2, f32, padding {padding} (max_length {max_length}), {train_rows} train / {eval_rows} eval rows, "
          f"{what} (samples/s) | {cell(cv) if c else cn} | {cell(tv) if t else tn} | {ratio} | {cl} | {tl} "
          f"| {cell(cm, '{}') if what == 'train' else ''} | {cell(tm, '{}') if what == 'train' else ''} |")
print(f"\nJokes: random {size}-size weights (the crate's initialisation, `bench prepare`), the bundled jokes "
      "repeated to 1,000 rows; the crate's `06_jokes_finetune --recipe tutorial` against the tutorial's loop as "
      "printed (scripts/reference/bench_jokes_loop.py: sdpa attention, `torch.optim.AdamW(fused=True)` with the "
      "tutorial's eps), both with the model cast to the dtype (`model.half()` for f16); jokes read per second of "
      "the loop, the first step's start-up included on both sides. IMDB: gpt2-size random weights, transformers' "
      "Trainer with the tutorial's TrainingArguments on the device against `07_imdb_finetune`, one epoch, no "
      "evaluation or checkpoint during training; samples/s as each side's train() and evaluate() report them. "
      "Peak device MiB: the largest `nvidia-smi` memory.used seen while the run lasted (sampled every 200 ms).")
warm = os.path.join(ft, "warmup.seconds")
if os.path.exists(warm):
    print(f"\nBefore the timed runs, one short run of `07_imdb_finetune` (16 rows, max_length 64) took "
          f"{open(warm).read().strip()} s: most of it the driver compiling candle's PTX kernels for this GPU, "
          "which it does once per machine and caches; no timed run above pays it.")
PY
}

finetune_run() {
    local ft="$WORK/finetune" need missing="" dt train_rows eval_rows torch_imdb_device=cuda
    mkdir -p "$ft"
    rm -f "$ft"/*.json "$ft"/*.err "$ft"/*.rc "$ft"/*.mem "$ft"/*.seconds
    for need in bench 06_jokes_finetune 07_imdb_finetune; do
        [ -x "$BIN_DIR/$need" ] || missing="$missing $need"
    done
    if [ -n "$missing" ]; then
        echo "Fine-tune loops: not run, $BIN_DIR lacks$missing (build with --build-only)." >"$WORK/finetune.md"
        return 0
    fi
    say "fine-tune loops: $FT_SIZE-size and gpt2-size random weights, 1,000 jokes"
    "$BIN_DIR/bench" prepare --size gpt2 --models-dir "$WORK/bench-models" >"$ft/prepare.txt" 2>&1
    # The bundled jokes repeated to 1,000 rows, as scripts/bench_finetune.py does for the CPU.
    "$PY" - "$ROOT/data/jokes-sample/jokes.parquet" "$ft/jokes.parquet" <<'PY'
import sys
import pyarrow as pa
import pyarrow.parquet as pq
jokes = pq.read_table(sys.argv[1]).column("Joke").to_pylist()
rows = [jokes[i % len(jokes)] for i in range(1000)]
pq.write_table(pa.table({"ID": list(range(1, 1001)), "Joke": rows}), sys.argv[2])
PY
    read -r train_rows eval_rows <<<"$IMDB_ROWS"
    [ "$DEVICE" = cpu ] && torch_imdb_device=cpu
    if [ "$DEVICE" != cpu ]; then
        # candle's kernels ship as PTX, which the driver compiles for the GPU when a process first
        # loads them and then caches (~/.nv/ComputeCache): tens of seconds, once per machine. A
        # short run pays it before the timed ones, and the table states what it cost.
        say "first use of candle's kernels on $DEVICE (the driver compiles their PTX once)"
        local t0=$SECONDS
        "$BIN_DIR/07_imdb_finetune" --model "$WORK/bench-models/gpt2" --data bundled --device "$DEVICE" \
            --quiet --json --padding max_length --max-length 64 --train-limit 16 --eval-limit 16 --epochs 1 \
            --batch-size 16 --eval-batch-size 16 --eval-strategy no --save-strategy no --out "$ft/warmup-out" \
            >"$ft/warmup.json" 2>"$ft/warmup.err" || say "the first-use run failed - see $ft/warmup.err"
        echo $((SECONDS - t0)) >"$ft/warmup.seconds"
        rm -rf "$ft/warmup-out"
    fi
    say "IMDB Trainer on $DEVICE, gpt2, f32, padding $IMDB_PADDING, max_length $IMDB_MAX_LENGTH: the crate, then transformers"
    ft_side "$ft/imdb-candle.json" "$BIN_DIR/07_imdb_finetune" --model "$WORK/bench-models/gpt2" --data bundled \
        --device "$DEVICE" --quiet --json --padding "$IMDB_PADDING" --max-length "$IMDB_MAX_LENGTH" \
        --train-limit "$train_rows" --eval-limit "$eval_rows" --epochs 1 --batch-size 16 --eval-batch-size 64 \
        --eval-strategy no --save-strategy no --out "$ft/imdb-out"
    rm -rf "$ft/imdb-out"
    ft_side "$ft/imdb-torch.json" "$PY" scripts/reference/bench_imdb_trainer.py \
        --model-dir "$WORK/bench-models/gpt2" --padding "$IMDB_PADDING" --max-length "$IMDB_MAX_LENGTH" \
        --train-rows "$train_rows" --eval-rows "$eval_rows" --epochs 1 --batch-size 16 --eval-batch-size 64 \
        --device "$torch_imdb_device" --threads "$(nproc)"
    finetune_table
    if [ -n "$FT_DTYPES" ]; then
        "$BIN_DIR/bench" prepare --size "$FT_SIZE" --models-dir "$WORK/bench-models" >>"$ft/prepare.txt" 2>&1
    fi
    for dt in $FT_DTYPES; do
        say "jokes loop on $DEVICE, $FT_SIZE, $dt: the crate, then the tutorial's loop"
        ft_side "$ft/jokes-candle-$dt.json" "$BIN_DIR/06_jokes_finetune" --model "$WORK/bench-models/$FT_SIZE" \
            --data "$ft/jokes.parquet" --device "$DEVICE" --recipe tutorial --dtype "$dt" \
            --accumulate "$FT_ACCUMULATE" --max-steps "$FT_STEPS" --quiet --json --out "$ft/jokes-out"
        rm -rf "$ft/jokes-out" # its checkpoint: gigabytes at gpt2-xl
        ft_side "$ft/jokes-torch-$dt.json" "$PY" scripts/reference/bench_jokes_loop.py \
            --model-dir "$WORK/bench-models/$FT_SIZE" --data "$ft/jokes.parquet" --device "$TORCH_DEVICE" \
            --dtype "$dt" --accumulate "$FT_ACCUMULATE" --steps "$FT_STEPS" --attention sdpa --threads "$(nproc)"
        finetune_table
    done
    say "fine-tune loops: $WORK/finetune.md"
}

if [ "$ONLY_FINETUNE" = 1 ]; then
    finetune_run
    cat "$WORK/finetune.md"
    exit 0
fi

# --- 2. gpt2-size random weights ----------------------------------------------------------------
MODEL="$WORK/gpt2-random"
if [ ! -f "$MODEL/model.safetensors" ]; then
    say "writing gpt2-size random weights to $MODEL"
    "$PY" - "$MODEL" <<'PY'
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1])
PY
fi

# --- 3. logits against the CPU ------------------------------------------------------------------
say "logits on $DEVICE against the CPU"
set +e
GPT2_CHECK_DEVICE="$DEVICE" GPT2_CHECK_MODEL="$MODEL" \
    "$BIN_DIR/dtypes" --ignored --exact gpu_logits_match_cpu --nocapture >"$LOG/logits.txt" 2>&1
LOGITS_RC=$?
set -e
grep '^gpu-check' "$LOG/logits.txt" >&2 || { cat "$LOG/logits.txt" >&2; exit 1; }
# Dropout masks drawn on the device: kept fraction, scale, same seed -> same mask.
set +e
GPT2_CHECK_DEVICE="$DEVICE" "$BIN_DIR/dtypes" --ignored --exact gpu_dropout_masks_are_seeded_and_scaled \
    --nocapture >"$LOG/dropout.txt" 2>&1
DROPOUT_RC=$?
set -e
grep '^gpu-check' "$LOG/dropout.txt" >&2 || say "no dropout check in this dtypes binary"

# --- 4. 03_greedy --------------------------------------------------------------------------------
run_greedy() { # device dtype
    "$BIN_DIR/03_greedy" --model "$MODEL" --device "$1" --dtype "$2" --max-new-tokens "$MAX_NEW" \
        --json --figure "$WORK/03_top10-$2.svg" >"$LOG/greedy-$1-$2.json" 2>"$LOG/greedy-$1-$2.err" ||
        { cat "$LOG/greedy-$1-$2.err" >&2; say "03_greedy --device $1 --dtype $2 failed"; exit 1; }
}
say "03_greedy on cpu (f32, the reference) and on $DEVICE (f32, f16, bf16)"
run_greedy cpu f32
for dt in f32 f16 bf16; do
    run_greedy "$DEVICE" "$dt"
done

# --- 5. training and decoding against PyTorch: the bench example and bench_transformers.py -----
# For each training precision: a 500-token training step (forward, backward, AdamW) and decoding
# of 64 tokens, both sides on the same device and the same random gpt2-size weights; then
# TRAIN_STEPS steps in mixed-bf16 to show that a long run stays finite and learns.
BENCH_NOTE="not run: no bench binary"
if [ -x "$BIN_DIR/bench" ]; then
    if "$BIN_DIR/bench" run --help 2>/dev/null | grep -q -- '--train-precision'; then
        "$BIN_DIR/bench" prepare --models-dir "$WORK/bench-models" >"$LOG/bench-prepare.txt" 2>&1
        for prec in $BENCH_PRECISIONS; do
            case "$prec" in *bf16) dt=bf16 ;; *f16) dt=f16 ;; *) dt=f32 ;; esac
            say "bench on $DEVICE: decode in $dt, training step in $prec (candle, then PyTorch)"
            "$BIN_DIR/bench" run --models-dir "$WORK/bench-models" --device "$DEVICE" --figures decode,train \
                --dtype "$dt" --train-precision "$prec" --reps "$BENCH_REPS" \
                >"$LOG/bench-candle-$prec.json" 2>"$LOG/bench-candle-$prec.err" ||
                { cat "$LOG/bench-candle-$prec.err" >&2; say "bench --train-precision $prec failed"; exit 1; }
            "$PY" scripts/reference/bench_transformers.py run --model-dir "$WORK/bench-models/gpt2" \
                --device "$TORCH_DEVICE" --figures decode,train --dtype "$dt" --train-precision "$prec" \
                --reps "$BENCH_REPS" >"$LOG/bench-torch-$prec.json" 2>"$LOG/bench-torch-$prec.err" ||
                { cat "$LOG/bench-torch-$prec.err" >&2; say "bench_transformers --train-precision $prec failed"; exit 1; }
        done
        say "bench on $DEVICE: $TRAIN_STEPS training steps in mixed-bf16"
        "$BIN_DIR/bench" run --models-dir "$WORK/bench-models" --device "$DEVICE" --figures train \
            --train-precision mixed-bf16 --reps "$TRAIN_STEPS" >"$LOG/bench-long.json" 2>"$LOG/bench-long.err" ||
            { cat "$LOG/bench-long.err" >&2; say "the long training run failed"; exit 1; }
        BENCH_NOTE="$LOG"
    else
        BENCH_NOTE="not run: this bench binary has no --train-precision flag"
    fi
fi

# --- 6. transformers on the same device --------------------------------------------------------
say "transformers generate on $TORCH_DEVICE"
"$PY" - "$MODEL" "$TORCH_DEVICE" "$MAX_NEW" "$LOG/greedy-cpu-f32.json" >"$LOG/transformers.json" <<'PY'
import json, statistics, sys, time
import torch
from transformers import GPT2LMHeadModel

model_dir, device, max_new, ours = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ids = torch.tensor([json.load(open(ours))["input_ids"]], device=device)
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
out = {"torch": torch.__version__}
for name, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    def gen():
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=max_new, min_new_tokens=max_new, pad_token_id=50256)
    gen()  # warm-up: kernels, allocator
    times = []
    for _ in range(3):
        sync(); t = time.perf_counter(); seq = gen(); sync()
        times.append(time.perf_counter() - t)
    out[name] = {"ids": seq[0].tolist(), "seconds": statistics.median(times),
                 "tokens_per_s": max_new / statistics.median(times)}
print(json.dumps(out))
PY

# --- 7. the table -------------------------------------------------------------------------------
"$PY" - "$LOG" "$DEVICE" "$DEVICE_DESC" "$MAX_NEW" "$BENCH_NOTE" >"$WORK/report.md" <<'PY'
import datetime, json, os, re, sys
log, device, desc, max_new, bench = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
checks = {}
for line in open(os.path.join(log, "logits.txt")):
    if line.startswith("gpu-check"):
        kv = dict(re.findall(r"(\w+)=(\S+)", line))
        checks[kv["dtype"]] = (kv, line.split()[-1])
ref = json.load(open(os.path.join(log, "greedy-cpu-f32.json")))
hf = json.load(open(os.path.join(log, "transformers.json")))
print(f"# GPU run, {datetime.date.today().isoformat()}, {desc}\n")
print(f"gpt2-size random weights (transformers' init, seed 0); prompt {ref['prompt']!r} "
      f"({len(ref['input_ids'])} tokens); {max_new} new tokens, greedy, batch 1; torch {hf['torch']}.\n")
print("| dtype | logits max abs diff vs CPU f32 | tolerance | check | next token p (CPU f32: "
      f"{ref['next_token_prob']:.4g}) | greedy ids = CPU f32 | = transformers | candle decode tok/s "
      "| transformers decode tok/s | candle / transformers |")
print("|---|---|---|---|---|---|---|---|---|---|")
for dt in ["f32", "f16", "bf16"]:
    ours = json.load(open(os.path.join(log, f"greedy-{device}-{dt}.json")))
    kv, verdict = checks.get(dt, ({}, "missing"))
    tps = max_new / ours["seconds_cached"]
    theirs = hf[dt]
    print(f"| {dt} | {kv.get('max_abs_diff', '?')} | {kv.get('tol', '?')} | {verdict} "
          f"| {ours['next_token_prob']:.4g} | {ours['generated_ids'] == ref['generated_ids']} "
          f"| {ours['generated_ids'] == theirs['ids']} | {tps:.1f} | {theirs['tokens_per_s']:.1f} "
          f"| {tps / theirs['tokens_per_s']:.2f} |")
print(f"\ncandle decode tok/s: {max_new} tokens over 03_greedy's `seconds_cached` (one run, prefill "
      "included); transformers: median of 3 `generate` calls after a warm-up.")
dropout = [l.split(None, 2)[2].strip() for l in open(os.path.join(log, "dropout.txt"))
           if l.startswith("gpu-check dropout")] if os.path.exists(os.path.join(log, "dropout.txt")) else []
print("\nDropout masks drawn on the device (tests/dtypes.rs, gpu_dropout_masks_are_seeded_and_scaled):")
print("\n".join(f"- {l}" for l in dropout) if dropout else "- not checked (no such test in this dtypes binary)")
if os.path.isdir(bench):
    print("\n## Training and decoding against PyTorch (gpt2-size random weights, batch 1)\n")
    print("| precision | candle train tok/s | PyTorch train tok/s | candle / PyTorch | candle decode tok/s "
          "| PyTorch decode tok/s | candle / PyTorch | loss first -> last (candle) |")
    print("|---|---|---|---|---|---|---|---|")
    for prec in ["f32", "mixed-bf16", "mixed-f16", "bf16"]:
        try:
            c = json.load(open(os.path.join(bench, f"bench-candle-{prec}.json")))
            t = json.load(open(os.path.join(bench, f"bench-torch-{prec}.json")))
        except (OSError, ValueError):
            continue
        ct, tt = c["train"]["tokens_per_s"], t["train"]["tokens_per_s"]
        cd, td = c["decode"]["tokens_per_s"], t["decode"]["tokens_per_s"]
        print(f"| {prec} (decode in {c.get('dtype', 'f32')}) | {ct:.0f} | {tt:.0f} | {ct / tt:.2f} | {cd:.1f} | {td:.1f} "
              f"| {cd / td:.2f} | {c['train']['loss_first']:.4f} -> {c['train']['loss_last']:.4f} |")
    print("\nTraining: one step (forward, loss, backward, AdamW) on 500 tokens, median of the timed steps "
          "after a warm-up; PyTorch with autocast (+ GradScaler for f16) for mixed, the model cast to half "
          "for pure bf16, the faster of eager and sdpa attention, fused AdamW. Decoding: 64 new tokens after "
          "the 8-token prompt, KV cache, greedy.")
    try:
        long = json.load(open(os.path.join(bench, "bench-long.json")))["train"]
        n = len(long["times"]) + 1
        print(f"\nLong run: {n} mixed-bf16 training steps on one 500-token input: loss "
              f"{long['loss_first']:.4f} -> {long['loss_last']:.4f}, {long['tokens_per_s']:.0f} tokens/s (median).")
    except (OSError, ValueError, KeyError):
        print("\nLong run: missing")
else:
    print(f"\nbench: {bench}")
PY
if [ "$FINETUNE" = 1 ]; then
    finetune_run
    { echo; cat "$WORK/finetune.md"; } >>"$WORK/report.md"
fi
cat "$WORK/report.md"
if [ "$LOGITS_RC" -ne 0 ]; then
    say "the logits check FAILED (see $LOG/logits.txt)"
    exit 1
fi
if [ "$DROPOUT_RC" -ne 0 ]; then
    say "the dropout check FAILED (see $LOG/dropout.txt)"
    exit 1
fi
