#!/usr/bin/env bash
# Desk checks of the optimizer kernel without a GPU (g++ only, plus cargo for the cases):
#  1. the per-entry math (kernels/adamw_math.cuh) against the CPU engine, bit for bit: the header is
#     compiled for the host (CUDA intrinsics mapped to the IEEE operations they perform, no FMA
#     contraction) and recomputes 1M cases drawn by examples/adamw_cases.rs (rng draws, bf16
#     rounding, masked updates with NaN/Inf/denormal inputs, clipping factors);
#  2. the whole kernel (kernels/adamw.cu) run block by block on the host, thread after thread, for
#     every entry point, keep rule, masked mode, skip flag and master initialisation, with aligned
#     and misaligned gradients, against a plain loop over the entries (scripts/adamw-host-walk.cpp).
# Neither replaces a GPU run: they check the code's logic, not the device's behaviour.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cxx=${CXX:-g++}
flags=(-O2 -std=c++17 -ffp-contract=off -Wno-unknown-pragmas)

cargo run --release --quiet --example adamw_cases -- "$tmp/cases.txt"
"$cxx" "${flags[@]}" -Ikernels -o "$tmp/check" scripts/adamw-host-check.cpp
"$tmp/check" "$tmp/cases.txt"

mkdir "$tmp/walk"
cp kernels/adamw.cu kernels/adamw_math.cuh kernels/gm_types.cuh kernels/tuning.cuh "$tmp/walk/"
cp scripts/adamw-host-walk.cuh "$tmp/walk/gm_common.cuh"
cp scripts/adamw-host-walk.cpp "$tmp/walk/walk.cpp"
"$cxx" "${flags[@]}" -o "$tmp/walk/walk" "$tmp/walk/walk.cpp"
"$tmp/walk/walk"
