"""What the peer benchmarks share: the video loop, its measurements, machine info and the JSON.

Standard library, numpy and OpenCV only, so it runs in the peer venv (which does not have
edgefer) as well as in the project's.

Measurements per video, the same for every peer:

* ``decode_fps``: a bare OpenCV read loop over the same frames, right after the peer's loop in
  the same run (the ceiling);
* ``e2e_fps``: the full loop (decode + the peer's call on the frame), start-up excluded: frames
  after the first divided by the time from the first frame's result to the last one's;
* ``latency_ms`` p50 / p90 / p99 / mean: per frame, decode plus the peer's call, the first frame
  (lazy initialisation) excluded and given on its own as ``first_frame_ms``;
* ``faces_per_frame`` mean / max, ``frames_with_faces`` and ``faces_total``.

``decode_fps`` uses the same first-to-last definition, so ``ratio = e2e_fps / decode_fps``
compares like with like.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

SCHEMA = 1
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VIDEO_DIR = REPO.parent / "shared" / "data" / "video"
DEFAULT_VIDEOS = [str(VIDEO_DIR / "webcam_720p.mp4"), str(VIDEO_DIR / "crowd_720p.mp4")]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(dists: Iterable[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "not installed"
    return out


def machine_info(dists: Iterable[str]) -> dict:
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "loadavg_at_start": load,
        "python_executable": sys.executable,
        "versions": versions(dists),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _fps(stamps: list[float]) -> float | None:
    """Frames after the first per second between the first and the last stamp."""
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def decode_only(path: str, max_frames: int | None) -> tuple[float | None, int]:
    """Decode-only fps of the same frames (first-to-last, like the e2e figure) and frames read."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot read video {path}")
    stamps: list[float] = []
    while max_frames is None or len(stamps) < max_frames:
        ok, _ = cap.read()
        if not ok:
            break
        stamps.append(time.perf_counter())
    cap.release()
    return _fps(stamps), len(stamps)


def run_video(path: str, process: Callable[[np.ndarray], int], max_frames: int | None,
              max_seconds: float | None = None) -> dict:
    """Decode every frame with OpenCV, call ``process(frame) -> faces found`` on each, measure.

    ``max_seconds`` stops the loop early (after the frame that crosses it), for peers too slow to
    run ``max_frames`` frames in reasonable time; ``frames`` says how many were run, and the
    decode-only figure is measured afterwards on exactly those frames."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot read video {path}")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    stamps: list[float] = []
    lat: list[float] = []
    faces: list[int] = []
    start = time.perf_counter()
    stopped_early = False
    while max_frames is None or len(stamps) < max_frames:
        t0 = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            break
        faces.append(int(process(frame)))
        t1 = time.perf_counter()
        stamps.append(t1)
        lat.append((t1 - t0) * 1000.0)
        if max_seconds is not None and t1 - start >= max_seconds:
            stopped_early = True
            break
    cap.release()
    decode_fps, n_decoded = decode_only(path, len(stamps))
    steady = np.asarray(lat[1:] if len(lat) > 1 else lat, np.float64)
    e2e = _fps(stamps)
    f = np.asarray(faces, np.int64)
    return {
        "video": Path(path).name,
        "size": [w, h],
        "frames": len(stamps),
        "stopped_by_max_seconds": stopped_early,
        "e2e_fps": round(e2e, 3) if e2e else None,
        "decode_fps": round(decode_fps, 2) if decode_fps else None,
        "decode_frames": n_decoded,
        "ratio": round(e2e / decode_fps, 4) if e2e and decode_fps else None,
        "latency_ms": {
            "p50": round(float(np.percentile(steady, 50)), 2),
            "p90": round(float(np.percentile(steady, 90)), 2),
            "p99": round(float(np.percentile(steady, 99)), 2),
            "mean": round(float(steady.mean()), 2),
        } if steady.size else None,
        "first_frame_ms": round(lat[0], 1) if lat else None,
        "faces_per_frame": {"mean": round(float(f.mean()), 3), "max": int(f.max())} if f.size else None,
        "frames_with_faces": int((f > 0).sum()),
        "faces_total": int(f.sum()),
    }


def line(peer: str, r: dict) -> str:
    lat = r["latency_ms"] or {}
    fpf = r["faces_per_frame"] or {}
    return (
        f"{peer:16s} {r['video']:22s} {r['frames']:4d} frames  e2e {r['e2e_fps'] or 0:7.2f} fps  "
        f"decode {r['decode_fps'] or 0:7.1f} fps  ratio {r['ratio'] or 0:.4f}  "
        f"p50 {lat.get('p50', 0):7.1f} ms  p99 {lat.get('p99', 0):7.1f} ms  "
        f"faces/frame {fpf.get('mean', 0):5.2f} (max {fpf.get('max', 0)})"
    )


def write_json(path: str, doc: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {p}", flush=True)
