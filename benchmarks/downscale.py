"""What shrinking a big face costs: one bilinear resample against box-averaging (the runtime since 2026-11-29).

A camera's face is often 150-400 px and the classifier wants 48 or 64. Resampled in one bilinear
step, each output pixel reads 4 frame pixels of the 25-60 it covers, so skin texture and sensor
noise alias into the crop; box-averaging (``cv2.INTER_AREA``, ``edgefer.align.prefilter``)
averages them. Two measurements, the same labelled faces both ways:

1. **Dataset faces from a high-resolution source** (``resize_faces``, what ``edgefer bench
   --data`` and ``predict_images`` do with a folder of large face photos): each PublicTest face
   enlarged 5x (bicubic), camera noise added at that resolution, then shrunk to the model's input
   bilinear (the code before) or box-averaged (now).
2. **Through the loop** (``crop_faces``, what ``edgefer run`` does): ``edgefer bench
   --through-detector``'s pasted frames with per-pixel camera noise over the whole frame
   (``--through-noise``), faces of 64-288 px, the detector's box cropped with the supersampling
   switched off (``MAX_PREFILTER = 1``, the code before) and on. The detector runs once per
   frame; both crops classify the same detections.

    python benchmarks/downscale.py [--data-size 1000] [MODEL ...]

Writes ``benchmarks/results/downscale.json`` and prints two tables (top-1, %).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def enlarged(images: np.ndarray, factor: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    """Each face enlarged ``factor`` x (bicubic) with Gaussian camera noise of std ``noise`` at that size."""
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        big = cv2.resize(im, (im.shape[1] * factor, im.shape[0] * factor), interpolation=cv2.INTER_CUBIC)
        if noise > 0:
            big = np.clip(big.astype(np.float32) + rng.normal(0, noise, big.shape), 0, 255).astype(np.uint8)
        out.append(big)
    return out


def main(argv: list[str] | None = None) -> int:
    from edgefer import align
    from edgefer.bench import accuracy, load_scoring
    from edgefer.bench.through import ThroughConfig, ThroughLoop, score_through
    from edgefer.classify import EmotionClassifier
    from edgefer.detect import FaceDetector
    from edgefer.errors import EdgeferError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["edgenet3", "mini-xception"], help="bundled names or artifact folders")
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/fer2013/publictest.npz"))
    ap.add_argument("--data-size", type=int, default=1000, help="a seeded subset (0: all)")
    ap.add_argument("--factor", type=int, default=5, help="enlargement of the dataset faces (part 1)")
    ap.add_argument("--noise", default="0,6,12", help="camera noise std of part 1, comma list")
    ap.add_argument("--through-noise", default="0,8", help="camera noise std of part 2, comma list")
    ap.add_argument("--sizes", default="64,112,192,288", help="pasted face sizes of part 2")
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/downscale.json"))
    a = ap.parse_args(argv)
    try:
        sc = load_scoring(a.data, None, a.data_size or None)
        clfs = {m: EmotionClassifier(m, backend="onnxruntime", threads=1) for m in a.models}
        det = FaceDetector("retinaface-mnet025", backend="onnxruntime", threads=1)
        noises = [float(v) for v in a.noise.split(",")]
        through_noises = [float(v) for v in a.through_noise.split(",")]
        sizes = tuple(int(v) for v in a.sizes.split(","))
    except (EdgeferError, ValueError) as e:
        print(f"downscale: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    t0 = time.time()
    res: dict = {"data": a.data, "faces": int(len(sc.labels)), "dataset": {}, "through": {}}

    def say(msg: str) -> None:
        print(f"[{time.time() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True)

    # 1. dataset faces from a high-resolution source
    for noise in noises:
        big = enlarged(sc.images, a.factor, noise)
        for name, clf in clfs.items():
            h, w = clf.spec.size
            m = sc.for_model(clf.classes)
            bil = np.stack([cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR) for b in big])
            cell = {"bilinear": accuracy(clf.predict_images(bil), m)["top1"],
                    "area": accuracy(clf.predict_images(big), m)["top1"]}  # the product's own resize
            res["dataset"].setdefault(name, {})[f"noise {noise:g}"] = {k: round(v, 2) for k, v in cell.items()}
        say(f"dataset faces x{a.factor}, noise {noise:g}")

    # 2. through the loop, the detector's box cropped both ways
    for noise in through_noises:
        loop = ThroughLoop(det, sc.images, ThroughConfig(sizes=sizes, sensor_noise=noise))
        for name, clf in clfs.items():
            m = sc.for_model(clf.classes)
            direct = clf.predict_images(sc.images)
            cell = {}
            for mode, cap in (("bilinear", 1), ("area", align.MAX_PREFILTER)):
                keep, align.MAX_PREFILTER = align.MAX_PREFILTER, cap
                try:
                    r = score_through(loop, clf, direct, m, accuracy)
                finally:
                    align.MAX_PREFILTER = keep
                cell[mode] = {s: v["top1_found"] for s, v in r["sizes"].items()} | {"mean": r["top1_found"]}
            res["through"].setdefault(name, {})[f"noise {noise:g}"] = cell
        say(f"through the loop, camera noise {noise:g}")

    print(f"1. {res['faces']} PublicTest faces enlarged {a.factor}x with camera noise, shrunk to the input: "
          "top-1 bilinear -> box-averaged")
    print("| model | " + " | ".join(f"noise {n:g}" for n in noises) + " |")
    print("|---|" + "---|" * len(noises))
    for name, cells in res["dataset"].items():
        print(f"| `{name}` | " + " | ".join(f"{c['bilinear']:.1f} -> **{c['area']:.1f}**" for c in cells.values()) + " |")
    print("\n2. through the loop, camera noise over the frame: top-1 bilinear -> box-averaged")
    print("| model, camera noise | " + " | ".join(f"{s} px" for s in sizes) + " | mean |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name, cells in res["through"].items():
        for key, c in cells.items():
            print(f"| `{name}`, {key} | " + " | ".join(f"{c['bilinear'][k]:.1f} -> {c['area'][k]:.1f}"
                                                      for k in [*map(str, sizes), "mean"]) + " |")
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    say(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
