#!/usr/bin/env bash
# Rebuild the bundled default model models/dm1_lift from nothing, the way it was made (issue 6):
#   1. 201 scripted Lift demos recorded through the teleop node on the twin (cube seeds 100..300)
#   2. the base DM1 run: configs/dm1_lift_cpu.yaml, 6000 steps (~43 min on the 2-core development CPU)
#   3. 60 recovery demos recorded the same way (first grasp a deliberate miss, marked `perturbed` and not
#      learned; cube seeds 3000..3059, ~33 s each), added to a copy of the 201 (hard links)
#   4. fine-tuning the base run on the 261 demos: 3000 steps, lr 2e-4, its normalizers (~23 min)
#   5. export to models/dm1_lift, then 200 episodes through the full ROS 2 stack (2 x 100, cube seeds
#      1000..1199, ~23 s each) merged into the model card's `evaluation`
#
#   scripts/bundled_model.sh            # everything (about 4 h on the development CPU); stages are reused
#   scripts/bundled_model.sh --no-eval  # stop after the export
#   scripts/bundled_model.sh --dry-run  # print the commands only
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
PY=.venv/bin/python
DRY=0 EVAL=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --no-eval) EVAL=0 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bundled_model.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
run() { echo "+ $*"; if [[ $DRY == 0 ]]; then "$@"; fi; }
count() { ls "$1"/episode_*.h5 2>/dev/null | wc -l || true; }

DEMOS=data/lift_teleop REC=data/lift_teleop_rec BASE=runs/dm1_lift_tele TUNED=runs/dm1_lift_rec
have=$(count $DEMOS)
if (( have < 201 )); then
  run $PY -m dm1.cli data collect --via-teleop -o $DEMOS --episodes $((201 - have)) --seed $((100 + have))
fi
if [[ ! -d $BASE/checkpoints/step_00006000 ]]; then
  resume=(); [[ -d $BASE/checkpoints ]] && resume=(--resume)
  run $PY -m dm1.cli train --config configs/dm1_lift_cpu.yaml --out $BASE --steps 6000 "${resume[@]}" --no-progress
fi
if [[ ! -d $REC ]]; then  # the 201 demos (hard links, no copy), then the recovery demos appended
  run mkdir -p $REC
  run bash -c "ln $DEMOS/episode_*.h5 $REC/"
fi
have=$(count $REC)
if [[ $DRY == 1 && ! -d $REC ]]; then have=201; fi  # a dry run links nothing: count the 201 it would link
if (( have < 261 )); then
  run $PY -m dm1.cli data collect --via-teleop -o $REC --episodes $((261 - have)) \
    --seed $((3000 + have - 201)) --recovery-fraction 1
fi
if [[ ! -d $TUNED/checkpoints/step_00003000 ]]; then
  resume=(); [[ -d $TUNED/checkpoints ]] && resume=(--resume)
  run $PY -m dm1.cli train --config $BASE/config.yaml --out $TUNED --init-from $BASE --steps 3000 \
    --set data.dataset_dir=$REC --set lr=0.0002 "${resume[@]}" --no-progress
fi
run $PY -m dm1.cli export $TUNED -o models/dm1_lift --force
if [[ $EVAL == 1 ]]; then
  run $PY -m dm1.cli eval --model models/dm1_lift --episodes 100 --seed 1000 --out runs/eval/bundled_s1000 --force
  run $PY -m dm1.cli eval --model models/dm1_lift --episodes 100 --seed 1100 --out runs/eval/bundled_s1100 --force
  run $PY -m dm1.cli eval --merge runs/eval/bundled_s1000 runs/eval/bundled_s1100 --model models/dm1_lift \
    --out runs/eval/bundled_200 --update-card --force
fi
