#!/usr/bin/env bash
# The prepared GPU check, in two halves.
#
#   scripts/gpu-check.sh pack   here (Rust, no GPU): builds every CUDA test, bench and example binary
#                               with the pinned nvcc (SASS sm_90 + PTX) and copies them with the peers
#                               into .gpu/ (git-ignored; the device tool's `carry` takes it along).
#   scripts/gpu-check.sh run    on the GPU machine (no Rust toolchain): runs everything in one call,
#                               each step under its own timeout, and prints a summary table last.
#                               Logs go to $OUT (the device tool's folder) or /tmp/gpu-out.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

pack() {
  set -e
  CUDA_HOME=$(bash scripts/install-cuda.sh)
  export CUDA_HOME GRADMASK_REQUIRE_KERNELS=1
  rm -rf .gpu && mkdir -p .gpu/bin
  local json
  json=$(mktemp)
  cargo test --release --no-run --message-format=json >"$json"
  cargo bench --no-run --message-format=json >>"$json"
  cargo build --release --examples --message-format=json >>"$json"
  python3 - "$json" <<'PY'
import json, shutil, sys
wanted = {("test", "select_cuda"), ("test", "adamw_cuda"), ("bench", "select"), ("bench", "step"),
          ("example", "select_demo"), ("example", "finetune_llama")}
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    key = (target["kind"][0], target["name"])
    if key in wanted:
        dest = f".gpu/bin/{key[0]}-{key[1]}"
        shutil.copy(msg["executable"], dest)
        print("packed", dest)
PY
  cp -r scripts/peers .gpu/peers
  # The device tool carries at most 64 MiB: drop the debug info.
  strip --strip-debug .gpu/bin/*
  du -sh .gpu
  local kib
  kib=$(du -sk .gpu | cut -f1)
  if [ "$kib" -gt 60000 ]; then
    echo "gpu-check: .gpu is ${kib} KiB, over the 64 MiB the device tool carries" >&2
    exit 1
  fi
}

run() {
  local out=${OUT:-/tmp/gpu-out}
  mkdir -p "$out"
  local -a names=() codes=()
  step() { # step NAME TIMEOUT CMD...
    local name=$1 limit=$2
    shift 2
    echo "=== $name"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    names+=("$name")
    codes+=("$rc")
  }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
  local bin=.gpu/bin
  [ -x $bin/test-select_cuda ] && step select_cuda_tests 240 $bin/test-select_cuda --test-threads=1 --nocapture
  [ -x $bin/test-adamw_cuda ] && step adamw_cuda_tests 120 $bin/test-adamw_cuda --test-threads=1 --nocapture
  if command -v compute-sanitizer >/dev/null; then
    [ -x $bin/test-select_cuda ] && step memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
      $bin/test-select_cuda --test-threads=1 a_planted_nan the_same_input_twice bad_inputs
    [ -x $bin/test-select_cuda ] && step racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 \
      $bin/test-select_cuda --test-threads=1 a_planted_nan
    [ -x $bin/test-adamw_cuda ] && step memcheck_adamw 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
      $bin/test-adamw_cuda --test-threads=1 misaligned non_finite rejected
  fi
  [ -x $bin/bench-select ] && step select_bench 150 $bin/bench-select --bench select_cuda
  [ -x $bin/bench-step ] && step step_bench 150 $bin/bench-step --bench cuda
  if [ -x $bin/example-select_demo ]; then
    step select_demo 120 $bin/example-select_demo --scale 1 --data hash --json "$out/ours.json"
    step torch_select 180 env PYTHONUNBUFFERED=1 python3 .gpu/peers/torch_select.py --scale 1 --compare "$out/ours.json"
  fi
  [ -f .gpu/peers/torch_step.py ] && step torch_step 120 env PYTHONUNBUFFERED=1 python3 .gpu/peers/torch_step.py
  echo
  echo "=== summary (exit codes; 124 = timed out)"
  for i in "${!names[@]}"; do printf '%-20s %s\n' "${names[$i]}" "${codes[$i]}"; done | tee "$out/summary.txt"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) echo "usage: $0 pack|run" >&2; exit 2 ;;
esac
