# shellcheck shell=bash
# Sets up a CUDA toolkit from NVIDIA's PyPI wheels and exports what `cargo build --features cuda`
# needs. Source it (it exports variables into your shell):
#
#     source scripts/cuda-build-env.sh
#     cargo build --release --features cuda --examples
#
# No GPU and no system CUDA are needed: this builds the binaries, it does not run them.
#
# Why these pieces:
# - candle-kernels compiles its .cu files with nvcc (through the `cudaforge` crate), which also
#   needs CUDA's headers, CCCL (thrust, cub, cuda/std) and NVVM: the nvcc, crt, nvvm, cccl and
#   runtime wheels. NVIDIA's CUDA 13 wheels all unpack into one `nvidia/cu13/` tree laid out like
#   a toolkit (bin/, include/, lib/, nvvm/), and nvcc's own nvcc.profile finds the rest from there.
# - cudarc (candle's CUDA bindings) is built with `dynamic-linking`, so the linker wants
#   libcuda, libcudart, libnvrtc, libcurand, libcublas and libcublasLt by their unversioned names.
#   The wheels ship only versioned names (libcublas.so.13), so we add unversioned links.
# - libcuda is the *driver*; no wheel has it. We link against a stub with the driver's soname
#   (libcuda.so.1) that defines every driver function cudarc declares. The binary then records
#   `NEEDED libcuda.so.1` and the real driver on the GPU machine satisfies it. The stub lives in
#   lib/stubs/ and must never be on LD_LIBRARY_PATH when running.
# - CUDA 13.0, not the newest: the lent GPU machines run driver 580 (CUDA 13.0) with PyTorch
#   cu130, whose wheels provide the same runtime libraries (libcublas.so.13, ...) at run time;
#   PTX from a newer nvcc would not load on that driver. Change CUDA_WHEELS for another driver.
# - CUDA_COMPUTE_CAP: cudaforge otherwise asks nvidia-smi, which a machine without a GPU lacks.
#   90 is Hopper (H100/H200); set it before sourcing for another card (80 Ampere, 89 Ada).
#
# Everything goes under .cuda/ (git-ignored), about 1.2 GB; a second run reuses it.

_gpt2_cuda_setup() {
    local root cuda_dir site top lib stubs cudarc_src marker wheels
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    cuda_dir="${GPT2_CUDA_DIR:-$root/.cuda}"
    site="$cuda_dir/pip"
    top="$site/nvidia/cu13"
    wheels="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
nvidia-curand==10.4.0.35 nvidia-cublas==13.0.2.14"
    wheels="${CUDA_WHEELS:-$wheels}"
    marker="$cuda_dir/installed.txt"

    if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$wheels" ]; then
        echo "cuda-build-env: installing CUDA wheels into $site" >&2
        rm -rf "$site"
        # shellcheck disable=SC2086 # the list is meant to split into package specs
        python3 -m pip install --quiet --no-deps --disable-pip-version-check --root-user-action=ignore \
            --target "$site" $wheels || return 1
        echo "$wheels" >"$marker"
    fi
    if [ ! -x "$top/bin/nvcc" ]; then
        echo "cuda-build-env: $top/bin/nvcc is missing; delete $cuda_dir and source again" >&2
        return 1
    fi

    # Unversioned names for the linker (see above).
    lib="$top/lib"
    local so base
    for so in "$lib"/lib*.so.*; do
        base="$(basename "$so")"
        base="${base%%.so.*}.so"
        case "$base" in *.alt.so | libnvrtc-builtins.so) continue ;; esac
        [ -e "$lib/$base" ] || ln -s "$(basename "$so")" "$lib/$base"
    done

    # The libcuda stub, generated from the driver functions cudarc declares.
    stubs="$lib/stubs"
    if [ ! -f "$stubs/libcuda.so" ]; then
        cudarc_src="$(cd "$root" && cargo metadata --format-version 1 --locked --features cuda |
            python3 -c 'import json, sys, os
d = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in d["packages"] if p["name"] == "cudarc"))')" || return 1
        mkdir -p "$stubs"
        grep -ohE '^[[:space:]]+fn cu[A-Za-z0-9_]+\(' "$cudarc_src/src/driver/sys/mod.rs" |
            sed -E 's/^[[:space:]]+fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
            awk 'BEGIN { print "/* Link-time stand-in for the CUDA driver: every call fails with CUDA_ERROR_STUB_LIBRARY. */" }
                 { printf "int %s(void) { return 34; }\n", $1 }' >"$stubs/libcuda_stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c" || return 1
    fi

    export CUDA_ROOT="$top"
    export CUDA_HOME="$top"
    export CUDA_PATH="$top"
    export NVCC="$top/bin/nvcc"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    case ":$PATH:" in *":$top/bin:"*) ;; *) export PATH="$top/bin:$PATH" ;; esac
    echo "cuda-build-env: nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_ROOT=$CUDA_ROOT, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2
}

_gpt2_cuda_setup
