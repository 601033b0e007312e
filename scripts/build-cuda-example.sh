#!/usr/bin/env bash
# Builds examples/finetune_llama with `--features cuda` (candle's CUDA backend, and the GMT step on
# the GPU through the crate's kernels) on a machine without a GPU or a CUDA install:
# - nvcc 13.0 from scripts/install-cuda.sh (our kernels and candle's);
# - cuBLAS, cuBLASLt, cuRAND and NVRTC 13.0 from PyPI (and the runtime, libcudart, from the
#   compiler's wheels) into .cuda-libs/ (git-ignored): candle makes
#   cudarc link them at build time;
# - libcuda: the driver cannot come from PyPI, so a stub with the driver API's names (taken from
#   cudarc's own bindings) and the driver's soname, libcuda.so.1, stands in for the link. At run
#   time the real driver library is loaded in its place.
# The binary lands in target/cuda/release/examples/finetune_llama. It needs at run time the NVIDIA
# driver (580 or newer, for CUDA 13.0) and the five libraries above, e.g. PyTorch's cu130 wheels:
#   LD_LIBRARY_PATH=$(python3 -c 'import nvidia.cu13, os; print(os.path.dirname(nvidia.cu13.__file__) + "/cu13/lib")')
# Usage: scripts/build-cuda-example.sh [build | test --no-run | check] [cargo args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CUDA_HOME=$(scripts/install-cuda.sh)
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"

libs="$root/.cuda-libs"
pins=('nvidia-cublas==13.0.*' 'nvidia-curand==10.4.0.*' 'nvidia-cuda-nvrtc==13.0.*')
want=$(printf '%s\n' "${pins[@]}")
if [[ ! -f "$libs/.pins" || "$(cat "$libs/.pins")" != "$want" ]]; then
  python3 -m venv "$libs" >&2
  "$libs/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  printf '%s' "$want" >"$libs/.pins"
fi
pyver=$("$libs/bin/python" -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')
real="$libs/lib/$pyver/site-packages/nvidia/cu13/lib"
link="$libs/link"
mkdir -p "$link"
for lib in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
  ln -sf "$real/lib$lib" "$link/lib${lib%.so.*}.so"
done
# candle-kernels' MoE kernels are a static library built by nvcc: they need the runtime, libcudart.
ln -sf "$CUDA_HOME/lib/libcudart.so.13" "$link/libcudart.so"

# The stub libcuda: every driver entry point cudarc declares.
cudarc_src=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
  python3 -c 'import json, sys, os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.dirname(p["manifest_path"]))' | head -n 1)
sys_rs="$cudarc_src/src/driver/sys/mod.rs"
[[ -f "$sys_rs" ]] || { echo "build-cuda-example: cudarc's driver bindings not found ($sys_rs)" >&2; exit 1; }
# Each returns CUDA_ERROR_NO_DEVICE (100), so a process run against the stub (LD_LIBRARY_PATH=
# .cuda-libs/link, to run the CPU tests of this build here) fails cleanly when it asks for a GPU.
grep -o 'pub unsafe fn cu[A-Za-z0-9_]*(' "$sys_rs" | sed 's/pub unsafe fn \(.*\)(/int \1(void) { return 100; }/' |
  sort -u >"$link/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"
ln -sf libcuda.so "$link/libcuda.so.1"

export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} # candle-kernels' PTX target (H100/H200)
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$link"
export CARGO_TARGET_DIR="$root/target/cuda" # other flags than the default build: its own cache
cmd=${1:-build}
shift || true
cargo "$cmd" --release --features cuda --example finetune_llama "$@"
echo "built with CUDA_HOME=$CUDA_HOME, libraries from $real" >&2
