"""The fused video loop: detect -> align/crop -> one batched classify -> track and smooth.

``Pipeline`` is the Python API behind ``edgefer run``::

    pipe = Pipeline(classifier="mini-xception")
    for result in pipe.run("video.mp4"):
        print(result.frame, [(f.emotion, f.confidence) for f in result.faces])

Per frame it records the milliseconds of each stage, so the CLI summary and the bench report
where the time goes (p50/p99 per stage, end to end, and dropped frames for live sources).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR
from .classify import EmotionClassifier
from .detect import Detections, FaceDetector
from .sources import Frame, Source, open_source
from .track import IoUTracker

STAGES = ("decode", "detect", "classify", "track", "total")


@dataclass
class Face:
    box: list[float]
    score: float
    track: int
    emotion: str
    confidence: float
    probs: dict[str, float]
    landmarks: list[list[float]] | None = None
    # --explain: the map of the labelled class in [0, 1] (crop coordinates, h x w), the
    # frame -> crop affine it is warped back with, and the crop size (edgefer.explain)
    heat: np.ndarray | None = field(default=None, repr=False)
    affine: np.ndarray | None = field(default=None, repr=False)
    crop_size: tuple[int, int] | None = None

    def to_event(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "track": self.track,
            "emotion": self.emotion,
            "confidence": round(self.confidence, 4),
            "probs": {k: round(v, 4) for k, v in self.probs.items()},
        }


@dataclass
class FrameResult:
    frame: int
    time_s: float
    faces: list[Face]
    image: np.ndarray | None = None
    name: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        return {"frame": self.frame, "time_s": round(self.time_s, 4), "faces": [f.to_event() for f in self.faces]}


class Stats:
    """Per-stage latencies (ms) and counters of a run."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {s: [] for s in STAGES}
        self.frames = 0
        self.faces = 0
        self.start = time.perf_counter()
        self.first_result: float | None = None
        self.end: float | None = None

    def add(self, r: FrameResult) -> None:
        if self.first_result is None:
            self.first_result = time.perf_counter()
        self.frames += 1
        self.faces += len(r.faces)
        for k, v in r.timings_ms.items():
            self.ms.setdefault(k, []).append(v)

    def finish(self) -> None:
        self.end = time.perf_counter()

    def fps(self) -> float:
        """End-to-end frames per second, from the first result to the last (start-up excluded)."""
        end = self.end or time.perf_counter()
        if self.first_result is None or self.frames < 2:
            total = end - self.start
            return self.frames / total if total > 0 else 0.0
        span = end - self.first_result
        return (self.frames - 1) / span if span > 0 else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, v in self.ms.items():
            if v:
                a = np.asarray(v)
                out[k] = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}
        return out


