"""The adaptive video loop (the default) against the every-frame reference, on real videos and models.

Each test runs the bundled detector and classifier on the first frames of a shared video; what
the adaptive loop outputs is compared with ``Pipeline(adaptive=False)`` (every frame detected at
640 px, every face classified), the mode it must keep faces and emotions of.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from edgefer.cadence import AdaptiveConfig
from edgefer.classify import EmotionClassifier
from edgefer.detect import FaceDetector
from edgefer.motion import FlowMotion, GrayFrame
from edgefer.pipeline import Pipeline
from edgefer.sources import ArraySource
from edgefer.track import IoUTracker, iou_matrix


def read_frames(path, n: int, start: int = 0) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    i = 0
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        if i >= start:
            out.append(f)
        i += 1
    cap.release()
    assert len(out) == n, f"{path} has fewer than {start + n} frames"
    return out


def run(pipe: Pipeline, frames: list[np.ndarray], consume_delay: float = 0.0) -> list[dict]:
    """Event dicts of every frame (what --events writes)."""
    out = []
    for r in pipe.run(ArraySource(list(frames))):
        out.append(r.to_event() | {"detected": r.timings_ms.get("detect", 0.0) > 0})
        if consume_delay:
            time.sleep(consume_delay)
    return out


def boxes(ev: dict) -> np.ndarray:
    return np.array([f["box"] for f in ev["faces"]], np.float32).reshape(-1, 4)


def found_pct(ref: list[dict], other: list[dict]) -> float:
    """Share of the reference's face-frames that ``other`` has (IoU >= 0.3)."""
    hit = total = 0
    for a, b in zip(ref, other, strict=True):
        ba, bb = boxes(a), boxes(b)
        total += len(ba)
        if len(ba) and len(bb):
            hit += int((iou_matrix(ba, bb).max(axis=1) >= 0.3).sum())
    return 100.0 * hit / total


@pytest.fixture(scope="module")
def clips(videos_dir):
    return {
        "webcam": read_frames(videos_dir / "webcam_720p.mp4", 90),
        "crowd": read_frames(videos_dir / "crowd_720p.mp4", 120),
        "stage": read_frames(videos_dir / "stage_360p.mp4", 100),
    }


@pytest.fixture(scope="module")
def every_frame(clips):
    return {name: run(Pipeline(adaptive=False), frames) for name, frames in clips.items()}


@pytest.mark.parametrize("clip", ["webcam", "crowd"])
def test_adaptive_keeps_the_every_frame_faces(clips, every_frame, clip):
    pipe = Pipeline()  # the default is adaptive
    events = run(pipe, clips[clip])
    rep = pipe.adaptive_report()
    assert rep["mode"] == "adaptive"
    json.dumps(rep)  # JSON-serialisable, for the run summary
    assert found_pct(every_frame[clip], events) >= 98.0
    # and it does spend less: frames carried without the detector, faces not reclassified
    assert rep["frames_carried"] > 0 and rep["detections"] < len(events)
    assert rep["classifications"]["reused"] > 0
    if clip == "webcam":  # one big face: most frames skip the detector, detected at a reduced size
        assert rep["detections_pct"] <= 40
        assert any(int(s) < 640 for s in rep["detector_sizes"] if s != "native")


def mean_carried_iou(ref: list[dict], events: list[dict]) -> float:
    vals = []
    for a, b in zip(ref, events, strict=True):
        if b["detected"] or not len(boxes(a)) or not len(boxes(b)):
            continue
        best = iou_matrix(boxes(b), boxes(a)).max(axis=1)
        vals.extend(best[best > 0].tolist())
    assert vals
    return float(np.mean(vals))


def test_moved_boxes_follow_faces_better_than_held_boxes(clips, every_frame):
    """Between detections (a fixed cadence: the same frames detected), flow-moved boxes overlap the
    every-frame boxes better than boxes held where the last detection put them."""
    ious = {}
    for motion in ("hold", "flow"):
        cfg = AdaptiveConfig(motion=motion, scale=False, classify_skip=False)
        ev = run(Pipeline(adaptive=cfg, detect_every=4), clips["stage"])
        assert sum(e["detected"] for e in ev) <= len(ev) // 3  # most frames are carried
        ious[motion] = mean_carried_iou(every_frame["stage"], ev)
    assert ious["flow"] > ious["hold"] + 0.03, ious


def test_flow_follows_a_shifted_frame(clips):
    """The motion fitted to the flow of a face's points recovers a known shift (and, with the
    similarity fit, a zoom); the landmarks follow their own flow."""
    img = clips["webcam"][0]
    det = FaceDetector()(img)
    assert len(det) == 1
    h, w = img.shape[:2]
    for fit, zoom in (("shift", 1.0), ("similarity", 1.05)):
        m = np.float32([[zoom, 0, 7.0], [0, zoom, -4.0]])  # zoom about the origin, then a shift
        moved_img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        mv = FlowMotion(fit=fit).move(GrayFrame.of(img), GrayFrame.of(moved_img), det.boxes, det.landmarks)
        assert mv.ok.all()
        want = det.boxes[0] * zoom + np.float32([7, -4, 7, -4])
        np.testing.assert_allclose(mv.boxes[0], want, atol=3.0)
        want_lm = det.landmarks[0] * zoom + np.float32([7, -4])
        np.testing.assert_allclose(mv.landmarks[0], want_lm, atol=3.0)


