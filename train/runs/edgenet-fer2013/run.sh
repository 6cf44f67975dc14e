#!/usr/bin/env bash
# The EdgeNet FER2013 training run: starts, or resumes from last.pt when it exists.
# Run from the repository root:  nohup nice -n 19 bash train/runs/edgenet-fer2013/run.sh &
set -euo pipefail
OUT=train/runs/edgenet-fer2013
DATA=${EDGEFER_SHARED:-../shared}/data/fer2013
if [ -f "$OUT/last.pt" ]; then
  exec edgefer -q train --resume "$OUT/last.pt" --threads "${THREADS:-2}"
fi
exec edgefer -q train --arch edgenet --data "$DATA/train.npz" --val "$DATA/publictest.npz" \
  --epochs 80 --batch 128 --opt adamw --lr 2e-3 --label-smoothing 0.1 --mixup 0.2 --ema --warmup 3 \
  --seed 0 --threads "${THREADS:-2}" -o "$OUT"
