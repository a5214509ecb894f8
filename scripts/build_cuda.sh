#!/usr/bin/env bash
# Builds the crate's examples with the `cuda` feature, for carrying to a GPU machine:
#
#     scripts/build_cuda.sh            # release build of every example into target/cuda/release/examples/
#     scripts/build_cuda.sh --tests    # also the test binaries (tests/dtypes.rs holds the GPU checks)
#
# The toolkit comes from NVIDIA's PyPI wheels (scripts/cuda-build-env.sh); no GPU is needed here.
# A separate target directory keeps the CUDA build from invalidating the default one, and `nice`
# keeps it from starving other work on a small machine (candle's kernels take a while to compile).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cuda-build-env.sh
source scripts/cuda-build-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}"

targets=(--examples)
if [ "${1:-}" = "--tests" ]; then
    targets+=(--tests)
fi
start=$(date +%s)
nice -n 19 cargo build --locked --release --features cuda "${targets[@]}"
echo "build_cuda: built in $(($(date +%s) - start)) s into $CARGO_TARGET_DIR/release" >&2
