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
# (default python3).
#
# Steps:
#  1. binaries: 03_greedy, bench (if it exists) and the dtypes test binary, built with the `cuda`
#     feature (the toolkit from scripts/cuda-build-env.sh) or taken from --bin-archive/--bin-dir;
#  2. gpt2-size random weights (transformers' own initialisation, seed 0), written once;
#  3. logits on the device in f32/f16/bf16 against the CPU's f32 (tests/dtypes.rs,
#     gpu_logits_match_cpu: f32 within 1e-3, f16 within 5e-3 and bf16 within 3e-2 of the largest
#     |logit|; the reasons are beside the constants there);
#  4. 03_greedy on the device in each dtype: next token, greedy ids against the CPU, decode speed;
#  5. the bench example against scripts/reference/bench_transformers.py on the device: decoding
#     and a 500-token training step in f32, mixed-bf16, mixed-f16 and pure bf16, then a run of
#     TRAIN_STEPS training steps (mixed-bf16) whose first and last losses are reported;
#  6. transformers' greedy `generate` on the same device, weights and prompt ids, in each dtype;
#  7. the table.
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
    local examples=(--example 03_greedy)
    [ -f examples/bench.rs ] && examples+=(--example bench)
    nice -n 19 cargo build --locked --release "${features[@]}" "${examples[@]}"
    local tests_json
    tests_json="$(nice -n 19 cargo test --locked --release "${features[@]}" --test dtypes --no-run --message-format=json)"
    mkdir -p "$WORK/bin"
    local ex
    for ex in 03_greedy bench; do
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
    # Each CUDA binary is over 50 MB even stripped (candle's kernels are inside); xz shrinks them
    # about sevenfold, which matters where what can be carried to the GPU machine is limited.
    tar -cJf "$WORK/gpu-bin.tar.xz" -C "$WORK" bin
    say "to carry: $WORK/gpu-bin.tar.xz ($(du -h "$WORK/gpu-bin.tar.xz" | cut -f1)); run it with --bin-archive"
    exit 0
fi
for need in 03_greedy dtypes; do
    [ -x "$BIN_DIR/$need" ] || { say "$BIN_DIR/$need is missing: build with scripts/gpu_run.sh --build-only"; exit 1; }
done

if [ "$DEVICE" != cpu ]; then
    # CUDA 13's libraries from PyTorch's wheels and the system toolkit, whichever exist.
    nvlibs="$("$PY" -c 'import os, nvidia
print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null || true)"
    export LD_LIBRARY_PATH="${nvlibs:+$nvlibs:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if ldd "$BIN_DIR/03_greedy" | grep -q 'not found'; then
        say "libraries not found for $BIN_DIR/03_greedy:"
        ldd "$BIN_DIR/03_greedy" | grep 'not found' >&2
        say "install PyTorch's CUDA 13 wheels or the CUDA 13 toolkit, or add their lib folder to LD_LIBRARY_PATH"
        exit 1
    fi
    DEVICE_DESC="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "${DEVICE#cuda:}" 2>/dev/null ||
        nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)"
    DEVICE_DESC="$DEVICE ($DEVICE_DESC)"
else
    DEVICE_DESC="cpu ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores)"
fi
TORCH_DEVICE="$DEVICE"
[ "$DEVICE" = cuda ] && TORCH_DEVICE=cuda:0

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
cat "$WORK/report.md"
if [ "$LOGITS_RC" -ne 0 ]; then
    say "the logits check FAILED (see $LOG/logits.txt)"
    exit 1
fi
