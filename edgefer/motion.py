"""Cheap per-frame picture signals for the adaptive loop, and moving faces between detections.

Everything here works on one gray copy of the frame per frame (:class:`GrayFrame`): the green
channel of every 2nd (4th...) pixel, no more than :data:`FLOW_LONG_SIDE` pixels on the long side
(what sparse optical flow reads), and a thumbnail of about :data:`THUMB_LONG_SIDE` pixels (what
the scene-change and uncovered-motion tests read). Both cost about 0.1 ms at 720p, once per frame.

Two ways to move a tracked face's box and landmarks to the next frame without running the
detector, both measured by ``benchmarks/adaptive_loop.py`` against every-frame detection:

* :class:`FlowMotion` (the default): pyramidal Lucas-Kanade flow of the five landmarks and a
  small grid of points inside the box, checked forward-backward; the box moves by the shift
  fitted to the points that survived (a similarity fit, with zoom and rotation, is the
  ``flow-similarity`` model: on faces that talk and grimace its zoom follows the mouth, not the
  head, and the emotion agreement with every-frame detection dropped), each landmark by its own
  flow where that held. A face whose points do not follow asks for a detection.
* :class:`VelocityMotion`: each face keeps the per-frame shift and growth of its box between its
  last two detections (constant velocity); no pixels are read.

:class:`HoldMotion` (the box held still, what ``detect_every`` did) is the baseline both beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Flow runs on a gray frame no larger than this on the long side (720p -> 640x360): the faces the
# loop moves between detections are at least ~25 px at 720p, ~12 px here, which LK still follows
FLOW_LONG_SIDE = 640
# Scene-change and uncovered-motion tests read a thumbnail this size (720p -> 160x90: one
# thumbnail pixel is 8x8 frame pixels, a small face entering still changes a few of them)
THUMB_LONG_SIDE = 160


@dataclass
class GrayFrame:
    """A frame's gray copies: ``gray`` (flow) and ``thumb`` (change tests), with their scales."""

    gray: np.ndarray
    scale: float  # gray pixels per frame pixel
    thumb: np.ndarray
    thumb_scale: float  # thumbnail pixels per frame pixel

    @classmethod
    def of(cls, frame: np.ndarray) -> GrayFrame:
        """The green channel of every ``step``-th pixel (``step`` a power of two that brings the long
        side to :data:`FLOW_LONG_SIDE` or under): green carries most of the luminance, and taking
        it by slicing costs a tenth of a colour conversion of the whole frame (0.07 ms at 720p)."""
        h, w = frame.shape[:2]
        long = max(h, w)
        step = 1
        while long / step > FLOW_LONG_SIDE:
            step *= 2
        g = frame[::step, ::step] if frame.ndim == 2 else frame[::step, ::step, 1 if frame.shape[2] >= 3 else 0]
        g = np.ascontiguousarray(g)
        gw = g.shape[1]
        ts = THUMB_LONG_SIDE / long if long > THUMB_LONG_SIDE else 1.0
        tw, th = max(1, round(w * ts)), max(1, round(h * ts))
        thumb = cv2.resize(g, (tw, th), interpolation=cv2.INTER_AREA)
        return cls(g, gw / w, thumb, tw / w)


def scene_change(prev: GrayFrame, cur: GrayFrame) -> float:
    """Mean absolute difference of the two thumbnails (0-255): a cut or a large change is > ~30."""
    if prev.thumb.shape != cur.thumb.shape:
        return 255.0
    return float(cv2.norm(prev.thumb, cur.thumb, cv2.NORM_L1)) / prev.thumb.size


def uncovered_motion(prev: GrayFrame, cur: GrayFrame, boxes: np.ndarray, thresh: int = 12,
                     grow: float = 0.6) -> int:
    """Thumbnail pixels that changed by more than ``thresh`` outside every tracked face's region.

    A face's region is its box grown by ``grow`` of its size on each side plus the column below
    it to the bottom of the frame (the person's own body and hands, which move without any new
    face appearing). What moves anywhere else may be a face entering: the loop detects.
    """
    if prev.thumb.shape != cur.thumb.shape:
        return int(cur.thumb.size)
    diff = cv2.absdiff(prev.thumb, cur.thumb)
    _, moved = cv2.threshold(diff, thresh, 1, cv2.THRESH_BINARY)
    th, tw = moved.shape
    s = cur.thumb_scale
    for b in boxes:
        bw, bh = (b[2] - b[0]) * s, (b[3] - b[1]) * s
        x1 = max(0, int(b[0] * s - grow * bw))
        x2 = min(tw, int(np.ceil(b[2] * s + grow * bw)))
        y1 = max(0, int(b[1] * s - grow * bh))
        if x2 > x1 and y1 < th:
            moved[y1:, x1:x2] = 0
    return int(cv2.countNonZero(moved))


