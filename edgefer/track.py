"""IoU tracking of faces across frames, with per-track smoothing of emotion probabilities.

Greedy IoU matching is enough for faces: they rarely cross, and detection runs at a high rate.
Each track keeps an exponential moving average of its class probabilities, which removes the
frame-to-frame flicker of a per-crop classifier without delaying a real change by more than a
few frames (``smoothing`` = weight of the past; 0 disables).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``a`` (N,4) and ``b`` (M,4), x1y1x2y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Track:
    id: int
    box: np.ndarray
    probs: np.ndarray | None
    misses: int = 0
    hits: int = 1
    score: float = 1.0
    landmarks: np.ndarray | None = None
    # adaptive loop (edgefer.cadence): where the detector last saw the face and how it moved since
    det_box: np.ndarray | None = None  # box at the last detection that matched this track
    det_frame: int = -1
    coasted: int = 0  # detections in a row that missed this face while it was carried on
    velocity: np.ndarray | None = None  # d(x1, y1, x2, y2) per frame between the last two detections
    # classification reuse: the crop the classifier last saw, its raw output (and maps), its frame
    crop_sig: np.ndarray | None = None
    raw_probs: np.ndarray | None = None
    raw_cams: np.ndarray | None = None
    cls_frame: int = -1


class IoUTracker:
    def __init__(self, iou_thresh: float = 0.3, max_misses: int = 5, smoothing: float = 0.5):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1)")
        self.iou_thresh = iou_thresh
        self.max_misses = max_misses
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self._next = 1

    def reset(self) -> None:
        self.tracks = []

    def live(self) -> list[Track]:
        """Tracks seen in the latest update (what detection-free frames carry forward)."""
        return [t for t in self.tracks if t.misses == 0]

    def assign(self, boxes: np.ndarray) -> np.ndarray:
        """For each box, the index in ``self.tracks`` of the track it continues, or -1 (a new face).

        Greedy IoU, best pairs first, pairs under ``iou_thresh`` never matched: exactly the
        matching :meth:`update` does, available before it so the adaptive loop knows each face's
        track (and its cached classification) before classifying.
        """
        k = len(boxes)
        match = np.full(k, -1, np.int64)
        if self.tracks and k:
            iou = iou_matrix(np.stack([t.box for t in self.tracks]), boxes)
            used = set()
            # greedy: best pairs first
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
            for ti, di in order:
                if iou[ti, di] < self.iou_thresh:
                    break
                if ti in used or match[di] >= 0:
                    continue
                used.add(ti)
                match[di] = ti
        return match

    def update(
        self,
        boxes: np.ndarray,
        probs: np.ndarray | None,
        scores: np.ndarray | None = None,
        landmarks: np.ndarray | None = None,
        match: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Assign track ids to ``boxes``; returns (ids (K,), smoothed probs (K,C) or None).

        ``match``: the assignment :meth:`assign` gave for these boxes (computed here when None).
        """
        k = len(boxes)
        ids = np.zeros(k, np.int64)
        out = None if probs is None else np.array(probs, np.float32, copy=True)
        assigned = np.zeros(k, bool)
        used = set()
        if match is None:
            match = self.assign(boxes)
        if self.tracks and k:
            for di in np.flatnonzero(match >= 0):
                ti = int(match[di])
                t = self.tracks[ti]
                used.add(ti)
                assigned[di] = True
                t.box = boxes[di].copy()
                t.misses = 0
                t.hits += 1
                if scores is not None:
                    t.score = float(scores[di])
                if landmarks is not None:
                    t.landmarks = landmarks[di].copy()
                if out is not None:
                    if t.probs is not None and self.smoothing > 0:
                        out[di] = self.smoothing * t.probs + (1.0 - self.smoothing) * out[di]
                    t.probs = out[di].copy()
                ids[di] = t.id
        for ti, t in enumerate(self.tracks):
            if ti not in used:
                t.misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        for di in np.flatnonzero(~assigned):
            t = Track(self._next, boxes[di].copy(), None if out is None else out[di].copy(),
                      score=1.0 if scores is None else float(scores[di]),
                      landmarks=None if landmarks is None else landmarks[di].copy())
            self._next += 1
            self.tracks.append(t)
            ids[di] = t.id
        return ids, out
