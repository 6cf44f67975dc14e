"""Accuracy, agreement, size and latency of exported classifier artifacts vs an FP32 reference.

    python -m edgefer.export.precision_table --data publictest.npz --ref mini-xception ART_DIR [ART_DIR ...]

A quick check of what ``edgefer export`` produced (the bench, ``edgefer bench``, is the full
tool): per artifact, size (MB), top-1, drop vs the FP32 reference in points, top-1 agreement
with it, and median ms per face at batch 1 and batch 32 through edgefer's own backend.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _latency(backend, x: np.ndarray, batch: int, seconds: float = 1.5, min_runs: int = 20) -> float:
    """Median ms per face over repeated calls of ``batch`` faces (after a warm-up)."""
    xb = x[:batch]
    for _ in range(3):
        backend.run(xb)
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        backend.run(xb)
        times.append(time.perf_counter() - t0)
        if len(times) > 2000:
            break
    return 1000.0 * float(np.median(times)) / batch


def measure(refs: list[str], data: str, ref: str = "mini-xception", usage: str | None = "PublicTest",
            threads: int | None = None, rounds: int = 3) -> list[dict]:
    """Accuracy on all of ``data``; latency as the best of ``rounds`` interleaved medians (a
    shared machine's load shows up as slow rounds, not as a slower model)."""
    from edgefer.align import resize_faces
    from edgefer.artifact import load
    from edgefer.backends import open_backend
    from edgefer.calibration.datasets import load_labeled

    from .crops import map_labels
    from .output import artifact_size as _artifact_size

    images, labels, classes = load_labeled(data, usage=usage)
    rows, runs = [], []
    ref_pred = None
    for r in [ref] + list(refs):
        art = load(r)
        m = art.manifest
        x = resize_faces(images, m.input)
        y = map_labels(classes, m.classes, labels)
        name = "onnxruntime" if m.target == "onnx" else m.target if m.target != "trt" else "tensorrt"
        b = open_backend(art, name, threads=threads)
        probs = np.concatenate([np.asarray(b.run(x[i : i + 256])[0]) for i in range(0, len(x), 256)])
        pred = probs.argmax(1)
        if ref_pred is None:
            ref_pred, ref_top1 = pred, float((pred == y).mean())
        top1 = float((pred == y).mean())
        info = b.info()
        i8 = (m.extra or {}).get("int8", {})
        rows.append({
            "artifact": str(r),
            "target": m.target,
            "precision": m.precision,
            "variant": i8.get("variant") or i8.get("algorithm"),
            "size_mb": round(_artifact_size(art.root, m), 3),
            "top1": round(100 * top1, 2),
            "drop_points": round(100 * (ref_top1 - top1), 2),
            "agreement": round(100 * float((pred == ref_pred).mean()), 2),
            "executes": info.get("executes") or info.get("providers", [""])[0],
            "faces": int(len(y)),
            "threads": threads,
        })
        runs.append((b, x))
    for key, bs in (("ms_b1", 1), ("ms_b32", 32)):
        best = [float("inf")] * len(runs)
        for _ in range(rounds):
            for i, (b, x) in enumerate(runs):
                best[i] = min(best[i], _latency(b, x, bs, seconds=0.6))
        for row, v in zip(rows, best):
            row[key] = round(v, 4)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgefer.export.precision_table")
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--data", required=True, help="labeled faces (fer2013.csv, class folders, .npz)")
    ap.add_argument("--usage", default="PublicTest")
    ap.add_argument("--ref", default="mini-xception", help="FP32 reference artifact")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    rows = measure(a.artifacts, a.data, a.ref, a.usage, a.threads, a.rounds)
    cols = ["target", "precision", "variant", "size_mb", "top1", "drop_points", "agreement", "ms_b1", "ms_b32", "executes"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
