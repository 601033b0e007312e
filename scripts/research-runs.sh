#!/usr/bin/env bash
# The research runs of issue 13, one after another, at low priority, each resumable: rerunning this
# script continues every unfinished stage from its checkpoints (finished runs are kept).
#
#   scripts/research-runs.sh BINARY GGUF [STAGE...]     # stages: smol builtin sweep (default: all)
#
# BINARY: a copy of target/release/examples/finetune_llama (runs/bin/finetune_llama-<commit>), so
# that later builds do not change a running binary. GGUF: SmolLM2-135M-Instruct.Q4_1.gguf (README,
# "Pretrained models"). Output: runs/issue13/<stage>/ (git-ignored); logs: runs/issue13/<stage>.log,
# with the start and end time, the load average and the wall time of each stage.
set -uo pipefail
BIN=$(realpath "$1")
GGUF=$(realpath "$2")
# The repository root, also when this script runs from a copy under runs/bin.
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
shift 2
STAGES=("${@:-smol builtin sweep}")
STAGES=(${STAGES[*]})
ROOT=runs/issue13
mkdir -p "$ROOT"

stage() {
  local name=$1
  shift
  local out=$ROOT/$name
  local resume=()
  [ -d "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] && resume=(--resume)
  {
    echo "== $name: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), binary $BIN"
    echo "   $BIN $* --out $out ${resume[*]}"
  } >>"$ROOT/$name.log"
  local t0=$SECONDS
  nice -n 19 "$BIN" "$@" --out "$out" "${resume[@]}" --quiet >>"$ROOT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc at $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), wall $((SECONDS - t0)) s" >>"$ROOT/$name.log"
  return $rc
}

for s in "${STAGES[@]}"; do
  case $s in
    smol) # (b) SmolLM2-135M-Instruct: SFT vs GMT vs random at 0.2, 3 seeds, a reference row before fine-tuning
      stage smol --model "$GGUF" --compare sft,gmt,random --mask-ratio 0.2 --seeds 3 \
        --steps "${SMOL_STEPS:-100}" --micro-batch 4 --lr 1e-4 --max-len 96 --heldout 200 --eval-samples 200 \
        --eval-every 0 --save-every 25
      ;;
    builtin) # (a) the built-in model: 5 seeds, every method, mask ratios 0.2 and 0.5
      stage builtin --compare sft,gmt,random,hft,oneoff --sweep-mask-ratio 0.2,0.5 --seeds 5
      ;;
    sweep) # (c) the built-in model: GMT and random over the paper's ratios, 3 seeds
      # The runs (a) already made with the same flags and seeds are copied, not repeated: a run is
      # a function of its flags, seed and ratio (bit for bit on one machine), and --resume keeps
      # a run folder that holds result.json.
      if [ ! -d "$ROOT/sweep" ] && [ -f "$ROOT/builtin/summary.json" ]; then
        for seed in 42 43 44; do
          mkdir -p "$ROOT/sweep/seed-$seed"
          for run in sft gmt-r0.2 gmt-r0.5 random-r0.2 random-r0.5; do
            cp -r "$ROOT/builtin/seed-$seed/$run" "$ROOT/sweep/seed-$seed/"
          done
        done
        echo "== sweep: copied seeds 42-44 {sft,gmt,random}-r{0.2,0.5} from builtin/" >>"$ROOT/sweep.log"
      fi
      stage sweep --compare sft,gmt,random --sweep-mask-ratio 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.99 \
        --seeds 3
      ;;
    *) echo "unknown stage $s (smol, builtin, sweep)" >&2; exit 2 ;;
  esac
done