@pytest.mark.parametrize("overlap", [False, True])
def test_scene_cut_triggers_a_detection_at_the_cut(clips, overlap):
    a, b = clips["webcam"][:30], clips["crowd"][:20]
    pipe = Pipeline(overlap=overlap)
    events = run(pipe, a + b)
    log = {f: reason for f, reason, _ in pipe.adaptive.log}
    assert log.get(30) == "cut", log
    assert pipe.adaptive_report()["scene_cuts"] >= 1
    # the crowd's faces are there at the cut frame itself, not a cadence later
    ref = Pipeline(adaptive=False).detector(b[0])
    assert len(events[30]["faces"]) >= len(ref) - 1 >= 5


def test_classification_reuse_never_exceeds_the_max_age(clips):
    """With smoothing off a face's probabilities change only when it is classified afresh: a run of
    identical probabilities is a reused classification, never longer than ``cls_max_age`` frames."""
    max_age = 5
    cfg = AdaptiveConfig(cls_max_age=max_age, cls_diff=255.0)  # any crop counts as unchanged: only the age limits
    pipe = Pipeline(adaptive=cfg, smoothing=0.0)
    events = run(pipe, clips["webcam"])
    longest = 0
    last: dict[int, tuple] = {}
    runs: dict[int, int] = {}
    for ev in events:
        for f in ev["faces"]:
            p = tuple(f["probs"].values())
            runs[f["track"]] = runs.get(f["track"], 0) + 1 if last.get(f["track"]) == p else 1
            last[f["track"]] = p
            longest = max(longest, runs[f["track"]])
    assert longest == max_age  # reused up to the bound (the lever works), never beyond
    rep = pipe.adaptive_report()["classifications"]
    assert rep["max_age_frames"] == max_age - 1 and rep["reused"] > rep["run"]


def test_every_frame_mode_is_the_plain_loop(clips, every_frame):
    """adaptive=False is today's loop: detect every frame, classify every face, IoU tracker."""
    det = FaceDetector(det_size=640, spin=False)
    clf = EmotionClassifier(spin=False)
    for name in ("webcam", "crowd"):
        tracker = IoUTracker(smoothing=0.5)
        want = []
        for i, img in enumerate(clips[name][:30]):
            d = det(img)
            probs = clf(img, d.boxes, d.landmarks)
            ids, sm = tracker.update(d.boxes, probs, d.scores, d.landmarks)
            want.append([(int(t), [round(float(v), 1) for v in b], [round(float(v), 4) for v in p])
                         for t, b, p in zip(ids, d.boxes, sm)])
        got = [[(f["track"], f["box"], list(f["probs"].values())) for f in ev["faces"]] for ev in every_frame[name][:30]]
        assert got == want
        # sequential (no detector thread) gives the same
        assert run(Pipeline(adaptive=False, overlap=False), clips[name][:20]) == every_frame[name][:20]


def test_two_runs_give_identical_events(clips):
    """Deterministic with the detector one frame ahead on its own thread, however the consumer's
    speed shifts the threads' timing."""
    frames = clips["crowd"][:40] + clips["webcam"][:20]
    first = run(Pipeline(), frames)
    second = run(Pipeline(), frames, consume_delay=0.01)
    assert first == second
    assert sum(e["detected"] for e in first) < len(first)


def test_forked_pipelines_batched_through_process_steps_match_process(clips):
    """Two streams on one detector and classifier (``fork``), their fresh crops classified in one
    batch per round (``process_steps``), give each stream the events it gets alone."""
    streams = [clips["webcam"][:30], clips["crowd"][:30]]
    alone = []
    for frames in streams:
        pipe = Pipeline(overlap=False)
        pipe.reset()
        alone.append([pipe.process(img, i).to_event() for i, img in enumerate(frames)])
    first = Pipeline(overlap=False)
    pipes = [first, first.fork()]
    assert pipes[1].detector is first.detector and pipes[1].classifier is first.classifier
    assert pipes[1].tracker is not first.tracker and pipes[1].adaptive is not first.adaptive
    got: list[list[dict]] = [[], []]
    batched = 0
    for i in range(30):
        gens = [p.process_steps(frames[i], i) for p, frames in zip(pipes, streams)]
        asks, results = [], [None, None]
        for j, g in enumerate(gens):
            try:
                asks.append((j, next(g)))
            except StopIteration as stop:  # nothing to classify this frame
                results[j] = stop.value
        if asks:
            probs = first.classifier.predict_faces(np.concatenate([c for _, c in asks]))
            batched += len(asks) == 2
            at = 0
            for j, crops in asks:
                with pytest.raises(StopIteration) as stop:
                    gens[j].send(probs[at:at + len(crops)])
                results[j] = stop.value.value
                at += len(crops)
        for j in range(2):
            got[j].append(results[j].to_event())
    assert batched > 0
    assert got == alone
