#!/usr/bin/env bash
# Checks the optimizer kernel's per-entry math (kernels/adamw_math.cuh) against the CPU engine, bit
# for bit, without a GPU: the header is compiled for the host with g++ (CUDA intrinsics mapped to
# the IEEE operations they perform, no FMA contraction) and recomputes 1M cases drawn by
# examples/adamw_cases.rs (rng draws, bf16 rounding, masked updates, clipping factors).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet --example adamw_cases -- "$tmp/cases.txt"
${CXX:-g++} -O2 -std=c++17 -ffp-contract=off -Ikernels -o "$tmp/check" scripts/adamw-host-check.cpp
"$tmp/check" "$tmp/cases.txt"
