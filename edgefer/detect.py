"""Face detection: RetinaFace outputs -> boxes, scores and five landmarks, in numpy.

The graph gives, per prior box, a face probability and box / landmark offsets. Decoding only the
priors whose probability passes the threshold (a few dozen out of ~17k at 640x360) keeps the
numpy side well under a millisecond, so prior boxes, decoding and NMS stay here rather than in
the graph; prior boxes are cached per input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from .artifact import DEFAULT_DETECTOR
from .backends import open_backend
from .errors import EdgeferError


@dataclass
class Detections:
    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2 in frame pixels
    scores: np.ndarray  # (K,) float32
    landmarks: np.ndarray  # (K, 5, 2) float32: left eye, right eye, nose, mouth left, mouth right

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


@lru_cache(maxsize=16)
def prior_boxes(h: int, w: int, min_sizes: tuple, steps: tuple) -> np.ndarray:
    """(A, 4) priors cx, cy, w, h normalised to the input, in the order the heads emit them."""
    out = []
    for sizes, step in zip(min_sizes, steps):
        fh, fw = -(-h // step), -(-w // step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / h, (np.arange(fw) + 0.5) * step / w, indexing="ij")
        per = []
        for s in sizes:
            per.append(np.stack([cx, cy, np.full_like(cx, s / w), np.full_like(cy, s / h)], axis=-1))
        out.append(np.stack(per, axis=2).reshape(-1, 4))  # (fh, fw, anchors, 4): anchors vary fastest
    pri = np.concatenate(out).astype(np.float32)
    pri.setflags(write=False)
    return pri


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= thresh]
    return np.asarray(keep, np.int64)


def decode(
    loc: np.ndarray,
    conf: np.ndarray,
    landms: np.ndarray,
    priors: np.ndarray,
    variances: tuple[float, float],
    in_w: int,
    in_h: int,
    scale: float,
    conf_thresh: float,
    nms_thresh: float,
    top_k: int = 750,
    frame_wh: tuple[int, int] | None = None,
) -> Detections:
    """Decode one image's raw outputs (loc (A,4), conf (A,), landms (A,10)) into frame coordinates."""
    idx = np.flatnonzero(conf > conf_thresh)
    if idx.size == 0:
        return Detections.empty()
    if idx.size > top_k:
        idx = idx[np.argsort(-conf[idx])[:top_k]]
    p = priors[idx]
    v0, v1 = variances
    centre = p[:, :2] + loc[idx, :2] * v0 * p[:, 2:]
    size = p[:, 2:] * np.exp(loc[idx, 2:] * v1)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    lm = p[:, None, :2] + landms[idx].reshape(-1, 5, 2) * v0 * p[:, None, 2:]
    wh = np.array([in_w, in_h], np.float32) / scale
    boxes = (boxes.reshape(-1, 2, 2) * wh).reshape(-1, 4)
    lm = lm * wh
    scores = conf[idx]
    keep = nms(boxes, scores, nms_thresh)
    boxes, scores, lm = boxes[keep], scores[keep], lm[keep]
    if frame_wh is not None:
        fw, fh = frame_wh
        np.clip(boxes[:, 0::2], 0, fw, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, fh, out=boxes[:, 1::2])
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, scores, lm = boxes[ok], scores[ok], lm[ok]
    return Detections(boxes.astype(np.float32), scores.astype(np.float32), lm.astype(np.float32))


def detector_input_size(h: int, w: int, det_size: int | None) -> tuple[int, int, float]:
    """(in_h, in_w, scale) the detector sees for a frame of h x w: the long side becomes
    ``det_size`` (None or 0: native), never upscaled. Export's INT8 calibration uses it too."""
    if not det_size or max(h, w) <= det_size:
        return h, w, 1.0
    s = det_size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s)), s


