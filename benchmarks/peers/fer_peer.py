"""Peer benchmark: the ``fer`` package (PyPI), run on the same videos as edgefer.

    .peers-venv/bin/python benchmarks/peers/fer_peer.py [VIDEO ...] [--modes haar,mtcnn]
        [--max-frames N] [--max-seconds S] [--torch-threads T] [--json benchmarks/results/peers_fer.json] [--note TEXT]

Runs in its own venv (see README.md beside this file): ``fer`` needs TensorFlow, and its MTCNN
detector needs facenet-pytorch (torch + torchvision); none of that belongs in edgefer's
dependencies. For each video and each mode it decodes every frame with OpenCV and calls
``detector.detect_emotions(frame)`` on it, exactly as a ``fer`` user's loop does:

* ``haar``: ``FER()`` -- OpenCV's Haar cascade on the gray frame (scaleFactor 1.1, minNeighbors
  5, minSize 50 px), then fer's mini-XCEPTION on each 64x64 gray face; in fer 25.x by default
  the quantized TFLite copy of it (``use_tflite=True``), one interpreter call per face;
* ``mtcnn``: ``FER(mtcnn=True)`` -- facenet-pytorch's MTCNN (P/R/O-Net cascade in torch) on the
  frame, then the same classifier.

Both keep fer's defaults: that is what users get. Measurements: see ``common.py``.

torchvision: facenet-pytorch imports ``torchvision.ops.batched_nms``. The only torchvision wheel
PyPI has for this torch (2.13.0+cpu) is built against torch's CUDA libraries
(``libc10_cuda.so``, ``libtorch_cuda.so``), which the CPU build of torch lacks, so its C++ op
library does not load and ``import torchvision`` fails ("operator torchvision::nms does not
exist"). For the ``mtcnn`` mode this script therefore registers ``torchvision::nms`` (and the
``qnms`` schema) with a numpy implementation (greedy NMS, same IoU rule) before importing
torchvision. All else is the packages' own code. NMS is a small part of MTCNN's per-frame work,
but where the real op is available (a CPU torchvision build matching torch), pass ``--real-nms``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DISTS = ("fer", "tensorflow-cpu", "tensorflow", "keras", "opencv-contrib-python", "opencv-python", "numpy",
         "torch", "torchvision", "facenet-pytorch")
NMS_SHIM = False


def register_numpy_nms() -> None:
    """Give ``torchvision::nms`` a CPU kernel in numpy so PyPI's CUDA-built torchvision imports beside
    torch's CPU build (see the module docstring)."""
    global NMS_SHIM
    import numpy as np
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

    def nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
        b = dets.detach().cpu().numpy().astype(np.float64)
        order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        area = (x2 - x1) * (y2 - y1)
        keep = []
        while order.size:
            i = order[0]
            keep.append(i)
            rest = order[1:]
            iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
            ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
            inter = iw * ih
            union = area[i] + area[rest] - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            order = rest[iou <= iou_threshold]
        return torch.as_tensor(np.asarray(keep, dtype=np.int64))

    lib.impl("nms", nms, "CPU")
    register_numpy_nms.lib = lib  # keep the registration alive
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True  # the ops it checks for are the ones registered above
    NMS_SHIM = True


def make_detector(mode: str, real_nms: bool, torch_threads: int | None = None):
    try:
        from fer import FER  # older releases export it here
    except ImportError:
        from fer.fer import FER
    if mode == "haar":
        return FER()
    if mode == "mtcnn":
        if not real_nms:
            register_numpy_nms()
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        return FER(mtcnn=True)
    raise SystemExit(f"unknown mode {mode!r} (haar, mtcnn)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", default=common.DEFAULT_VIDEOS)
    ap.add_argument("--modes", default="haar,mtcnn", help="comma-separated: haar (FER()), mtcnn (FER(mtcnn=True))")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop a video's loop after this many seconds (the JSON says how many frames ran)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--real-nms", action="store_true", help="use torchvision's own nms op (needs a matching CPU build)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads for MTCNN (default: torch's own, = cores)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran on the machine)")
    args = ap.parse_args()

    doc: dict = {"schema": common.SCHEMA, "peer": "fer", "note": args.note, "machine": common.machine_info(DISTS),
                 "settings": {"max_frames": args.max_frames, "max_seconds": args.max_seconds, "defaults": "FER() / FER(mtcnn=True), fer's defaults"},
                 "modes": {}}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        name = f"fer-{mode}"
        t0 = time.perf_counter()
        try:
            det = make_detector(mode, args.real_nms, args.torch_threads)
        except Exception as e:  # noqa: BLE001 - a peer that cannot start is reported, not crashed on
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            print(f"{name:16s} unavailable: {reason}", flush=True)
            doc["modes"][name] = {"status": "unavailable", "reason": reason}
            continue
        entry = {"status": "ok", "startup_s": round(time.perf_counter() - t0, 2),
                 "call": "FER(mtcnn=True).detect_emotions(frame)" if mode == "mtcnn" else "FER().detect_emotions(frame)",
                 "detector": "facenet-pytorch MTCNN" if mode == "mtcnn" else "OpenCV Haar cascade (frontalface_default)",
                 "classifier": "mini-XCEPTION 64x64 gray, TFLite quantized" if getattr(det, "use_tflite", False)
                 else "mini-XCEPTION 64x64 gray, Keras",
                 "nms": ("numpy kernel registered as torchvision::nms" if NMS_SHIM else "torchvision") if mode == "mtcnn" else None,
                 "videos": {}}
        if mode == "mtcnn":
            import torch

            entry["torch_threads"] = torch.get_num_threads()

        def process(frame, det=det):
            return len(det.detect_emotions(frame))

        for video in args.videos:
            r = common.run_video(video, process, args.max_frames, args.max_seconds)
            print(common.line(name, r), flush=True)
            entry["videos"][r["video"]] = r
        doc["modes"][name] = entry
    if args.json:
        common.write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
