"""Runtime views of training faces: each face cropped the way ``edgefer run`` would crop it.

A dataset face (FER2013: a 48x48 crop by the dataset authors' rule) is not what the classifier sees
at run time: there the bundled detector finds the face in a frame, and the aligner cuts
``crop.scale`` x its box, rotated so the eyes are level, resampled to the model's input. The
difference costs accuracy through the loop (``edgefer bench --through-detector``). This module
makes, for every face of a training file, ``per_face`` such runtime views: the face is pasted into
a frame at a random size and position (:func:`edgefer.bench.through.paste`, the bench's own
frames), the detector runs on the frame, and the detection over the face is cropped by
:func:`edgefer.align.crop_faces` with the runtime's default crop rule.

``edgefer train --views VIEWS.npz --view-prob P`` then trains on a view instead of the dataset
crop for a share P of the samples. Views are keyed by the face's row in the file, so a carved
validation face's views are never trained on.

The file (``np.savez_compressed``): ``views`` uint8 (N, V, H, W, C), ``found`` bool (N, V) (False
where the detector missed the face: that view is a copy of the dataset crop, never used),
``rows`` int64 (N,), ``meta`` (a JSON string: data digest, input size and colour, crop rule,
detector, sizes, frame, seed).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import EdgeferError

FORMAT = "edgefer-train-views/1"


def make_views(data: str, size: tuple[int, int], color: str, per_face: int = 2, sides: tuple[int, int] = (48, 144),
               frame: tuple[int, int] = (320, 240), seed: int = 0, detector: Any = None, limit: int | None = None,
               quiet: bool = False, sensor_noise: float = 0.0) -> dict[str, Any]:
    """Views of every face in ``data`` (see the module doc); returns the arrays and the meta record.

    ``sensor_noise`` > 0: each view's frame gets camera noise (:func:`paste`'s ``sensor_noise``) of a
    std drawn uniformly from [0, sensor_noise], so big faces reach the crop as a camera delivers
    them and are shrunk by the runtime's own crop, noise included. 0 draws nothing more, so the
    frames are those of files made before the option existed.
    """
    from edgefer.align import DEFAULT_CROP, crop_faces
    from edgefer.artifact import InputSpec
    from edgefer.bench.through import find_pasted, paste
    from edgefer.detect import FaceDetector
    from edgefer.progress import progress

    from .data import load_raw

    lo, hi = sides
    w, h = frame
    if not 16 <= lo <= hi or hi + hi // 2 > min(w, h):
        raise EdgeferError(f"face sides {lo}-{hi} px do not fit a {w}x{h} frame with their margin")
    if per_face < 1:
        raise EdgeferError("--per-face must be >= 1")
    if not 0.0 <= sensor_noise <= 64.0:
        raise EdgeferError(f"--sensor-noise {sensor_noise:g}: expected 0 to 64 gray levels")
    ds = load_raw(data)
    n = min(len(ds), limit) if limit else len(ds)
    det = detector if detector is not None else FaceDetector(threads=1)
    spec = InputSpec(dtype="uint8", layout="NHWC", size=[int(size[0]), int(size[1])], color=color)
    views = np.zeros((n, per_face, spec.size[0], spec.size[1], spec.channels), np.uint8)
    found = np.zeros((n, per_face), bool)
    used_sides = np.zeros((n, per_face), np.int16)
    used_noise = np.zeros((n, per_face), np.float32)
    rng = np.random.default_rng([seed, 20261129])
    t0 = time.time()
    bar = progress(range(n), desc="views", unit="face", disable=quiet)
    for i in bar:
        for v in range(per_face):
            side = int(rng.integers(lo, hi + 1))
            m = side // 4
            x = int(rng.integers(m, w - side - m + 1))
            y = int(rng.integers(m, h - side - m + 1))
            std = float(rng.uniform(0.0, sensor_noise)) if sensor_noise > 0 else 0.0
            img, box = paste(ds.images[i], side, (x, y), (w, h), rng, 6.0, std)
            hit = find_pasted(det, img, box)
            used_sides[i, v] = side
            used_noise[i, v] = std
            if hit is None:
                continue
            found[i, v] = True
            views[i, v] = crop_faces(img, hit[0], hit[1], spec, DEFAULT_CROP, raw=True)[0]
    bar.close()
    meta = {
        "format": FORMAT, "data": str(data), "data_sha256": ds.provenance.get("sha256"), "count": int(n),
        "per_face": int(per_face), "input": {"size": spec.size, "color": color}, "crop": dict(DEFAULT_CROP),
        "detector": det.backend.artifact.describe(), "sides": [int(lo), int(hi)], "frame": [int(w), int(h)],
        "sensor_noise": float(sensor_noise), "seed": int(seed), "found_pct": round(100.0 * float(found.mean()), 2),
        "seconds": round(time.time() - t0, 1),
    }
    return {"views": views, "found": found, "rows": ds.rows[:n].copy(), "sides": used_sides, "noise": used_noise,
            "meta": meta}


def save_views(out: str | os.PathLike, made: dict[str, Any]) -> Path:
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, views=made["views"], found=made["found"], rows=made["rows"], sides=made["sides"],
                        noise=made["noise"], meta=np.array(json.dumps(made["meta"])))
    os.replace(tmp, out)
    return out


def load_views(path: str | os.PathLike, data_sha256: str | None, size: list[int], color: str) -> dict[str, Any]:
    """A views file checked against the training data and the model input; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise EdgeferError(f"--views {path}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            views, found, rows = z["views"], z["found"], z["rows"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise EdgeferError(f"--views {path}: not a views file of edgefer train views ({str(e).splitlines()[0][:120]})") from None
    if meta.get("format") != FORMAT:
        raise EdgeferError(f"--views {path}: format {meta.get('format')!r}, expected {FORMAT}")
    if data_sha256 and meta.get("data_sha256") != data_sha256:
        raise EdgeferError(f"--views {path}: made from other data ({meta.get('data')}), not this --data")
    if list(meta["input"]["size"]) != list(size) or meta["input"]["color"] != color:
        raise EdgeferError(f"--views {path}: {meta['input']['size']} {meta['input']['color']} crops, the model takes "
                           f"{list(size)} {color}")
    if views.dtype != np.uint8 or views.ndim != 5 or found.shape != views.shape[:2] or rows.shape != views.shape[:1]:
        raise EdgeferError(f"--views {path}: arrays of inconsistent shapes")
    return {"views": views, "found": found, "rows": rows, "meta": meta}


def views_for(loaded: dict[str, Any], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(views, found) aligned with a dataset's file ``rows``; rows the file lacks get no views."""
    pos = {int(r): i for i, r in enumerate(loaded["rows"].tolist())}
    idx = np.array([pos.get(int(r), -1) for r in rows.tolist()], np.int64)
    have = idx >= 0
    v, f = loaded["views"], loaded["found"]
    out_v = np.zeros((len(rows),) + v.shape[1:], np.uint8)
    out_f = np.zeros((len(rows), v.shape[1]), bool)
    out_v[have] = v[idx[have]]
    out_f[have] = f[idx[have]]
    return out_v, out_f
