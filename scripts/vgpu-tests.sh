#!/usr/bin/env bash
# Runs every CUDA test of the crate on the stand-in driver (vgpu/), once per scheduling seed:
#
#   scripts/vgpu-tests.sh            # seeds 1, 2 (with independent thread scheduling) and 3
#   scripts/vgpu-tests.sh 7 8        # other seeds
#
# The CUDA test binaries (select_cuda, adamw_cuda, shard_cuda, vgpu_defects, the doctests) are built once with
# `cargo test --no-run` (the test profile, as `cargo test` builds them) and run directly, one test
# thread each (so each seed's launch order is reproducible), two seeds at a time on two cores. The
# planted-defect proof runs with the first seed only. Each seed's log lands in
# target/vgpu/seed-<seed>.log; a failing seed's log is printed, with the seed to rerun it:
#   GRADMASK_VGPU_SEED=<seed> scripts/vgpu.sh cargo test --test <binary> -- --test-threads=1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
# shard_cuda runs with feature nccl: the sharded selector over the stand-in NCCL too.
tests=(--features nccl --test select_cuda --test adamw_cuda --test adamw_cuda_stability --test shard_cuda --test shard_adamw_cuda --test vgpu_defects)

# Build the stand-in and the test binaries, and list the binaries.
scripts/vgpu.sh true
bins=$(cargo test --no-run "${tests[@]}" --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
[ -n "$bins" ] || { echo "vgpu-tests: no test binaries were built" >&2; exit 1; }
export LD_LIBRARY_PATH="$root/target/vgpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

run_seed() { # seed, extra environment...
  local seed=$1 rc=0 start=$SECONDS
  shift
  local log="target/vgpu/seed-$seed.log"
  : >"$log"
  for bin in $bins; do
    echo "== $(basename "$bin") (seed $seed)" >>"$log"
    # The planted-defect proof prints what caught each defect: keep its output.
    local show=()
    [[ $(basename "$bin") == vgpu_defects-* ]] && show=(--nocapture)
    env GRADMASK_VGPU_SEED="$seed" "$@" "$bin" --test-threads=1 "${show[@]}" >>"$log" 2>&1 || rc=1
  done
  echo "== seed $seed: $((SECONDS - start)) s, $([ $rc = 0 ] && echo ok || echo FAILED)" >>"$log"
  return $rc
}

# Lane A: the first seed with the planted defects and the doctests; lane B: the other seeds,
# the second one with independent thread scheduling.
status=0
(
  rc=0
  run_seed "${seeds[0]}" GRADMASK_VGPU_DEFECTS=1 || rc=1
  GRADMASK_VGPU_SEED="${seeds[0]}" cargo test --doc >"target/vgpu/doctests.log" 2>&1 || rc=1
  exit $rc
) &
lane_a=$!
(
  rc=0
  for i in "${!seeds[@]}"; do
    [ "$i" = 0 ] && continue
    if [ "$i" = 1 ]; then run_seed "${seeds[$i]}" GRADMASK_VGPU_ITS=1 || rc=1; else run_seed "${seeds[$i]}" || rc=1; fi
  done
  exit $rc
) &
lane_b=$!
wait $lane_a || status=1
wait $lane_b || status=1

for seed in "${seeds[@]}"; do
  log="target/vgpu/seed-$seed.log"
  if grep -q "seed $seed: .* ok$" "$log"; then
    grep -E "^== |^test result|caught by" "$log"
  else
    echo "---- seed $seed FAILED; its log:"
    cat "$log"
  fi
done
grep -E "test result" target/vgpu/doctests.log | sed 's/^/doctests: /' || true
grep -q "FAILED" target/vgpu/doctests.log && { cat target/vgpu/doctests.log; status=1; }
exit $status
