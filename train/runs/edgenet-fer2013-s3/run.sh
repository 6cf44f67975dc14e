#!/usr/bin/env bash
# Third stage of the EdgeNet FER2013 run: a fresh 40-epoch cosine schedule from stage 2's best
# (../edgenet-fer2013-ft, 66.82% PublicTest), lower peak learning rate.
# Starts, or resumes from last.pt when it exists. Run from the repository root:
#   nohup nice -n 19 bash train/runs/edgenet-fer2013-s3/run.sh &
set -euo pipefail
OUT=train/runs/edgenet-fer2013-s3
DATA=${EDGEFER_SHARED:-../shared}/data/fer2013
if [ -f "$OUT/last.pt" ]; then
  exec edgefer -q train --resume "$OUT/last.pt" --threads "${THREADS:-2}"
fi
exec edgefer -q train --arch edgenet --data "$DATA/train.npz" --val "$DATA/publictest.npz" \
  --init train/runs/edgenet-fer2013-ft/best.pth \
  --epochs 40 --batch 128 --opt adamw --lr 1e-3 --label-smoothing 0.1 --mixup 0.2 --ema --warmup 1 \
  --seed 2 --threads "${THREADS:-2}" -o "$OUT"
