#!/usr/bin/env bash
# Where the IMDB step's time goes on the GPU: train time against max_length and dropout.
set -o pipefail
W=/tmp/w; mkdir -p $W && tar -xJf target/gpu-run/gpu-bin.tar.xz -C $W
nvlibs="$(python3 -c 'import os, nvidia; print(":".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null)"
export LD_LIBRARY_PATH="$nvlibs:/usr/local/cuda/lib64"
$W/bin/bench prepare --size gpt2 --models-dir $W/m >/dev/null 2>&1 || exit 1
for v in a0 r0; do mkdir -p $W/m/$v; ln -sf $W/m/gpt2/* $W/m/$v/; rm $W/m/$v/config.json; done
python3 - $W/m <<'PY'
import json, sys
d = sys.argv[1]; c = json.load(open(f"{d}/gpt2/config.json"))
c["attn_pdrop"] = 0.0; json.dump(c, open(f"{d}/a0/config.json", "w"))
c["resid_pdrop"] = c["embd_pdrop"] = 0.0; json.dump(c, open(f"{d}/r0/config.json", "w"))
PY
run() { # model max_length rows
  local t0=$SECONDS
  timeout 60 $W/bin/07_imdb_finetune --model $W/m/$1 --data bundled --device cuda --quiet --json --padding max_length \
    --max-length $2 --train-limit $3 --eval-limit 16 --epochs 1 --batch-size 16 --eval-batch-size 64 \
    --eval-strategy no --save-strategy no --out $W/o >$W/o.json 2>$W/o.err
  echo "$1 max_length=$2 rows=$3 rc=$? wall=$((SECONDS-t0))s $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); m=j["train_output"]["metrics"]; print("train_runtime", m.get("train_runtime"), "samples/s", m.get("train_samples_per_second"))' $W/o.json 2>&1 | tail -1)"
  rm -rf $W/o
}
for ml in 128 256 512; do run gpt2 $ml 48; done
run gpt2 512 96
run a0 512 48
run r0 512 48
run gpt2 384 48
echo "done ${SECONDS}s"
