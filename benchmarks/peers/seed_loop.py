"""Peer benchmark: a seed-style PyTorch loop (RetinaFace MobileNet-0.25 + MobileNetV3-Small at 224 px).

    python benchmarks/peers/seed_loop.py [VIDEO ...] [--det-size 0] [--batched] [--max-frames N]
        [--max-seconds S] [--json benchmarks/results/peers_seed_loop.json] [--note TEXT]

Runs in the project venv (it needs torch and edgefer's torch zoo, nothing else). What the seed
live demo did, in eager PyTorch on the CPU, one frame at a time:

1. the frame, BGR, minus RetinaFace's mean, NCHW float, through RetinaFace MobileNet-0.25 in
   torch (``edgefer.train.zoo.retinaface`` with ``../shared/weights/retinaface_mobilenet0.25.pth``)
   at the frame's **native size** by default (``--det-size N`` resizes the long side to N first,
   as edgefer's engine does with its default 640); prior boxes, decoding and NMS are edgefer's
   numpy ones (``edgefer.detect``) with the engine's thresholds (confidence 0.6, NMS IoU 0.4), so
   the face counts compare with edgefer's;
2. each face box cropped from the frame, resized to 224x224, BGR -> RGB, scaled to [0, 1],
   ImageNet mean/std, and classified by MobileNetV3-Small in torch (``edgefer.train.zoo.mobilenetv3``),
   **one torch call per face** as the seed demo did (``--batched``: one call for all of a frame's
   faces). No fine-tuned weights of the seed's classifier ship, so the classifier has random
   initial weights: the speed is the same, its labels mean nothing;
3. softmax and argmax per face.

torch threads = cores (``torch.set_num_threads(os.cpu_count())``), ``torch.inference_mode``.
Measurements and JSON as ``fer_peer.py`` (see ``common.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from edgefer.detect import decode, prior_boxes  # noqa: E402
from edgefer.train.zoo import mobilenetv3, retinaface  # noqa: E402

DISTS = ("torch", "numpy", "opencv-python-headless", "opencv-python", "opencv-contrib-python", "edgefer")
WEIGHTS = common.REPO.parent / "shared" / "weights" / "retinaface_mobilenet0.25.pth"
CONF_THRESH = 0.6  # edgefer's FaceDetector defaults
NMS_THRESH = 0.4
TOP_K = 750
FACE_SIZE = 224


class SeedLoop:
    def __init__(self, weights: Path, det_size: int = 0, batched: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.det = retinaface.build(weights=weights).eval()
        self.cls = mobilenetv3.build(num_classes=len(mobilenetv3.CLASSES)).eval()  # random init: see docstring
        self.det_size = det_size
        self.batched = batched
        self.det_mean = torch.tensor(retinaface.MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
        self.cls_mean = torch.tensor(mobilenetv3.MEAN, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
        self.cls_std = torch.tensor(mobilenetv3.STD, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
        self.min_sizes = tuple(tuple(s) for s in retinaface.MIN_SIZES)
        self.steps = tuple(retinaface.STEPS)
        self.variances = tuple(retinaface.VARIANCES)

    def detect(self, frame: np.ndarray):
        h, w = frame.shape[:2]
        s = 1.0
        img = frame
        if self.det_size and max(h, w) > self.det_size:
            s = self.det_size / max(h, w)
            img = cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_LINEAR)
        ih, iw = img.shape[:2]
        x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float() - self.det_mean
        loc, cls, ldm = self.det(x)
        conf = torch.softmax(cls, dim=-1)[0, :, 1].numpy()
        priors = prior_boxes(ih, iw, self.min_sizes, self.steps)
        return decode(loc[0].numpy(), conf, ldm[0].numpy(), priors, self.variances, iw, ih, s,
                      CONF_THRESH, NMS_THRESH, TOP_K, frame_wh=(w, h))

    def face_tensor(self, frame: np.ndarray, box: np.ndarray) -> torch.Tensor:
        x1, y1, x2, y2 = [int(round(float(v))) for v in box]
        crop = frame[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
        crop = cv2.cvtColor(cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        t = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        return (t - self.cls_mean) / self.cls_std

    def __call__(self, frame: np.ndarray) -> int:
        with torch.inference_mode():
            det = self.detect(frame)
            if len(det) == 0:
                return 0
            if self.batched:
                probs = torch.softmax(self.cls(torch.cat([self.face_tensor(frame, b) for b in det.boxes])), dim=1)
                labels = probs.argmax(1).tolist()
            else:
                labels = [int(torch.softmax(self.cls(self.face_tensor(frame, b)), dim=1).argmax(1))
                          for b in det.boxes]
        return len(labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", default=common.DEFAULT_VIDEOS)
    ap.add_argument("--det-size", type=int, default=0,
                    help="resize the frame's long side to this before RetinaFace (0: native size, the default; "
                         "edgefer's engine uses 640)")
    ap.add_argument("--batched", action="store_true", help="one classifier call per frame instead of one per face")
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop a video's loop after this many seconds (the JSON says how many frames ran)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    if not Path(args.weights).is_file():
        raise SystemExit(f"RetinaFace weights not found: {args.weights}")

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    loop = SeedLoop(Path(args.weights), args.det_size, args.batched)
    name = "seed-torch" + ("-batched" if args.batched else "") + (f"-det{args.det_size}" if args.det_size else "")
    entry = {
        "status": "ok",
        "startup_s": round(time.perf_counter() - t0, 2),
        "detector": "RetinaFace MobileNet-0.25 (torch, eager) at "
                    + (f"long side {args.det_size}" if args.det_size else "the frame's native size"),
        "classifier": "MobileNetV3-Small 224x224 RGB (torch, eager), random init weights",
        "classifier_calls": "one per frame (batched)" if args.batched else "one per face",
        "thresholds": {"conf": CONF_THRESH, "nms_iou": NMS_THRESH, "top_k": TOP_K},
        "torch_threads": torch.get_num_threads(),
        "videos": {},
    }
    for video in args.videos:
        r = common.run_video(video, loop, args.max_frames, args.max_seconds)
        print(common.line(name, r), flush=True)
        entry["videos"][r["video"]] = r
    doc = {"schema": common.SCHEMA, "peer": "seed-torch-loop", "note": args.note,
           "machine": common.machine_info(DISTS),
           "settings": {"max_frames": args.max_frames, "max_seconds": args.max_seconds, "det_size": args.det_size,
                        "batched": args.batched},
           "modes": {name: entry}}
    if args.json:
        common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