class FaceDetector:
    """A RetinaFace-style detector artifact on a backend; call it on a BGR frame."""

    def __init__(
        self,
        artifact: Any = DEFAULT_DETECTOR,
        backend: str = "auto",
        det_size: int | None = 640,
        conf_thresh: float = 0.6,
        nms_thresh: float = 0.4,
        top_k: int = 750,
        min_face: float = 0.0,
        **backend_options: Any,
    ):
        self.backend = open_backend(artifact, backend, kind="detector", **backend_options)
        m = self.backend.manifest
        if m.output != "retinaface" or not m.detector:
            raise EdgeferError(f"{self.backend.artifact.describe()} is not a RetinaFace-style detector")
        p = m.detector
        self.min_sizes = tuple(tuple(s) for s in p["min_sizes"])
        self.steps = tuple(p["steps"])
        self.variances = tuple(p["variances"])
        self.spec = m.input
        self.det_size = det_size or None
        self.conf_thresh = conf_thresh
        self.nms_thresh = nms_thresh
        self.top_k = top_k
        self.min_face = min_face
        self._mean = np.asarray(self.spec.mean, np.float32)
        from .selfcheck import check_detector  # one synthetic inference: input fits, outputs finite, priors match
        check_detector(self)

    def input_size(self, h: int, w: int, det_size: int | None = None) -> tuple[int, int, float]:
        """(in_h, in_w, scale) for a frame of h x w: the long side becomes ``det_size`` (never upscaled).

        ``det_size`` overrides the detector's own for one call (the adaptive loop picks it per frame).
        """
        return detector_input_size(h, w, self.det_size if det_size is None else (det_size or None))

    def preprocess(self, frame: np.ndarray, det_size: int | None = None) -> tuple[np.ndarray, float]:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.ndim == 3 and frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        elif frame.ndim != 3 or frame.shape[2] != 3:
            raise EdgeferError(f"cannot detect faces in an array of shape {frame.shape}: expected a BGR image")
        if frame.dtype != np.uint8:
            raise EdgeferError(f"frames must be uint8, not {frame.dtype}")
        h, w = frame.shape[:2]
        ih, iw, s = self.input_size(h, w, det_size)
        # INTER_LINEAR_EXACT: the same pixels on x86-64 and aarch64 (plain INTER_LINEAR's SIMD paths
        # round differently per CPU, which moved boxes and flipped emotions on ARM; +0.17 ms per 1080p frame)
        img = frame if (ih, iw) == (h, w) else cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_LINEAR_EXACT)
        if self.spec.color == "rgb":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if self.spec.dtype == "uint8":
            blob = img[None]
        else:
            blob = ((img.astype(np.float32) - self._mean) / np.asarray(self.spec.std, np.float32))[None]
        if self.spec.layout == "NCHW":
            blob = blob.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(blob), s

    def postprocess(self, outputs: list[np.ndarray], in_hw: tuple[int, int], scale: float, frame_hw: tuple[int, int],
                    conf_thresh: float | None = None) -> Detections:
        loc, conf, landms = outputs[0][0], outputs[1][0], outputs[2][0]
        if conf.ndim == 2:  # a graph that emits two-class softmax
            conf = conf[:, 1]
        ih, iw = in_hw
        priors = prior_boxes(ih, iw, self.min_sizes, self.steps)
        if len(priors) != len(conf):
            raise EdgeferError(
                f"{self.backend.artifact.describe()} does not fit its manifest: {len(conf)} anchors for a {iw}x{ih} input, "
                f"the manifest's prior boxes give {len(priors)}"
            )
        thresh = self.conf_thresh if conf_thresh is None else conf_thresh
        det = decode(loc, conf, landms, priors, self.variances, iw, ih, scale, thresh, self.nms_thresh,
                     self.top_k, frame_wh=(frame_hw[1], frame_hw[0]))
        if self.min_face > 0 and len(det):
            side = np.maximum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
            ok = side >= self.min_face
            det = Detections(det.boxes[ok], det.scores[ok], det.landmarks[ok])
        return det

    def __call__(self, frame: np.ndarray, det_size: int | None = None, conf_thresh: float | None = None) -> Detections:
        """Faces in a BGR frame; ``det_size`` (long side in pixels, 0: native) and ``conf_thresh``
        override the detector's own for this call only, so one session serves every size the
        adaptive loop asks for, and its hysteresis (unsure faces that continue a track)."""
        blob, scale = self.preprocess(frame, det_size)
        hw = blob.shape[1:3] if self.spec.layout == "NHWC" else blob.shape[2:4]
        outs = self.backend.run(blob)
        return self.postprocess(outs, hw, scale, frame.shape[:2], conf_thresh)