def face_points(boxes: np.ndarray, landmarks: np.ndarray, grid: int = 3) -> np.ndarray:
    """(K, 5 + grid*grid, 2): each face's landmarks and a grid over the middle of its box."""
    k = len(boxes)
    t = (np.arange(grid, dtype=np.float32) + 0.5) / grid * 0.6 + 0.2  # the middle 60% of the box
    gx, gy = np.meshgrid(t, t)
    g = np.stack([gx.ravel(), gy.ravel()], -1)  # (G, 2) in box units
    wh = (boxes[:, 2:4] - boxes[:, 0:2])[:, None, :]
    pts = boxes[:, None, 0:2] + g[None] * wh
    return np.concatenate([landmarks.reshape(k, 5, 2), pts], axis=1).astype(np.float32)


@dataclass
class Moved:
    """Boxes and landmarks moved to the current frame, and how much each move is to be trusted."""

    boxes: np.ndarray  # (K, 4)
    landmarks: np.ndarray  # (K, 5, 2)
    ok: np.ndarray  # (K,) bool: the move followed the face (False: detect soon)
    quality: np.ndarray  # (K,) 0..1: share of points that agreed with the fitted motion


class HoldMotion:
    """Boxes held where the last frame had them (the baseline)."""

    name = "hold"
    needs_pixels = False

    def move(self, prev: GrayFrame | None, cur: GrayFrame | None, boxes: np.ndarray, landmarks: np.ndarray,
             velocity: np.ndarray | None = None) -> Moved:
        k = len(boxes)
        return Moved(boxes.copy(), landmarks.copy(), np.ones(k, bool), np.ones(k, np.float32))


class VelocityMotion:
    """Constant velocity: each box moves by its per-frame shift between its last two detections.

    ``velocity`` (K, 4) is d(x1, y1, x2, y2)/frame; the landmarks follow the box (shift and scale
    about its centre).
    """

    name = "velocity"
    needs_pixels = False

    def move(self, prev: GrayFrame | None, cur: GrayFrame | None, boxes: np.ndarray, landmarks: np.ndarray,
             velocity: np.ndarray | None = None) -> Moved:
        k = len(boxes)
        if velocity is None or k == 0:
            return HoldMotion().move(prev, cur, boxes, landmarks)
        nb = boxes + velocity
        c0 = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
        c1 = (nb[:, 0:2] + nb[:, 2:4]) / 2
        s = np.maximum(nb[:, 2] - nb[:, 0], 1e-3) / np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
        lm = (landmarks - c0[:, None]) * s[:, None, None] + c1[:, None]
        return Moved(nb.astype(np.float32), lm.astype(np.float32), np.ones(k, bool), np.ones(k, np.float32))


