"""The fused video loop: detect -> align/crop -> one batched classify -> track and smooth.

By default the loop is *adaptive* (:mod:`edgefer.cadence`): it detects when the picture asks for
it and at the size the tracked faces need, moves faces with the picture between detections
(:mod:`edgefer.motion`) and classifies only faces whose crop changed. ``adaptive=False`` is the
every-frame reference mode.

``Pipeline`` is the Python API behind ``edgefer run``::

    pipe = Pipeline(classifier="mini-xception")
    for result in pipe.run("video.mp4"):
        print(result.frame, [(f.emotion, f.confidence) for f in result.faces])

Per frame it records the milliseconds of each stage, so the CLI summary and the bench report
where the time goes (p50/p99 per stage, end to end, and dropped frames for live sources).
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from typing import Any, Iterator

import cv2
import numpy as np

from .artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR
from .cadence import AdaptiveConfig, AdaptiveLoop
from .classify import EmotionClassifier
from .detect import Detections, FaceDetector
from .explain import cam_classifier, face_affines, pick_maps
from .results import Face, FrameResult  # noqa: F401  (the Python API: edgefer.pipeline.FrameResult)
from .sources import Frame, Source, open_source
from .staging import adaptive_ahead, detect_ahead
from .stats import STAGES, Stats  # noqa: F401  (re-exported: the Python API reads pipe.stats)
from .track import IoUTracker, iou_matrix


class Pipeline:
    """Detector + classifier + tracker, fed frame by frame or by a whole source.

    Speed levers (all measured in benchmarks/, see its README):

    * ``adaptive=True`` (the default): detection cadence, detector size, motion between
      detections and classification reuse decided per frame (:mod:`edgefer.cadence`; an
      :class:`~edgefer.cadence.AdaptiveConfig` instead of ``True`` sets its knobs and levers).
      :meth:`adaptive_report` says what it decided. ``adaptive=False``: every frame detected at
      ``det_size`` and every face classified (the reference mode).
    * ``detect_every=N``: a forced fixed cadence: the detector runs on every N-th frame (and on
      any frame with no live track, so a face that appears is found at once). Without
      ``adaptive`` the live tracks' boxes are carried still between; with it they move with the
      faces and the other adaptive levers stay on.
    * ``overlap=True``: detection of frame N runs on its own thread while frame N-1 is
      classified, tracked and written (ONNX Runtime and OpenVINO release the GIL). Adaptive
      decisions then lag one frame (frame N is decided before frame N-1 is tracked) and stay
      deterministic: the same file gives the same events on every run.

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
        detect_every: int | None = None,
        overlap: bool = True,
        explain: bool = False,
        adaptive: bool | AdaptiveConfig = True,
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
        if detect_every is not None and detect_every < 1:
            raise ValueError("detect_every must be >= 1")
        self.detector = FaceDetector(detector, backend=backend, **det_kw, **backend_options)
        if explain:
            self.classifier = cam_classifier(classifier, backend=backend, **backend_options)
        else:
            self.classifier = EmotionClassifier(classifier, backend=backend, **backend_options)
        self.explain = explain
        self.classes = self.classifier.classes
        self.tracker = IoUTracker(smoothing=smoothing)
        self.detect_every = 1 if detect_every is None else detect_every
        self.overlap = overlap
        self.stats = Stats()
        self._last_detect = -(10**9)
        self.adaptive: AdaptiveLoop | None = None
        if adaptive:
            cfg = adaptive if isinstance(adaptive, AdaptiveConfig) else AdaptiveConfig()
            self.adaptive = AdaptiveLoop(cfg, self.detector.det_size, fixed_every=detect_every)
            # hysteresis: the detector reports faces down to keep_score; below its own threshold a
            # face only continues a track (it is dropped when new), so a tracked face does not blink
            # out on one unsure frame. NMS keeps the confident faces exactly as at the threshold.
            self._new_face_score = self.detector.conf_thresh
            self._keep_score = min(self.detector.conf_thresh, cfg.keep_score)

    def reset(self) -> None:
        """Forget tracks (between unrelated images)."""
        self.tracker.reset()
        self._last_detect = -(10**9)
        if self.adaptive is not None:
            self.adaptive.reset_state()

    def adaptive_report(self) -> dict[str, Any]:
        """What the adaptive loop decided in the latest run (JSON-serialisable); ``{"mode": "every-frame"}``
        for the reference mode. Detections run and why, at which sizes, frames carried, the cadence
        chosen (min/mean/max frames between detections), classifications run vs reused, scene cuts."""
        if self.adaptive is None:
            return {"mode": "every-frame", "detect_every": self.detect_every}
        return self.adaptive.report(self.stats.frames)

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
        """Detect (unless ``det`` is given or this frame skips detection), classify and track.

        Adaptive: ``det=None`` with ``detect_ms`` given means the detector skipped this frame (the
        faces are moved from the previous one); both None: the loop decides here.
        """
        if self.adaptive is not None:
            return self._drive(self._adaptive_steps(image, frame, time_s, decode_ms, det, detect_ms))
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
        faces = self._faces(det, ids, smoothed)
        t3 = time.perf_counter()
        timings = {
            "decode": decode_ms,
            "detect": detect_ms or 0.0,
            "classify": (t2 - t1) * 1e3,
            "track": (t3 - t2) * 1e3,
        }
        if cams is not None:
            self._place_maps(faces, cams, det)
            timings["explain"] = (time.perf_counter() - t3) * 1e3
        return FrameResult(frame, time_s, faces, image=image, timings_ms=timings)

    def _faces(self, det: Detections, ids: np.ndarray, smoothed: np.ndarray) -> list[Face]:
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
        return faces

    def _place_maps(self, faces: list[Face], cams: np.ndarray, det: Detections) -> None:
        """Each face's map of its labelled class, and the affine that warps it back (``--explain``)."""
        shown = [self.classes.index(f.emotion) for f in faces]
        maps = pick_maps(cams, np.asarray(shown, np.int64))
        size = tuple(self.classifier.spec.size)
        for f, m, a in zip(faces, maps, face_affines(self.classifier, det.boxes, det.landmarks)):
            f.heat, f.affine, f.crop_size = m, a, size

    # ------------------------------------------------------------------------------ adaptive
    def _detect_timed(self, image: np.ndarray, size: int | None) -> tuple[Detections, float]:
        t0 = time.perf_counter()
        det = self.detector(image, det_size=size, conf_thresh=self._keep_score)
        return det, (time.perf_counter() - t0) * 1e3

    def fork(self) -> Pipeline:
        """Another pipeline on the same detector and classifier sessions (one set of weights and
        runtimes), with its own tracks, adaptive state and statistics: one per stream of a
        :class:`~edgefer.multistream.MultiPipeline`."""
        new = copy.copy(self)
        t = self.tracker
        new.tracker = IoUTracker(iou_thresh=t.iou_thresh, max_misses=t.max_misses, smoothing=t.smoothing)
        new.stats = Stats()
        new._last_detect = -(10**9)
        if self.adaptive is not None:
            new.adaptive = AdaptiveLoop(self.adaptive.cfg, self.adaptive.det_size, fixed_every=self.adaptive.fixed_every)
        return new

    def process_steps(self, image: np.ndarray, frame: int = 0, time_s: float = 0.0, decode_ms: float = 0.0,
                      det: Detections | None = None, detect_ms: float | None = None):
        """:meth:`process` in two halves, so several streams' faces go to the classifier in one batch.

        A generator: it detects (or moves the tracked faces), then yields the uint8 crops
        (K, H, W, C) that need a fresh classification, and expects their probabilities (K, C) back
        through ``send`` (``(probs, cams)`` with ``explain``); its return value (``StopIteration.value``)
        is the :class:`FrameResult`. It yields nothing when no face needs classifying. The
        ``classify`` timing leaves out the classifier call, which the caller times and shares.
        """
        if self.adaptive is not None:
            return (yield from self._adaptive_steps(image, frame, time_s, decode_ms, det, detect_ms))
        return (yield from self._every_frame_steps(image, frame, time_s, decode_ms, det, detect_ms))

    def _drive(self, steps) -> FrameResult:
        """Run :meth:`process_steps`-style steps with this pipeline's own classifier call."""
        try:
            crops = next(steps)
        except StopIteration as stop:
            return stop.value
        t0 = time.perf_counter()
        answer = self.classifier.predict_faces(crops, with_cam=True) if self.explain else self.classifier.predict_faces(crops)
        ms = (time.perf_counter() - t0) * 1e3
        try:
            steps.send(answer)
        except StopIteration as stop:
            result = stop.value
            result.timings_ms["classify"] = result.timings_ms.get("classify", 0.0) + ms
            return result
        raise RuntimeError("process_steps asked twice")  # pragma: no cover

    def _every_frame_steps(self, image: np.ndarray, frame: int, time_s: float, decode_ms: float,
                           det: Detections | None, detect_ms: float | None):
        """The every-frame loop as steps (batched across streams; :meth:`process` keeps its own path)."""
        if det is None and detect_ms is None:
            det, detect_ms = self.detect(image, frame)
        if det is None:
            det = self._carried()
        t1 = time.perf_counter()
        cams = None
        if len(det):
            crops = self.classifier.face_crops(image, det.boxes, det.landmarks).copy()
            t_out = time.perf_counter()
            answer = yield crops
            t1 += time.perf_counter() - t_out  # the caller's classifier call is not this frame's own time
            probs, cams = answer if self.explain else (answer, None)
        else:
            probs = np.zeros((0, len(self.classes)), np.float32)
        t2 = time.perf_counter()
        ids, smoothed = self.tracker.update(det.boxes, probs, det.scores, det.landmarks)
        faces = self._faces(det, ids, smoothed)
        t3 = time.perf_counter()
        timings = {"decode": decode_ms, "detect": detect_ms or 0.0, "classify": (t2 - t1) * 1e3, "track": (t3 - t2) * 1e3}
        if cams is not None and faces:
            self._place_maps(faces, cams, det)
            timings["explain"] = (time.perf_counter() - t3) * 1e3
        return FrameResult(frame, time_s, faces, image=image, timings_ms=timings)

    def _adaptive_steps(self, image: np.ndarray, frame: int, time_s: float, decode_ms: float,
                        det: Detections | None, detect_ms: float | None):
        """One frame of the adaptive loop, as steps: detected faces, or the tracked ones moved with
        the picture; then only the faces whose crop changed are handed out for classification."""
        ad = self.adaptive
        assert ad is not None
        if det is None and detect_ms is None:
            dec = ad.decide(frame, image, self.tracker.live())
            det, detect_ms = self._detect_timed(image, dec.size) if dec.detect else (None, 0.0)
        detected = det is not None
        t1 = time.perf_counter()
        h, w = image.shape[:2]
        prev_gray = ad.grays.get(ad.last_processed)  # a live source may have dropped the frames between
        gray = ad.gray(frame, image)
        ad.last_processed = frame
        tracks = self.tracker.tracks
        live = [i for i, t in enumerate(tracks) if t.misses == 0]
        moved = None
        if live:
            lt = [tracks[i] for i in live]
            zeros = np.zeros((5, 2), np.float32)
            moved = ad.motion.move(
                prev_gray, gray, np.stack([t.box for t in lt]).astype(np.float32),
                np.stack([t.landmarks if t.landmarks is not None else zeros for t in lt]).astype(np.float32),
                np.stack([t.velocity if t.velocity is not None else np.zeros(4, np.float32) for t in lt]).astype(np.float32))
        n_detected = 0  # faces the detector found this frame (before the ones carried on are appended)
        if det is None:
            if moved is None:
                det, match = Detections.empty(), np.zeros(0, np.int64)
            else:
                ad.moved(frame, moved.ok)
                boxes = moved.boxes.copy()
                np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
                np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
                area0 = np.maximum((moved.boxes[:, 2] - moved.boxes[:, 0]) * (moved.boxes[:, 3] - moved.boxes[:, 1]), 1e-6)
                inside = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= 0.5 * area0  # not leaving the frame
                det = Detections(boxes[inside], np.array([tracks[i].score for i in live], np.float32)[inside],
                                 moved.landmarks[inside])
                match = np.asarray(live, np.int64)[inside]
                ad.faces_carried += len(det)
        else:
            if moved is not None:  # match the detections against where the faces have moved to
                for i, b in zip(live, moved.boxes):
                    tracks[i].box = b
            match = self.tracker.assign(det.boxes)
            keep = (match >= 0) | (det.scores >= self._new_face_score)
            if not keep.all():
                det = Detections(det.boxes[keep], det.scores[keep], det.landmarks[keep])
                match = match[keep]
            matched = {int(m): d for d, m in enumerate(match) if m >= 0}
            ious = np.array([iou_matrix(tracks[i].box[None], det.boxes[matched[i]][None])[0, 0]
                             for i in live if i in matched], np.float32)
            missed = [j for j, i in enumerate(live) if i not in matched]
            ad.detected(frame, lost=bool(missed), new_faces=int((match < 0).sum()), ious=ious)
            reduced = frame in ad.reduced_frames
            ad.reduced_frames.discard(frame)
            if reduced and ad.cfg.keep_geometry and moved is not None:
                # a detection below det_size is coarser than the moved box of a face last placed by a
                # det_size detection: where they agree, it confirms the face and the moved box stays
                pos = {i: j for j, i in enumerate(live)}
                boxes, lms = det.boxes.copy(), det.landmarks.copy()
                for i, d in matched.items():
                    j = pos.get(i)
                    if j is not None and moved.ok[j] and \
                            iou_matrix(moved.boxes[j][None], boxes[d][None])[0, 0] >= ad.cfg.quiet_iou:
                        if ad.cfg.keep_geometry in (True, "box"):
                            boxes[d] = moved.boxes[j]
                        if ad.cfg.keep_geometry in (True, "landmarks"):
                            lms[d] = moved.landmarks[j]
                det = Detections(boxes, det.scores, lms)
            for i in matched:
                tracks[i].coasted = 0
            # a tracked face this detection missed is carried on (moved) for up to ``coast`` detections
            # in a row: one unsure frame of the detector does not make it blink out
            coast = [j for j in missed if moved.ok[j] and tracks[live[j]].coasted < ad.cfg.coast]
            if coast:
                for j in coast:
                    tracks[live[j]].coasted += 1
                cb = moved.boxes[coast].copy()
                np.clip(cb[:, 0::2], 0, w, out=cb[:, 0::2])
                np.clip(cb[:, 1::2], 0, h, out=cb[:, 1::2])
                det = Detections(np.concatenate([det.boxes, cb]),
                                 np.concatenate([det.scores, np.array([tracks[live[j]].score for j in coast], np.float32)]),
                                 np.concatenate([det.landmarks, moved.landmarks[coast]]))
                match = np.concatenate([match, np.asarray([live[j] for j in coast], np.int64)])
                ad.faces_carried += len(coast)
            n_detected = len(det) - len(coast)
        k = len(det)
        ad.face_frames += k
        t_moved = time.perf_counter()
        colors: dict = {}
        crops = self.classifier.face_crops(image, det.boxes, det.landmarks, color_cache=colors)
        known = [tracks[m] if m >= 0 else None for m in match]
        reuse = ad.reuse(frame, crops, known)
        fresh = np.flatnonzero(~reuse)
        probs = np.empty((k, len(self.classes)), np.float32)
        cams = None
        sigs = {int(i): crops[i].copy() for i in fresh}  # the crop buffer is reused by the next frame
        if len(fresh):
            t_out = time.perf_counter()
            answer = yield crops[fresh]  # a copy (fancy indexing): other streams may crop before the batch runs
            t_moved += time.perf_counter() - t_out  # the caller's classifier call is not this frame's own time
            if self.explain:
                p, c = answer
                cams = np.empty((k, *c.shape[1:]), np.float32)
                cams[fresh] = c
            else:
                p = answer
            probs[fresh] = p
        for i in np.flatnonzero(reuse):
            t = known[i]
            probs[i] = t.raw_probs
            ad.max_reuse_age = max(ad.max_reuse_age, frame - t.cls_frame)
            if self.explain:
                if cams is None:
                    cams = np.empty((k, *t.raw_cams.shape), np.float32)
                cams[i] = t.raw_cams
        ad.classified += len(fresh)
        ad.reused += k - len(fresh)
        t2 = time.perf_counter()
        ids, smoothed = self.tracker.update(det.boxes, probs, det.scores, det.landmarks, match=match)
        by_id = {t.id: t for t in self.tracker.tracks}
        for i in range(k):
            t = by_id[int(ids[i])]
            if i in sigs:
                t.crop_sig, t.raw_probs, t.cls_frame = sigs[i], probs[i].copy(), frame
                if cams is not None:
                    t.raw_cams = cams[i].copy()
            if detected and i < n_detected:  # the constant-velocity model's speed: between the last two detections
                b = det.boxes[i]
                if t.det_box is not None and frame > t.det_frame:
                    t.velocity = ((b - t.det_box) / (frame - t.det_frame)).astype(np.float32)
                t.det_box, t.det_frame = b.copy(), frame
        faces = self._faces(det, ids, smoothed)
        t3 = time.perf_counter()
        # "motion": the gray copy, moving the faces and matching them (the adaptive loop's own work)
        timings = {"decode": decode_ms, "detect": detect_ms or 0.0, "motion": (t_moved - t1) * 1e3,
                   "classify": (t2 - t_moved) * 1e3, "track": (t3 - t2) * 1e3}
        if cams is not None and faces:
            self._place_maps(faces, cams, det)
            timings["explain"] = (time.perf_counter() - t3) * 1e3
        return FrameResult(frame, time_s, faces, image=image, timings_ms=timings)

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
        if self.adaptive is not None:
            self.adaptive.reset_counters()
            # decided here, in frame order (staged) or inside process() (sequential, and images,
            # which forget their tracks first). A live source is not staged: frame N-1's result
            # would wait for frame N to be captured (a frame interval of latency), and with most
            # frames carried without the detector there is little to overlap
            staged = staged and not src.live
            ad = self.adaptive
            items = (adaptive_ahead(frames, lambda fr: ad.decide(fr.index, fr.image, self.tracker.live()), self._detect_timed)
                     if staged else ((fr, None, None) for fr in frames))
        else:
            items = detect_ahead(frames, self.detect) if staged else ((fr, None, None) for fr in frames)
        cv_threads = None
        if self.adaptive is not None and self.adaptive.cfg.cv_one_thread:
            # the loop's small OpenCV calls (flow on a few points, one gray copy, crops) gain no
            # time from OpenCV's worker pool, which burns a second core waiting (webcam_720p: about
            # 1 ms of CPU a frame); the loop already runs decode, detect and the rest in parallel
            cv_threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
        try:
            for fr, det, det_ms in items:
                if independent:
                    self.reset()
                decode_ms = fr.decode_ms
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
            if cv_threads is not None:
                cv2.setNumThreads(cv_threads)
            self.stats.finish()
            src.close()
