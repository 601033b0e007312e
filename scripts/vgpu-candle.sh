#!/usr/bin/env bash
# Runs the candle adapter's CUDA tests (tests/candle_cuda.rs: gradmask::candle on candle's CUDA
# backend against the same adapter on the CPU, bit for bit) on the stand-in driver (vgpu/), without
# a GPU or any NVIDIA library besides the pinned nvcc:
#
#   scripts/vgpu-candle.sh          # scheduling seeds 1 and 2
#   scripts/vgpu-candle.sh 7        # another seed
#
# candle's CUDA backend links cuBLAS, cuBLASLt, cuRAND, NVRTC and the runtime, and creates a cuBLAS
# handle and a cuRAND generator with every device. Those libraries call the driver's private
# export tables, which the stand-in does not have, so small stand-ins take their place
# (target/vgpu-candle/stubs/, generated from cudarc's bindings): creating, configuring and
# destroying a handle succeeds, and every other entry point prints its name and fails
# (CUBLAS_STATUS_NOT_SUPPORTED, CURAND_STATUS_NOT_INITIALIZED, NVRTC_ERROR_INTERNAL_ERROR). So a
# test that needs a matmul or random numbers on the device fails loudly; the adapter's tests need
# neither. libcudart comes from the nvcc install (candle's MoE kernels link it; nothing calls it).
# candle's own kernels (casts, binary ops, fills) run on the interpreter; a module's kernels that
# it cannot run (f16/bf16 arithmetic, approximate math) are refused by name when launched.
#
# Not part of .ci/run: building candle's kernels with nvcc takes ~20 minutes on 2 cores
# (benches/NOTES.md). The build lands in target/vgpu-candle/ (its own flags, its own cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2)
CUDA_HOME=$(scripts/install-cuda.sh)
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
out="$root/target/vgpu-candle"
stubs="$out/stubs"
mkdir -p "$stubs/link"

cudarc_src=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
  python3 -c 'import json, sys, os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.dirname(p["manifest_path"]))' | head -n 1)
[[ -d "$cudarc_src/src" ]] || { echo "vgpu-candle: cudarc's sources not found" >&2; exit 1; }

# The stand-in libraries: one C function per entry point cudarc declares.
python3 - "$cudarc_src" "$stubs" <<'EOF'
import re, sys
src, out = sys.argv[1], sys.argv[2]
libs = [  # name, bindings, soname, the error every unimplemented entry point returns
    ("cublas", "cublas", "libcublas.so.13", 15),
    ("cublasLt", "cublaslt", "libcublasLt.so.13", 15),
    ("curand", "curand", "libcurand.so.10", 101),
    ("nvrtc", "nvrtc", "libnvrtc.so.13", 11),
]
handles = {
    "cublasCreate_v2": 0x1B1A5, "cublasLtCreate": 0x1B1A6, "curandCreateGenerator": 0xC7A4D,
}
succeed = ("cublasSet", "cublasDestroy", "cublasLtDestroy", "curandSet", "curandDestroy")
for name, module, soname, err in libs:
    text = open(f"{src}/src/{module}/sys/mod.rs").read()
    entries = sorted(set(re.findall(r"pub (?:unsafe )?fn ((?:cublas|curand|nvrtc)\w*)\(", text)))
    lines = ["#include <stdio.h>"]
    for e in entries:
        if e in handles:
            lines.append(f"int {e}(void **h) {{ *h = (void *){handles[e]:#x}; return 0; }}")
        elif e.startswith(succeed):
            lines.append(f"int {e}(void) {{ return 0; }}")
        else:
            lines.append(f'int {e}(void) {{ fprintf(stderr, "stand-in {soname}: {e} is not '
                         f'implemented\\n"); return {err}; }}')
    open(f"{out}/{name}.c", "w").write("\n".join(lines) + "\n")
EOF
for lib in cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 nvrtc:libnvrtc.so.13; do
  name=${lib%%:*} soname=${lib#*:}
  cc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/$soname" "$stubs/$name.c"
  ln -sf "../$soname" "$stubs/link/lib$name.so"
done
# Linking needs a libcuda with the driver's names; at run time the stand-in driver replaces it.
grep -o 'pub unsafe fn cu[A-Za-z0-9_]*(' "$cudarc_src/src/driver/sys/mod.rs" |
  sed 's/pub unsafe fn \(.*\)(/int \1(void) { return 100; }/' | sort -u >"$stubs/cuda_link.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/link/libcuda.so" "$stubs/cuda_link.c"
ln -sf "$CUDA_HOME/lib/libcudart.so.13" "$stubs/link/libcudart.so"

# Lazy binding: the stand-ins resolve what is called, when it is called.
bin=$(CUDA_COMPUTE_CAP=90 CARGO_TARGET_DIR="$out" \
  RUSTFLAGS="-L native=$stubs/link -C link-arg=-Wl,-z,lazy" \
  cargo test --features cuda --test candle_cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "vgpu-candle: the test binary was not built (rerun the cargo command to see why)" >&2; exit 1; }
scripts/vgpu.sh true
rc=0
for seed in "${seeds[@]}"; do
  echo "== candle_cuda on the stand-in, seed $seed"
  GRADMASK_VGPU_SEED=$seed LD_LIBRARY_PATH="$root/target/vgpu:$stubs:$CUDA_HOME/lib" \
    "$bin" --test-threads=1 || rc=1
done
exit $rc
