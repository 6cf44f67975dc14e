"""The adaptive video loop's decisions: when to detect, at what size, and which faces to classify.

Re-detecting every frame at 640 px spends most of the loop's CPU finding faces the tracker
already knows, at a resolution a big face does not need. :class:`AdaptiveLoop` spends it where
the picture asks for it:

* **Cadence.** A detection runs when a new face may have entered (the start, a scene cut or a
  large change on a thumbnail, motion where no tracked face is: the face's box grown by 60% and
  the column below it, its body, are masked out), when a tracked face stops being followed (its
  flow fit fails: at once), or when the detector was unsure of one (missed by the last detection
  and carried on, or scored under ``low_score``: within ``unsure_every`` frames); otherwise every
  ``every`` frames. ``every`` is chosen by the loop: +1 after each *quiet* detection (the same
  faces, each within ``quiet_iou`` of where it had been moved) and halved after an eventful one,
  between ``min_every`` and ``max_every`` (2 and 8). Motion detections run at most every
  ``motion_gap`` (2) frames: a face that walks in is found within 2 frames of being detectable.
* **Hysteresis.** The detector reports faces down to ``keep_score`` (0.45): under its own
  threshold (0.6) a face only continues a track, so a tracked face does not blink out on one
  unsure frame; a face a detection misses is carried on (moved) for ``coast`` detection.
* **Scale.** The detector's input follows the tracked faces: the long side is the smallest that
  keeps the smallest tracked face at ``reliable_px`` detector pixels (RetinaFace mnet0.25 finds
  ~98% of the faces it finds at 640 px once they are 48 px or more in its input:
  ``benchmarks/adaptive_loop.py --recall``), at least ``min_size``, never above the user's
  ``det_size``. A detection that looks for new faces (start, cut, motion, no track, and every
  ``full_every`` frames) runs at the full ``det_size``, so small faces entering a crowd are
  found. A reduced-size detection confirms a moved face rather than replacing its box: its boxes
  are coarser, and taking them cost 5-9 points of emotion agreement on close-up faces.
* **Motion.** Frames between detections move each face with the face (:mod:`edgefer.motion`).
* **Classification.** A face whose aligned crop (what the classifier sees) differs from the crop
  it was last classified on by less than ``cls_diff`` grey levels on average, and whose last
  classification was decided (top-1 ahead of the runner-up by ``cls_margin``), reuses it, for at
  most ``cls_max_age`` frames. Faces smaller than the classifier's input skip the margin test and
  tolerate ``cls_small_diff``: their crops are upsampled blur that jitters from frame to frame.

Decisions only read state that exists when they are made, in frame order, on one thread, so a
file gives the same output every run whatever the threads' timing. With the detector working one
frame ahead (``overlap``), the decision for frame N is taken before frame N-1 is classified: it
sees the tracks as of frame N-2 (one frame of lag) and frame N's own pixels.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from .motion import GrayFrame, motion_model, scene_change, uncovered_motion

SIZE_STEP = 32  # detector sizes are multiples of this: few distinct input shapes for the runtime


@dataclass
class AdaptiveConfig:
    """Knobs of the adaptive loop; the lever switches exist to measure each lever alone."""

    cadence: bool = True  # skip detection when nothing asks for it (False: detect every frame)
    scale: bool = True  # detector size follows the tracked faces (False: always det_size)
    motion: str = "flow"  # how faces move between detections: flow, velocity, hold
    classify_skip: bool = True  # reuse a face's classification while its crop is unchanged
    min_every: int = 2
    max_every: int = 8
    start_every: int = 2
    full_every: int = 15  # frames between full-size detections (new small faces, fresh geometry); 0: never forced
    reliable_px: int = 48  # smallest face side (detector input pixels) found as reliably as at 640 px
    min_size: int = 160  # smallest detector long side
    cut_thresh: float = 30.0  # thumbnail mean abs difference that is a scene cut / large change
    motion_thresh: int = 12  # thumbnail grey-level change that counts as motion
    motion_pixels: int = 2  # moved thumbnail pixels outside the faces that ask for a detection
    motion_gap: int = 2  # at most one motion-triggered detection per this many frames
    low_score: float = 0.75  # a tracked face below this detector score, or one the last detection
    unsure_every: int = 2  # missed (carried on: ``coast``), is re-detected at least this often
    keep_score: float = 0.45  # a tracked face stays while the detector scores it this high (new faces: the detector's threshold)
    coast: int = 1  # detections in a row that may miss a tracked face before it is dropped (it moves on meanwhile)
    quiet_iou: float = 0.6  # a detection is quiet when every face is within this IoU of where it was moved
    cls_diff: float = 4.0  # mean abs grey-level change of the crop that forces a fresh classification
    cls_max_age: int = 8  # frames a classification may be reused, at most
    cls_margin: float = 0.2  # reuse only a classification whose top-1 beats the runner-up by this much...
    # ... unless the face is smaller than ``cls_small`` classifier inputs (48 px for EdgeNet): its crop is
    # an upsampled blur, a new classification of it adds jitter, not information; its crop may change
    # by ``cls_small_diff`` (resampling noise) before it is classified again
    cls_small: float = 1.0
    cls_small_diff: float = 8.0
    cls_center: float = 0.0  # compare crops without this share of each side (0.15: the middle 70%)
    cv_one_thread: bool = True  # OpenCV on one thread while the loop runs (restored after)
    # a reduced-size detection confirms a moved face rather than replacing its box and landmarks
    # ("box" / "landmarks": keep only that one; False: take the detector's)
    keep_geometry: bool | str = True

    def __post_init__(self) -> None:
        if self.motion not in ("flow", "flow-similarity", "velocity", "hold"):
            raise ValueError(f"motion must be flow, flow-similarity, velocity or hold, not {self.motion!r}")
        if not 1 <= self.min_every <= self.start_every <= self.max_every:
            raise ValueError("need 1 <= min_every <= start_every <= max_every")
        if self.cls_max_age < 1:
            raise ValueError("cls_max_age must be >= 1")


@dataclass
class Decision:
    frame: int
    detect: bool
    size: int | None = None  # detector long side for this frame (None: the user's det_size, or no detection)
    reason: str = ""
    reduced: bool = False  # detected below the user's det_size (the scale lever)
    gray: GrayFrame | None = field(default=None, repr=False)


def _ceil_to(v: float, step: int) -> int:
    return int(-(-v // step) * step)


class _Agg:
    """Count, mean, min and max of a stream of numbers in constant memory (a run may last weeks)."""

    def __init__(self) -> None:
        self.n, self.total, self.lo, self.hi = 0, 0.0, float("inf"), float("-inf")

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        self.lo = min(self.lo, v)
        self.hi = max(self.hi, v)

    def summary(self, digits: int = 2) -> dict[str, float | int | None]:
        if not self.n:
            return {"min": None, "mean": None, "max": None}
        return {"min": self.lo, "mean": round(self.total / self.n, digits), "max": self.hi}


class AdaptiveLoop:
    """State and counters of the adaptive decisions for one run (see the module docstring).

    ``fixed_every``: a cadence forced by the user (``detect_every``): detection every N frames
    (and whenever no face is tracked), the other levers still on.
    """

    def __init__(self, config: AdaptiveConfig, det_size: int | None, fixed_every: int | None = None):
        self.cfg = config
        self.det_size = det_size  # the user's size: full-size passes and the upper bound (None: native)
        self.fixed_every = fixed_every
        self.motion = motion_model(config.motion)
        self.reset_state()
        self.reset_counters()

    # -------------------------------------------------------------------------------- state
    def reset_state(self) -> None:
        """Forget the picture and the cadence (a new source, or between unrelated images)."""
        self.every = self.cfg.start_every if self.fixed_every is None else self.fixed_every
        self.last_detect = -(10**9)
        self.last_full = -(10**9)
        self.prev_gray: GrayFrame | None = None  # the previous *decided* frame's gray
        self.lost_at = -1  # frame of a detection that left a tracked face unmatched
        self.unstable_at = -1  # frame whose motion fit failed for a face
        self.grays: dict[int, GrayFrame] = {}
        self.last_processed = -1
        self.reduced_frames: set[int] = set()  # decided frames detected below det_size, not yet processed

    def reset_counters(self) -> None:
        """Zero what :meth:`report` reports (a new run)."""
        self.counts: Counter = Counter()
        self.log: deque = deque(maxlen=512)  # the latest detections: (frame, reason, size), for inspection
        self.reasons: Counter = Counter()
        self.sizes: Counter = Counter()
        self.gaps = _Agg()  # frames between detections
        self.everys = _Agg()  # the cadence bound chosen after each detection
        self.face_frames = 0
        self.faces_carried = 0
        self.classified = 0
        self.reused = 0
        self.max_reuse_age = 0
        self.motion_iou = _Agg()  # IoU of each moved face with its box at the next detection
        self.flow_failed = 0

    def needs_pixels(self) -> bool:
        c = self.cfg
        return c.cadence or self.motion.needs_pixels

    # ------------------------------------------------------------------------------ decide
    def decide(self, frame: int, image: np.ndarray, tracks: list) -> Decision:
        """Detect this frame or not, and at what size. ``tracks``: the live tracks now."""
        c = self.cfg
        gray = GrayFrame.of(image) if self.needs_pixels() else None
        if gray is not None:
            self.grays[frame] = gray
        prev, self.prev_gray = self.prev_gray, gray
        since = frame - self.last_detect
        reason = ""
        if self.last_detect < -(10**8):
            reason = "start"
        elif self.fixed_every is not None:
            if since >= self.fixed_every:
                reason = "cadence"
            elif not tracks:
                reason = "no-track"
        elif not c.cadence:
            reason = "every-frame"
        else:
            cut = scene_change(prev, gray) if prev is not None and gray is not None else 255.0
            if cut > c.cut_thresh:
                reason = "cut"
                self.counts["scene_cuts"] += 1
            elif self.unstable_at >= self.last_detect:  # a face stopped following its points
                reason = "unstable"
            elif since >= c.motion_gap and prev is not None and \
                    uncovered_motion(prev, gray, np.array([t.box for t in tracks], np.float32).reshape(-1, 4),
                                     c.motion_thresh) >= c.motion_pixels:
                reason = "motion"
            elif since >= self.every:
                reason = "cadence"
            elif since >= c.unsure_every and (self.lost_at >= self.last_detect or any(t.coasted for t in tracks)):
                reason = "lost"
            elif since >= c.unsure_every and tracks and min(t.score for t in tracks) < c.low_score:
                reason = "low-score"
        if not reason:
            return Decision(frame, False, None, "", gray=gray)
        size = self._size(frame, reason, tracks, image.shape[:2])
        if size != self.det_size:
            self.reduced_frames.add(frame)
        if self.last_detect > -(10**8):
            self.gaps.add(since)
        self.last_detect = frame
        self.log.append((frame, reason, size))
        self.reasons[reason] += 1
        self.sizes[size if size else "native"] += 1
        return Decision(frame, True, size, reason, reduced=size != self.det_size, gray=gray)

    def _size(self, frame: int, reason: str, tracks: list, hw: tuple[int, int]) -> int | None:
        """Detector long side: the user's for a search for new faces, else the tracked faces' need."""
        c = self.cfg
        full = self.det_size
        long = max(hw)
        cap = min(full, long) if full else long
        # a search for faces not tracked (or one just lost, which may be the smallest) is full size
        search = reason in ("start", "cut", "motion", "no-track", "lost") or not tracks or self.lost_at > self.last_full
        if not c.scale or search or frame - self.last_full >= c.full_every > 0:
            self.last_full = frame
            return full
        smallest = min(max(t.box[2] - t.box[0], t.box[3] - t.box[1]) for t in tracks)
        need = _ceil_to(long * c.reliable_px / max(smallest, 1.0), SIZE_STEP)
        size = max(c.min_size, need)
        if size >= cap:
            self.last_full = frame
            return full
        return size

    # ------------------------------------------------------------------------ after a frame
    def detected(self, frame: int, lost: bool, new_faces: int, ious: np.ndarray) -> None:
        """Adapt the cadence after the detection of ``frame``: ``ious`` between each matched face's
        moved box and its detected box; ``lost``: a tracked face was not found; ``new_faces``: faces
        not tracked before."""
        c = self.cfg
        if lost:
            self.lost_at = frame
        for v in ious:
            self.motion_iou.add(float(v))
        if self.fixed_every is None:
            quiet = not lost and new_faces == 0 and (len(ious) == 0 or float(ious.min()) >= c.quiet_iou)
            self.every = min(self.every + 1, c.max_every) if quiet else max(c.min_every, self.every // 2)
        self.everys.add(self.every)

    def moved(self, frame: int, ok: np.ndarray) -> None:
        """Note faces whose motion fit failed on ``frame``: the next decision detects."""
        if len(ok) and not ok.all():
            self.unstable_at = frame
            self.flow_failed += int((~ok).sum())

    def gray(self, frame: int, image: np.ndarray) -> GrayFrame | None:
        """The gray copy of ``frame`` (made at decision time; made now when it was not)."""
        g = self.grays.get(frame)
        if g is None and self.motion.needs_pixels:
            g = self.grays[frame] = GrayFrame.of(image)
        for k in [k for k in self.grays if k < self.last_processed]:
            del self.grays[k]
        return g

    # ---------------------------------------------------------------------- classification
    def reuse(self, frame: int, crops: np.ndarray, tracks: list) -> np.ndarray:
        """Which faces (rows of ``crops``, their tracks or None) may reuse their last classification."""
        c = self.cfg
        k = len(crops)
        out = np.zeros(k, bool)
        if not c.classify_skip:
            return out
        for i, t in enumerate(tracks):
            if t is None or t.crop_sig is None or t.raw_probs is None or t.crop_sig.shape != crops[i].shape:
                continue
            if frame - t.cls_frame >= c.cls_max_age:
                continue
            small = max(t.box[2] - t.box[0], t.box[3] - t.box[1]) < c.cls_small * crops.shape[2]
            if c.cls_margin > 0 and not small:  # near a class boundary any change flips it: classify afresh
                top = np.partition(t.raw_probs, -2)[-2:]
                if top[1] - top[0] < c.cls_margin:
                    continue
            a, b = crops[i], t.crop_sig
            if c.cls_center > 0:  # the face itself, not the background around it that moves with the crop
                h, w = a.shape[:2]
                dy, dx = int(h * c.cls_center), int(w * c.cls_center)
                a, b = a[dy:h - dy, dx:w - dx], b[dy:h - dy, dx:w - dx]
            diff = cv2.norm(a, b, cv2.NORM_L1) / a.size
            out[i] = diff < (c.cls_small_diff if small else c.cls_diff)
        return out

    # ------------------------------------------------------------------------------ report
    def report(self, frames: int) -> dict[str, Any]:
        """What the loop decided over the run, JSON-serialisable."""
        det = sum(self.reasons.values())
        return {
            "mode": "adaptive" if self.fixed_every is None else f"fixed cadence {self.fixed_every}",
            "levers": {k: v for k, v in asdict(self.cfg).items() if k in ("cadence", "scale", "motion", "classify_skip")},
            "settings": {k: v for k, v in asdict(self.cfg).items() if k not in ("cadence", "scale", "motion", "classify_skip")},
            "frames": frames,
            "detections": det,
            "detections_pct": round(100.0 * det / frames, 1) if frames else 0.0,
            "frames_carried": frames - det,
            "detect_reasons": dict(self.reasons.most_common()),
            "detector_sizes": {str(k): v for k, v in sorted(self.sizes.items(), key=lambda kv: str(kv[0]))},
            "gap_frames": self.gaps.summary(),
            "cadence_every": {**self.everys.summary(),
                              "bound": [self.cfg.min_every, self.cfg.max_every] if self.fixed_every is None
                              else [self.fixed_every, self.fixed_every]},
            "scene_cuts": int(self.counts["scene_cuts"]),
            "face_frames": self.face_frames,
            "faces_carried": self.faces_carried,
            "classifications": {"run": self.classified, "reused": self.reused,
                                "reused_pct": round(100.0 * self.reused / max(1, self.classified + self.reused), 1),
                                "max_age_frames": self.max_reuse_age, "max_age_bound": self.cfg.cls_max_age},
            "motion": {"model": self.cfg.motion, "failed_fits": self.flow_failed,
                       "moved_vs_detected_iou_mean": self.motion_iou.summary(4)["mean"]},
        }
