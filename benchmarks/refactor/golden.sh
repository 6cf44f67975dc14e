#!/usr/bin/env bash
# Issue 16's check: the outputs of `edgefer export`, `run` and `bench` for fixed inputs, written to
# OUT with one sha256 per file, so that two trees (before and after a refactor) can be compared:
#   bash benchmarks/refactor/golden.sh OUT_A   # in the old tree
#   bash benchmarks/refactor/golden.sh OUT_B   # in the new tree
#   diff OUT_A/SHA256SUMS OUT_B/SHA256SUMS
# Volatile fields (timestamps, durations, measured speeds, absolute paths) are stripped before
# hashing by normalise.py; everything else must be byte-identical.
set -uo pipefail
OUT=${1:?usage: golden.sh OUT}
SHARED=${SHARED:-$(cd "$(dirname "$0")/../../.." && pwd)/shared}
mkdir -p "$OUT/export"
export EDGEFER_AUTO=first EDGEFER_DECODER=${EDGEFER_DECODER:-opencv}
CAL="$SHARED/data/fer2013/train.npz"
VAL="$SHARED/data/fer2013/publictest.npz"
log() { echo "[golden] $*" >&2; }
for model in edgenet mini-xception retinaface-mnet025; do
  for target in onnx openvino; do
    for prec in fp32 fp16 int8; do
      flag=""; [ "$prec" = fp16 ] && flag="--fp16"; [ "$prec" = int8 ] && flag="--int8 --calib $CAL --calib-size 64"
      [ "$model" = retinaface-mnet025 ] && [ "$prec" = int8 ] && flag="--int8 --calib $SHARED/data/photos --calib-size 4"
      d="$OUT/export/$model-$target-$prec"
      log "export $model $target $prec"
      edgefer -q export "$model" --target "$target" $flag -o "$d" >"$d.stdout" 2>"$d.stderr"; echo "rc=$?" >>"$d.stdout"
    done
  done
done
log "run photos"
edgefer -q run "$SHARED/data/photos" --events "$OUT/run_photos.jsonl" --no-display --every-frame --threads 1 >"$OUT/run_photos.stdout" 2>&1
log "run video"
edgefer -q run "$SHARED/data/video/stage_360p.mp4" --max-frames 60 --events "$OUT/run_video.jsonl" --no-display --threads 1 >"$OUT/run_video.stdout" 2>&1
log "run video every-frame"
edgefer -q run "$SHARED/data/video/expressive_512.mp4" --max-frames 60 --every-frame --events "$OUT/run_video_every.jsonl" --no-display --threads 1 >"$OUT/run_video_every.stdout" 2>&1
log "bench"
edgefer -q bench --data "$VAL" --data-size 300 --targets onnx,openvino --precisions fp32,fp16,int8 --calib "$CAL" --calib-size 64 --min-seconds 0.05 --repeats 1 --json "$OUT/bench.json" >"$OUT/bench.stdout" 2>&1
python "$(dirname "$0")/normalise.py" "$OUT" >"$OUT/SHA256SUMS"
log "wrote $OUT/SHA256SUMS"
