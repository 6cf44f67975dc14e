#!/usr/bin/env bash
# The reproducible benchmark suite: writes benchmarks/results/. Run from the repository root in
# the project's venv (pip install -e '.[dev]'), on an otherwise idle machine:
#   bash benchmarks/run_all.sh            # everything
#   ONLY=bench bash benchmarks/run_all.sh # one part: bench | loop | adaptive | soak | peers
# SHARED points at the shared data (default ../shared). Peers need their own venv, see
# benchmarks/peers/README.md (PEERS_VENV, default .peers-venv); missing peers are skipped.
set -euo pipefail
SHARED=${SHARED:-../shared}
OUT=benchmarks/results
PEERS_VENV=${PEERS_VENV:-.peers-venv}
mkdir -p "$OUT"
part() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

if part bench; then
  # every backend x precision of the default classifier (EdgeNet, flip in the graph), accuracy on
  # FER2013 PublicTest, INT8 calibrated on 300 class-balanced training faces, the loop on the webcam
  # clip with and without heatmaps; ensembles of bundled classifiers as extra rows
  ENS=$(mktemp -d)
  edgefer ensemble -o "$ENS/mean" --rule mean mini-xception edgenet-fast
  edgefer ensemble -o "$ENS/vote" --rule vote mini-xception edgenet-fast edgenet
  edgefer bench --data "$SHARED/data/fer2013/publictest.npz" --calib "$SHARED/data/fer2013/train.npz" \
    --video "$SHARED/data/video/webcam_720p.mp4" --video-frames 0 --batch 1,32 --explain \
    --artifact "$ENS/mean" --artifact "$ENS/vote" \
    --json "$OUT/bench_edgenet.json" --csv "$OUT/bench_edgenet.csv" --plot "$OUT/bench_edgenet.png"
  python benchmarks/classifier_latency.py --json "$OUT/classifier_latency.json"
  for m in mini-xception edgenet-fast; do
    f=${m//-/_}
    edgefer bench --model "$m" --data "$SHARED/data/fer2013/publictest.npz" --calib "$SHARED/data/fer2013/train.npz" \
      --batch 1,32 --json "$OUT/bench_$f.json" --csv "$OUT/bench_$f.csv" --plot "$OUT/bench_$f.png"
  done
fi

if part loop; then
  python benchmarks/loop_modes.py "$SHARED"/data/video/*.mp4 --json "$OUT/loop_modes.json" --plot "$OUT/loop_modes.png"
  python benchmarks/loop_modes.py "$SHARED"/data/video/{crowd,webcam}_720p.mp4 --json "$OUT/loop_classifiers.json" \
    --modes "overlap=" "fast=--classifier edgenet-fast" "mini-x=--classifier mini-xception" "fast-every3=--classifier edgenet-fast --detect-every 3"
  if command -v py-spy > /dev/null; then
    python benchmarks/profile_loop.py "$SHARED"/data/video/*.mp4 --json "$OUT/profile_loop.json" --plot "$OUT/profile_loop.png"
  fi
fi

if part adaptive; then
  # the adaptive default vs the every-frame reference and each lever, every shared video; live streams
  python benchmarks/adaptive_loop.py --recall
  python benchmarks/streams.py --counts 1 2 4 8
  python benchmarks/backend_auto.py
fi
if part soak; then
  python benchmarks/soak.py  # 20,000 frames, RSS / threads / fds sampled
fi
if part peers; then
  VIDEOS=("$SHARED/data/video/webcam_720p.mp4" "$SHARED/data/video/crowd_720p.mp4")
  python benchmarks/peers/seed_loop.py "${VIDEOS[@]}" --max-frames 300 --json "$OUT/peers_seed_loop.json" || echo "seed loop failed" >&2
  if [ -x "$PEERS_VENV/bin/python" ]; then
    "$PEERS_VENV/bin/python" benchmarks/peers/fer_peer.py "${VIDEOS[@]}" --max-frames 300 --json "$OUT/peers_fer.json" || echo "fer peer failed" >&2
  else
    echo "skipping the fer peer: no venv at $PEERS_VENV (see benchmarks/peers/README.md)" >&2
  fi
fi
python - <<'PY'
import json, platform
from edgefer.bench import machine_info
open("benchmarks/results/machine.json", "w").write(json.dumps(machine_info(), indent=1) + "\n")
PY
echo "results in $OUT"
