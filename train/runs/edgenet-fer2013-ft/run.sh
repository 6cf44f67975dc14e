#!/usr/bin/env bash
# Second stage of the EdgeNet FER2013 run: the first stage (../edgenet-fer2013, 80-epoch schedule)
# was cut off at epoch 22 when its session ended and its last.pt was lost; this stage starts from
# that stage's best.pth (63.08% PublicTest) with a fresh 40-epoch cosine schedule.
# Starts, or resumes from last.pt when it exists. Run from the repository root:
#   nohup nice -n 19 bash train/runs/edgenet-fer2013-ft/run.sh &
set -euo pipefail
OUT=train/runs/edgenet-fer2013-ft
DATA=${EDGEFER_SHARED:-../shared}/data/fer2013
if [ -f "$OUT/last.pt" ]; then
  exec edgefer -q train --resume "$OUT/last.pt" --threads "${THREADS:-2}"
fi
exec edgefer -q train --arch edgenet --data "$DATA/train.npz" --val "$DATA/publictest.npz" \
  --init train/runs/edgenet-fer2013/best.pth \
  --epochs 40 --batch 128 --opt adamw --lr 1.5e-3 --label-smoothing 0.1 --mixup 0.2 --ema --warmup 1 \
  --seed 1 --threads "${THREADS:-2}" -o "$OUT"