class Pipeline:
    """Detector + classifier + tracker, fed frame by frame or by a whole source.

    Speed levers (all measured in benchmarks/, see its README):

    * ``detect_every=N``: run the detector on every N-th frame and carry the live tracks' boxes
      and landmarks over the frames between; every frame's faces are still classified. A frame
      with no live track is always detected, so a face that appears is found at once.
    * ``overlap=True``: detection of frame N runs on its own thread while frame N-1 is
      classified, tracked and written (ONNX Runtime and OpenVINO release the GIL).

    ``explain=True``: the classifier also returns its class activation maps in the same
    inference (the classifier's CAM output, or the bundled CAM twin, see :mod:`edgefer.explain`);
    each face carries the map of its labelled class (``Face.heat``), and the time spent picking
    and placing the maps is the ``explain`` stage (drawing them is the caller's).
    """

    def __init__(
        self,
        detector: Any = DEFAULT_DETECTOR,
        classifier: Any = DEFAULT_CLASSIFIER,
        backend: str = "auto",
        det_size: int | None = 640,
        conf_thresh: float | None = None,
        smoothing: float = 0.5,
        threads: int | None = None,
        detect_every: int = 1,
        overlap: bool = True,
        explain: bool = False,
        **backend_options: Any,
    ):
        det_kw: dict[str, Any] = {"det_size": det_size}
        if conf_thresh is not None:
            det_kw["conf_thresh"] = conf_thresh
        if threads:
            backend_options["threads"] = threads
        if "spin" not in backend_options and not os.environ.get("EDGEFER_ORT_SPIN"):
            # two sessions on two threads: ORT's spinning workers of the idle one steal the cores
            # of the busy one (webcam_720p: 65 -> 89 fps end to end with spinning off)
            backend_options["spin"] = False
        if detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self.detector = FaceDetector(detector, backend=backend, **det_kw, **backend_options)
        if explain:
            from .explain import cam_classifier

            self.classifier = cam_classifier(classifier, backend=backend, **backend_options)
        else:
            self.classifier = EmotionClassifier(classifier, backend=backend, **backend_options)
        self.explain = explain
        self.classes = self.classifier.classes
        self.tracker = IoUTracker(smoothing=smoothing)
        self.detect_every = detect_every
        self.overlap = overlap
        self.stats = Stats()
        self._last_detect = -(10**9)

    def reset(self) -> None:
        """Forget tracks (between unrelated images)."""
        self.tracker.reset()
        self._last_detect = -(10**9)

    def _needs_detection(self, frame: int) -> bool:
        return self.detect_every <= 1 or frame - self._last_detect >= self.detect_every or not self.tracker.live()

    def _carried(self) -> Detections:
        """The live tracks as detections, for frames the detector skips."""
        live = self.tracker.live()
        if not live:
            return Detections.empty()
        lms = [t.landmarks if t.landmarks is not None else np.zeros((5, 2), np.float32) for t in live]
        return Detections(
            np.stack([t.box for t in live]).astype(np.float32),
            np.array([t.score for t in live], np.float32),
            np.stack(lms).astype(np.float32),
        )

    def detect(self, image: np.ndarray, frame: int = 0) -> tuple[Detections | None, float]:
        """Detections for ``frame`` (None when the detector is skipped) and the ms it took."""
        if not self._needs_detection(frame):
            return None, 0.0
        t0 = time.perf_counter()
        det = self.detector(image)
        self._last_detect = frame
        return det, (time.perf_counter() - t0) * 1e3

    def process(self, image: np.ndarray, frame: int = 0, time_s: float = 0.0, decode_ms: float = 0.0,
                det: Detections | None = None, detect_ms: float | None = None) -> FrameResult:
        """Detect (unless ``det`` is given or this frame skips detection), classify and track."""
        if det is None and detect_ms is None:
            det, detect_ms = self.detect(image, frame)
        if det is None:
            det = self._carried()
        t1 = time.perf_counter()
        colors: dict = {}
        cams = None
        if self.explain:
            probs, cams = self.classifier(image, det.boxes, det.landmarks, color_cache=colors, with_cam=True)
        else:
            probs = self.classifier(image, det.boxes, det.landmarks, color_cache=colors)
        t2 = time.perf_counter()
        ids, smoothed = self.tracker.update(det.boxes, probs, det.scores, det.landmarks)
        classes = self.classes
        faces = []
        for i in range(len(det)):
            p = smoothed[i]
            k = int(p.argmax())
            faces.append(
                Face(
                    box=[float(v) for v in det.boxes[i]],
                    score=float(det.scores[i]),
                    track=int(ids[i]),
                    emotion=classes[k],
                    confidence=float(p[k]),
                    probs={c: float(v) for c, v in zip(classes, p)},
                    landmarks=det.landmarks[i].tolist() if det.landmarks is not None else None,
                )
            )
        t3 = time.perf_counter()
        timings = {
            "decode": decode_ms,
            "detect": detect_ms or 0.0,
            "classify": (t2 - t1) * 1e3,
            "track": (t3 - t2) * 1e3,
        }
        if cams is not None:
            from .explain import face_affines, pick_maps

            shown = [classes.index(f.emotion) for f in faces]
            maps = pick_maps(cams, np.asarray(shown, np.int64))
            size = tuple(self.classifier.spec.size)
            for f, m, a in zip(faces, maps, face_affines(self.classifier, det.boxes, det.landmarks)):
                f.heat, f.affine, f.crop_size = m, a, size
            timings["explain"] = (time.perf_counter() - t3) * 1e3
        return FrameResult(frame, time_s, faces, image=image, timings_ms=timings)

    def _detect_ahead(self, frames: Iterator[Frame], depth: int = 2) -> Iterator[tuple[Frame, Detections | None, float]]:
        """Run detection on a worker thread, one frame ahead of classification, in order."""
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        failure: list[BaseException] = []

        def worker():
            try:
                for fr in frames:
                    if stop.is_set():
                        break
                    det, ms = self.detect(fr.image, fr.index)
                    while not stop.is_set():
                        try:
                            q.put((fr, det, ms), timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as e:  # surfaced on the consumer's thread
                failure.append(e)
            finally:
                q.put(None)

        th = threading.Thread(target=worker, name="edgefer-detect", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                yield item
            if failure:
                raise failure[0]
        finally:
            stop.set()
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
            th.join(timeout=5)

    def run(self, source: Any, max_frames: int | None = None, **open_kw: Any) -> Iterator[FrameResult]:
        """Process a source (anything :func:`open_source` takes, or a :class:`Source`)."""
        src = source if isinstance(source, Source) else open_source(source, **open_kw)
        self.source = src
        self.stats = Stats()
        self.reset()
        independent = src.kind in ("image", "folder")
        frames: Iterator[Frame] = iter(src)
        if max_frames is not None:
            frames = itertools.islice(frames, max_frames)
        # detection-free frames read the tracker, so ahead-of-time detection needs every frame
        # detected or a tracker that the detect thread does not race: with detect_every > 1 the
        # skip decision uses only frame numbers and "no live track" one frame late, which is safe
        staged = self.overlap and not independent
        items = self._detect_ahead(frames) if staged else ((fr, None, None) for fr in frames)
        try:
            for fr, det, det_ms in items:
                if independent:
                    self.reset()
                decode_ms = src.decode_s[fr.index] * 1e3 if len(src.decode_s) > fr.index else 0.0
                taken = time.perf_counter()
                r = self.process(fr.image, fr.index, fr.time_s, decode_ms, det=det, detect_ms=det_ms)
                r.name = fr.name
                done = time.perf_counter()
                # live: capture to result, queueing included (what a viewer waits);
                # files: decode + detect + the rest (read-ahead queues are not latency)
                if src.live:
                    r.timings_ms["total"] = (done - fr.captured) * 1e3
                else:
                    r.timings_ms["total"] = (done - taken) * 1e3 + decode_ms + ((det_ms or 0.0) if staged else 0.0)
                self.stats.add(r)
                yield r
        finally:
            self.stats.finish()
            src.close()
