"""Accuracy through the loop: labelled faces pasted into frames, found by the detector, cropped by the runtime.

``edgefer bench --data faces.npz --through-detector`` answers what the direct-crop number hides: a
dataset's faces come pre-cropped (FER2013: 48x48, cropped by its authors' rule), while a user's
faces are cropped by the bundled detector and aligner (box, eye-line rotation, ``crop.scale``).
Each labelled face is pasted into a larger frame at several sizes and positions, the detector runs
on the whole frame, the detection over the pasted face is classified exactly as ``edgefer run``
classifies it (same crop, same preprocessing), and top-1 is reported beside the direct-crop top-1
of the same faces. The gap is what the crop rule costs.

The frame: mid-gray with seeded low-amplitude noise; the face is pasted with a margin of a quarter
of its side extended by edge replication and feathered into the background, so that the runtime's
crop (which reaches beyond the dataset's tight crop) sees a continuation of the face's border
rather than a hard gray edge. A face the detector misses counts as wrong in ``top1_all`` and is left
out of ``top1_found``; ``found`` says how often that happened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import cv2
import numpy as np


@dataclass(frozen=True)
class ThroughConfig:
    """Where and how big the pasted faces are."""

    sizes: tuple[int, ...] = (64, 112, 192)  # pasted face side in frame pixels
    frame: tuple[int, int] = (640, 480)  # width, height
    positions: int = 1  # random positions per face and size
    seed: int = 0
    min_iou: float = 0.3  # a detection counts as the pasted face from this IoU with its square
    noise: float = 6.0  # background noise, gray levels
    sensor_noise: float = 0.0  # per-pixel Gaussian noise over the whole frame, face included (a camera's), gray levels


def paste(face: np.ndarray, side: int, xy: tuple[int, int], frame_wh: tuple[int, int], rng: np.random.Generator,
          noise: float, sensor_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A BGR frame holding ``face`` (gray or BGR, any size) as a ``side`` px square at ``xy`` (top left); its box.

    ``sensor_noise`` adds per-pixel Gaussian noise of that std to the finished frame, the face
    included, at the frame's resolution: what a camera adds before the runtime shrinks a big face.
    """
    w, h = frame_wh
    bg = np.full((h, w), 128.0, np.float32)
    if noise > 0:
        small = rng.normal(0.0, noise, (max(2, h // 16), max(2, w // 16))).astype(np.float32)
        bg += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    g = face if face.ndim == 2 else cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    g = cv2.resize(g, (side, side), interpolation=cv2.INTER_CUBIC if side > g.shape[0] else cv2.INTER_AREA)
    m = side // 4
    ext = cv2.copyMakeBorder(g, m, m, m, m, cv2.BORDER_REPLICATE).astype(np.float32)
    alpha = np.zeros(ext.shape, np.float32)
    alpha[m:-m, m:-m] = 1.0
    k = 2 * (m // 2) + 1
    alpha = np.maximum(cv2.GaussianBlur(alpha, (k, k), m / 2.0), 0.0)
    alpha[m:-m, m:-m] = 1.0  # the face itself is never blended
    x, y = xy
    x0, y0 = x - m, y - m
    fx0, fy0 = max(0, -x0), max(0, -y0)
    fx1, fy1 = ext.shape[1] - max(0, x0 + ext.shape[1] - w), ext.shape[0] - max(0, y0 + ext.shape[0] - h)
    region = bg[y0 + fy0:y0 + fy1, x0 + fx0:x0 + fx1]
    a = alpha[fy0:fy1, fx0:fx1]
    region[:] = a * ext[fy0:fy1, fx0:fx1] + (1.0 - a) * region
    if sensor_noise > 0:
        bg += rng.normal(0.0, sensor_noise, bg.shape).astype(np.float32)
    out = cv2.cvtColor(np.clip(np.rint(bg), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return out, np.array([x, y, x + side, y + side], np.float32)


def _iou(a: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[0], boxes[:, 0])
    y1 = np.maximum(a[1], boxes[:, 1])
    x2 = np.minimum(a[2], boxes[:, 2])
    y2 = np.minimum(a[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(area, 1e-6)


def find_pasted(detector: Any, frame: np.ndarray, box: np.ndarray, min_iou: float = 0.3):
    """(boxes, landmarks) of the detection over the pasted square ``box`` (1 row each), or None."""
    det = detector(frame)
    if not len(det):
        return None
    ious = _iou(box, det.boxes)
    j = int(np.argmax(ious))
    if ious[j] < min_iou:
        return None
    lm = None if det.landmarks is None else det.landmarks[j:j + 1].copy()
    return det.boxes[j:j + 1].copy(), lm


class ThroughLoop:
    """The pasted frames of one labelled set and the detector's verdict on each, shared by every row.

    The detector runs once per pasted frame (the first row pays it); each classifier row then
    classifies the same detections. Frames are rebuilt from their seed rather than kept (a 640x480
    frame per face and size would hold 3 GB for FER2013's test split at three sizes).
    """

    def __init__(self, detector: Any, images: np.ndarray | list[np.ndarray], cfg: ThroughConfig):
        w, h = cfg.frame
        for side in cfg.sizes:
            if side + side // 2 > min(w, h):
                raise ValueError(f"a {side} px face does not fit a {w}x{h} frame with its margin")
        self.detector, self.images, self.cfg = detector, images, cfg
        self._found: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None] | None] = {}

    def frames(self, side: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(index into the repeated labels, frame, pasted square) for every face and position."""
        cfg = self.cfg
        w, h = cfg.frame
        rng = np.random.default_rng([cfg.seed, side])
        m = side // 4
        k = 0
        for i in range(len(self.images)):
            for _ in range(cfg.positions):
                x = int(rng.integers(m, w - side - m + 1))
                y = int(rng.integers(m, h - side - m + 1))
                frame, box = paste(self.images[i], side, (x, y), (w, h), rng, cfg.noise, cfg.sensor_noise)
                yield k, frame, box
                k += 1

    def _detection(self, side: int, k: int, frame: np.ndarray, box: np.ndarray):
        key = (side, k)
        if key not in self._found:
            self._found[key] = find_pasted(self.detector, frame, box, self.cfg.min_iou)
        return self._found[key]

    def probabilities(self, classifier: Any, progress: Callable[[int], None] | None = None) -> dict[int, dict[str, np.ndarray]]:
        """Per pasted size: the classifier's probabilities (NaN rows for missed faces) and the found mask."""
        out: dict[int, dict[str, np.ndarray]] = {}
        n = len(self.images) * self.cfg.positions
        done = 0
        for side in self.cfg.sizes:
            probs = np.full((n, len(classifier.classes)), np.nan, np.float32)
            found = np.zeros(n, bool)
            for k, frame, box in self.frames(side):
                hit = self._detection(side, k, frame, box)
                if hit is not None:
                    found[k] = True
                    probs[k] = classifier(frame, hit[0], hit[1])[0]
                done += 1
                if progress is not None and done % 256 == 0:
                    progress(done)
            out[side] = {"probs": probs, "found": found}
        return out


def score_through(loop: ThroughLoop, classifier: Any, direct: np.ndarray, sc: dict[str, Any],
                  accuracy: Callable[[np.ndarray, dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Per size: found %, top-1 through the loop (found faces; all faces with misses wrong), the
    direct-crop top-1 of the same found faces, and the gap (direct minus loop, points).

    ``direct`` are the classifier's probabilities on the dataset crops, ``sc`` the scoring map of
    :meth:`edgefer.bench.scoring.Scoring.for_model`, ``accuracy`` its scorer.
    """
    reps = loop.cfg.positions
    # one entry per (face, position): the scoring map expanded to the repeated faces
    rows = np.repeat(sc["keep"], reps) * reps + np.tile(np.arange(reps), len(sc["keep"]))
    y = np.repeat(sc["y"], reps)
    direct_rep = np.repeat(direct, reps, axis=0)
    sizes: dict[str, Any] = {}
    for side, r in loop.probabilities(classifier).items():
        f = r["found"][rows]
        n_found = int(f.sum())
        found_sc = {**sc, "keep": rows[f], "y": y[f]}
        if n_found:
            loop_acc, dir_acc = accuracy(r["probs"], found_sc), accuracy(direct_rep, found_sc)
        else:
            loop_acc = dir_acc = {"top1": float("nan"), "macro_f1": float("nan")}
        # a missed face is a wrong answer for the user: top1_all counts it so
        top1_all = loop_acc["top1"] * n_found / max(len(rows), 1) if n_found else 0.0
        sizes[str(side)] = {
            "faces": int(len(rows)), "found_pct": round(100.0 * n_found / max(len(rows), 1), 2),
            "top1_found": round(loop_acc["top1"], 3), "macro_f1_found": round(loop_acc["macro_f1"], 3),
            "top1_all": round(top1_all, 3), "direct_top1_found": round(dir_acc["top1"], 3),
            "gap": round(dir_acc["top1"] - loop_acc["top1"], 3),
        }
    vals = list(sizes.values())
    return {"sizes": sizes,
            "top1_found": round(float(np.mean([v["top1_found"] for v in vals])), 3),
            "gap": round(float(np.mean([v["gap"] for v in vals])), 3)}
