"""`edgefer bench --through-detector`: labelled faces pasted into frames, found and cropped as `run` does.

Real parts only: the bundled RetinaFace and classifiers on ONNX Runtime, FER2013 PublicTest faces.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgefer.bench import accuracy
from edgefer.bench.scoring import Scoring
from edgefer.bench.through import ThroughConfig, ThroughLoop, paste, score_through
from edgefer.classify import EmotionClassifier
from edgefer.detect import FaceDetector
from edgefer.pipeline import Pipeline

from conftest import shared_file


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefer", "-q", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def faces(publictest):
    idx = np.random.default_rng(3).choice(len(publictest["labels"]), 40, replace=False)
    return publictest["images"][idx], publictest["labels"][idx], publictest["classes"]


class CountingDetector:
    """The real detector, counting its calls (the detections must be shared across rows)."""

    def __init__(self):
        self.det = FaceDetector("retinaface-mnet025", backend="onnxruntime")
        self.calls = 0

    def __call__(self, frame):
        self.calls += 1
        return self.det(frame)


def test_paste_puts_the_resized_face_at_its_box():
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    frame, box = paste(face, 96, (200, 100), (640, 480), np.random.default_rng(1), 6.0)
    assert frame.shape == (480, 640, 3) and box.tolist() == [200, 100, 296, 196]
    import cv2

    want = cv2.resize(face, (96, 96), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(frame[100:196, 200:296, 0], want)  # the face itself is never blended
    assert abs(float(frame[10:50, 10:50].mean()) - 128) < 20  # the background is mid-gray


def test_camera_noise_covers_the_whole_frame_face_included():
    """--through-noise: per-pixel noise of the given std over the finished frame (face and
    background alike), the same on every channel, reproducible from the seed; 0 leaves the frame
    exactly as before."""
    face = np.full((48, 48), 100, np.uint8)
    clean, box = paste(face, 96, (200, 100), (640, 480), np.random.default_rng(1), 6.0)
    same, _ = paste(face, 96, (200, 100), (640, 480), np.random.default_rng(1), 6.0, 0.0)
    assert np.array_equal(clean, same)
    noisy, box2 = paste(face, 96, (200, 100), (640, 480), np.random.default_rng(1), 6.0, 8.0)
    again, _ = paste(face, 96, (200, 100), (640, 480), np.random.default_rng(1), 6.0, 8.0)
    assert np.array_equal(noisy, again) and np.array_equal(box, box2)
    assert np.array_equal(noisy[..., 0], noisy[..., 2])  # gray frames stay gray
    d = noisy[..., 0].astype(float) - clean[..., 0]
    assert 7.0 < d[100:196, 200:296].std() < 9.0 and 7.0 < d[300:, :150].std() < 9.0


def test_loop_classifies_exactly_what_run_classifies(faces):
    images, labels, _ = faces
    loop = ThroughLoop(FaceDetector("retinaface-mnet025", backend="onnxruntime"), images[:6], ThroughConfig(sizes=(112,)))
    from edgefer.artifact import DEFAULT_CLASSIFIER

    clf = EmotionClassifier(DEFAULT_CLASSIFIER, backend="onnxruntime")  # what `run` classifies with
    got = loop.probabilities(clf)[112]
    assert got["found"].sum() >= 4
    pipe = Pipeline(backend="onnxruntime", adaptive=False, smoothing=0.0, overlap=False)
    for k, frame, box in loop.frames(112):
        if not got["found"][k]:
            continue
        res = pipe.process(frame)
        pipe.reset()
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        face = min(res.faces, key=lambda f: np.hypot(*(np.array(f.box[:2]) + np.array(f.box[2:]) - 2 * centre)))
        run_probs = np.array([face.probs[c] for c in clf.classes])
        assert np.abs(run_probs - got["probs"][k]).max() < 1e-3  # events round to 4 decimals


def test_detections_are_shared_across_rows_and_scores_are_consistent(faces):
    images, labels, classes = faces
    det = CountingDetector()
    loop = ThroughLoop(det, images, ThroughConfig(sizes=(64, 160)))
    sc_all = Scoring(images, labels, classes, "publictest[40]")
    rows = {}
    for name in ("edgenet-fast", "mini-xception"):
        clf = EmotionClassifier(name, backend="onnxruntime")
        sc = sc_all.for_model(clf.classes)
        direct = clf.predict_images(images)
        rows[name] = score_through(loop, clf, direct, sc, accuracy)
        assert det.calls == 2 * len(images)  # one detector call per pasted frame, whatever the row
        assert rows[name]["sizes"]["160"]["direct_top1_found"] == pytest.approx(
            accuracy(direct, {**sc, "keep": sc["keep"][loop.probabilities(clf)[160]["found"][sc["keep"]]],
                              "y": sc["y"][loop.probabilities(clf)[160]["found"][sc["keep"]]]})["top1"], abs=1e-3)
    for r in rows.values():
        for v in r["sizes"].values():
            assert 0 < v["found_pct"] <= 100
            assert v["top1_all"] <= v["top1_found"] + 1e-9  # misses count wrong
            assert v["gap"] == pytest.approx(v["direct_top1_found"] - v["top1_found"], abs=2e-3)
    # the same faces and seed give the same frames: a second loop reproduces the numbers
    again = score_through(ThroughLoop(det.det, images, ThroughConfig(sizes=(64, 160))),
                          EmotionClassifier("mini-xception", backend="onnxruntime"),
                          EmotionClassifier("mini-xception", backend="onnxruntime").predict_images(images),
                          sc_all.for_model(EmotionClassifier("mini-xception", backend="onnxruntime").classes), accuracy)
    assert again == rows["mini-xception"]


def test_cli_through_detector(tmp_path):
    data = shared_file("data/fer2013/publictest.npz")
    out = tmp_path / "b.json"
    r = _cli("bench", "--data", str(data), "--data-size", "30", "--targets", "onnx", "--precisions", "fp32",
             "--through-detector", "--through-sizes", "96", "--through-noise", "4", "--min-seconds", "0", "--repeats", "1",
             "--json", str(out))
    assert r.returncode == 0, r.stderr[-800:]
    doc = json.loads(out.read_text())
    row = doc["rows"][0]
    assert set(row["through"]["sizes"]) == {"96"} and row["through"]["sizes"]["96"]["faces"] == 30
    assert doc["settings"]["through_noise"] == 4.0
    assert "through the detector, onnx/fp32: 96 px:" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--through-detector"], "pass --data too"),
    (["--through-detector", "--through-sizes", "16", "--data", "DATA"], "--through-sizes must be"),
    (["--through-detector", "--through-sizes", "a,b", "--data", "DATA"], "--through-sizes must be"),
    (["--through-detector", "--through-noise", "-3", "--data", "DATA"], "--through-noise"),
])
def test_cli_through_detector_bad_input(args, needle):
    data = str(shared_file("data/fer2013/publictest.npz"))
    r = _cli("bench", "--targets", "onnx", *[data if a == "DATA" else a for a in args])
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
