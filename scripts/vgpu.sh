#!/usr/bin/env bash
# Runs a command against the stand-in CUDA driver (vgpu/: a PTX interpreter with sanitizer checks),
# so the crate's CUDA tests run on a machine without a GPU:
#
#   scripts/vgpu.sh cargo test --test select_cuda
#
# Builds the stand-in (release), installs it as libcuda.so / libcuda.so.1 (and libnccl.so, the
# stand-in NCCL of the same library) in target/vgpu/, and puts
# that folder first on LD_LIBRARY_PATH for the command. A real GPU machine never sees it unless it
# runs this script. Scheduling seed: GRADMASK_VGPU_SEED (default 1; see vgpu/src/lib.rs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -q -p gradmask-vgpu --manifest-path "$root/Cargo.toml" >&2
dir="$root/target/vgpu"
mkdir -p "$dir"
# A new file renamed into place: a process still running the previous copy keeps its mapping.
cp "$root/target/release/libgradmask_vgpu.so" "$dir/.libcuda.so.new"
mv -f "$dir/.libcuda.so.new" "$dir/libcuda.so"
ln -sf libcuda.so "$dir/libcuda.so.1"
# The same library is the stand-in NCCL (vgpu/src/nccl): one loaded copy serves both.
ln -sf libcuda.so "$dir/libnccl.so"
ln -sf libcuda.so "$dir/libnccl.so.2"
export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