class FlowMotion:
    """Sparse pyramidal Lucas-Kanade flow of each face's points, one motion fit per face.

    Forward-backward checked: a point is kept when tracking it back lands within ``fb_px`` gray
    pixels of where it started (``fb_px=0``: no backward pass). The fit (``fit``: ``shift``,
    ``rigid`` or ``similarity``, ``a, b, tx, ty``: x' = a x - b y + tx, y' = b x + a y + ty) is a
    closed-form weighted least-squares fit per face, vectorised over all faces; points whose
    residual exceeds ``fit_px`` are dropped and the fit is redone once. With ``own_landmarks`` each
    landmark that passed the checks goes where its own flow took it (a head tilt turns the eye
    line, which the crop aligns on), the others follow the fit.
    """

    name = "flow"
    needs_pixels = True

    def __init__(self, win: int = 15, levels: int = 2, grid: int = 3, fb_px: float = 1.0, fit_px: float = 1.5,
                 min_points: int = 5, fit: str = "shift", own_landmarks: bool = True):
        self.win = (win, win)
        self.levels = levels
        self.grid = grid
        self.fb_px = fb_px
        self.fit_px = fit_px
        self.min_points = min_points
        self.fit = fit
        self.own_landmarks = own_landmarks
        self._crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)

    def move(self, prev: GrayFrame | None, cur: GrayFrame | None, boxes: np.ndarray, landmarks: np.ndarray,
             velocity: np.ndarray | None = None) -> Moved:
        k = len(boxes)
        if k == 0 or prev is None or cur is None or prev.gray.shape != cur.gray.shape:
            return Moved(boxes.copy(), landmarks.copy(), np.zeros(k, bool), np.zeros(k, np.float32))
        s = cur.scale
        pts = face_points(boxes, landmarks, self.grid) * s  # (K, P, 2) in gray pixels
        n_p = pts.shape[1]
        # LK builds both images' pyramids on every call, which costs more than tracking a few dozen
        # points: run it on the part of the frame around the faces when that is much smaller
        a, b, off = self._roi(prev.gray, cur.gray, boxes * s)
        p0 = (pts - off).reshape(-1, 1, 2).astype(np.float32)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, winSize=self.win, maxLevel=self.levels,
                                              criteria=self._crit)
        good = st1.ravel() == 1
        if self.fb_px > 0:
            p0b, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, winSize=self.win,
                                                   maxLevel=self.levels, criteria=self._crit)
            good &= (st2.ravel() == 1) & (np.linalg.norm((p0b - p0).reshape(-1, 2), axis=1) < self.fb_px)
        w = good.astype(np.float32).reshape(k, n_p)
        q = p1.reshape(k, n_p, 2) + off
        a, b, t = _fit_similarity(pts, q, w, self.fit)
        res = np.linalg.norm(_apply(pts, a, b, t) - q, axis=2)
        w = w * (res < self.fit_px)
        a, b, t = _fit_similarity(pts, q, w, self.fit)
        n_ok = w.sum(axis=1)
        ok = n_ok >= self.min_points
        # a face whose fit fails keeps its box (and asks for a detection through ``ok``)
        a = np.where(ok, a, 1.0)
        b = np.where(ok, b, 0.0)
        t = np.where(ok[:, None], t, 0.0)
        # frame coordinates: x' = R x + t / s (R is scale-free of the gray's resolution)
        t_frame = t / s
        c = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
        c_new = _apply(c[:, None, :], a, b, t_frame)[:, 0]
        zoom = np.sqrt(a * a + b * b)
        half = (boxes[:, 2:4] - boxes[:, 0:2]) / 2 * zoom[:, None]
        nb = np.concatenate([c_new - half, c_new + half], axis=1)
        lm = _apply(landmarks.reshape(k, 5, 2), a, b, t_frame)
        if self.own_landmarks:  # each landmark where its own flow took it, when that flow held
            own = w[:, :5] > 0
            lm = np.where(own[..., None], q[:, :5] / s, lm)
        return Moved(nb.astype(np.float32), lm.astype(np.float32), ok, (n_ok / n_p).astype(np.float32))


    def _roi(self, a: np.ndarray, b: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of both gray images cut to the faces (each grown by a quarter of its size and the
        reach of the pyramid search on every side), with the offset of the cut; the whole images
        when that would be most of them."""
        h, w = a.shape
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
        pad = 0.25 * size + self.win[0] * 2 ** (self.levels - 1)  # the reach of LK's pyramid search
        x0, y0 = np.maximum(np.floor((boxes[:, 0:2] - pad).min(axis=0)), 0).astype(int)
        x1 = int(min(np.ceil((boxes[:, 2] + pad[:, 0]).max()), w))
        y1 = int(min(np.ceil((boxes[:, 3] + pad[:, 0]).max()), h))
        if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > 0.6 * w * h:
            return a, b, np.zeros(2, np.float32)
        return a[y0:y1, x0:x1], b[y0:y1, x0:x1], np.array([x0, y0], np.float32)


def _fit_similarity(p: np.ndarray, q: np.ndarray, w: np.ndarray, fit: str = "similarity") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity q ~ R p + t per face: (a (K,), b (K,), t (K, 2)).

    ``fit="rigid"``: rotation and shift, no zoom; ``"shift"``: the shift alone."""
    sw = np.maximum(w.sum(axis=1, keepdims=True), 1e-6)
    mp = (p * w[..., None]).sum(axis=1) / sw
    mq = (q * w[..., None]).sum(axis=1) / sw
    pc, qc = p - mp[:, None], q - mq[:, None]
    den = np.maximum((w * (pc ** 2).sum(axis=2)).sum(axis=1), 1e-6)
    a = (w * (pc[..., 0] * qc[..., 0] + pc[..., 1] * qc[..., 1])).sum(axis=1) / den
    b = (w * (pc[..., 0] * qc[..., 1] - pc[..., 1] * qc[..., 0])).sum(axis=1) / den
    if fit == "shift":
        a, b = np.ones_like(a), np.zeros_like(b)
    elif fit == "rigid":
        z = np.maximum(np.sqrt(a * a + b * b), 1e-6)
        a, b = a / z, b / z
    rot_mp = np.stack([a * mp[:, 0] - b * mp[:, 1], b * mp[:, 0] + a * mp[:, 1]], axis=1)
    return a, b, mq - rot_mp


def _apply(p: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    a, b = a[:, None], b[:, None]
    return np.stack([a * x - b * y + t[:, None, 0], b * x + a * y + t[:, None, 1]], axis=-1)


MOTIONS = {"flow": FlowMotion, "flow-similarity": lambda: FlowMotion(fit="similarity"),
           "velocity": VelocityMotion, "hold": HoldMotion}


def motion_model(name: str):
    """A motion model by name (flow, velocity, hold)."""
    try:
        return MOTIONS[name]()
    except KeyError:
        raise ValueError(f"unknown motion model {name!r}: {', '.join(MOTIONS)}") from None
