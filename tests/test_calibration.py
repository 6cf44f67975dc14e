"""Calibration data: FER2013 CSV / class folders / npz readers, balanced sampling, crops from
videos through the detector, and `edgefer calibrate`. Real FER2013 faces from ../shared."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgefer.artifact import InputSpec, load
from edgefer.calibration.datasets import load_labeled, open_labeled
from edgefer.calibration.samples import balanced_indices, collect
from edgefer.classes import FER2013
from edgefer.cli import main
from edgefer.errors import EdgeferError

SPEC = InputSpec(size=[64, 64], mean=[127.5], std=[127.5])


@pytest.fixture(scope="module")
def faces(publictest):
    """140 real faces, 20 per class, with their FER2013 labels."""
    idx = np.concatenate([np.flatnonzero(publictest["labels"] == c)[:20] for c in range(7)])
    return publictest["images"][idx], publictest["labels"][idx]


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory, faces):
    images, labels = faces
    path = tmp_path_factory.mktemp("csv") / "fer2013.csv"
    lines = ["emotion,pixels,Usage"]
    for i, (im, y) in enumerate(zip(images, labels)):
        usage = "Training" if i % 2 == 0 else "PublicTest"
        lines.append(f"{y},{' '.join(map(str, im.reshape(-1)))},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory, faces):
    images, labels = faces
    root = tmp_path_factory.mktemp("folders") / "train"
    for i, (im, y) in enumerate(zip(images, labels)):
        d = root / FER2013[y]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"im{i:04d}.png"), im)  # PNG: lossless, pixels compare exactly
    return root


def test_fer2013_csv_reader_usage_and_pixels(fer_csv, faces):
    images, labels = faces
    x, y, classes = load_labeled(fer_csv, usage="Training")
    assert classes == list(FER2013)
    assert len(x) == 70 and x.shape[1:] == (48, 48) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, images[::2])
    np.testing.assert_array_equal(y, labels[::2])
    x_all, _, _ = load_labeled(fer_csv)
    assert len(x_all) == 140
    with pytest.raises(EdgeferError, match="no rows with Usage 'PrivateTest'"):
        load_labeled(fer_csv, usage="PrivateTest")


def test_class_folders_reader_fer_order(class_folders, faces):
    images, labels = faces
    x, y, classes = load_labeled(class_folders)
    assert classes == list(FER2013)  # folder names put in FER2013 order, not alphabetical
    assert len(x) == 140
    for c in range(7):  # each class folder holds exactly that class's faces
        got = sorted(im.tobytes() for im in x[y == c])
        want = sorted(im.tobytes() for im in images[labels == c])
        assert got == want


def test_npz_reader_classes_optional(tmp_path, faces):
    images, labels = faces
    p = tmp_path / "faces.npz"
    np.savez(p, images=images, labels=labels)
    x, y, classes = load_labeled(p)
    assert classes == list(FER2013) and len(x) == 140
    np.savez(tmp_path / "named.npz", images=images[:10], labels=np.zeros(10, np.int64), classes=np.array(["calm", "anger"]))
    assert load_labeled(tmp_path / "named.npz")[2] == ["calm", "anger"]
    np.savez(tmp_path / "bad.npz", pixels=images)
    with pytest.raises(EdgeferError, match="no 'images' array"):
        load_labeled(tmp_path / "bad.npz")


def test_balanced_indices_reproducible_and_balanced():
    labels = np.array([0] * 1000 + [1] * 12 + [2] * 500)
    a = balanced_indices(labels, 300, seed=3)
    assert len(a) == 300 and len(set(a.tolist())) == 300
    counts = np.bincount(labels[a], minlength=3)
    assert counts[1] == 12  # the rare class is taken whole
    assert abs(int(counts[0]) - int(counts[2])) <= 1  # the rest split evenly
    np.testing.assert_array_equal(a, balanced_indices(labels, 300, seed=3))
    assert not np.array_equal(a, balanced_indices(labels, 300, seed=4))


@pytest.mark.parametrize("source", ["csv", "folders"])
def test_collect_from_labeled_sources(source, fer_csv, class_folders):
    path = fer_csv if source == "csv" else class_folders
    cs = collect(path, SPEC, count=35, seed=0, usage="Training", progress=False)
    assert cs.images.shape == (35, 64, 64, 1) and cs.images.dtype == np.uint8
    assert np.bincount(cs.labels, minlength=7).tolist() == [5] * 7
    p = cs.provenance
    assert p["count"] == 35 and p["seed"] == 0 and p["checksum"].startswith("sha256:")
    assert p["kind"] == ("fer2013-csv" if source == "csv" else "class-folders")


def test_collect_from_train_npz_is_deterministic():
    from conftest import shared_file

    path = shared_file("data/fer2013/train.npz")
    a = collect(path, SPEC, count=300, seed=0, progress=False)
    b = collect(path, SPEC, count=300, seed=0, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    counts = np.bincount(a.labels, minlength=7)
    assert counts.min() >= 42 and counts.sum() == 300  # balanced: disgust is not drowned by happy


def test_collect_faces_from_video_through_detector(videos_dir):
    pytest.importorskip("edgefer.detect", reason="edgefer.detect (face detector) not available yet")
    man = load("mini-xception").manifest
    try:
        cs = collect(videos_dir / "frown_512.mp4", man.input, man.crop, count=24, seed=0, progress=False)
    except EdgeferError as e:
        pytest.skip(f"detector unavailable: {e}")
    assert cs.images.shape == (24, 64, 64, 1)
    assert cs.labels is None
    assert cs.provenance["kind"] == "video" and cs.provenance["faces_found"] >= 24
    # real faces: not flat frames, and not all the same crop
    assert cs.images.std() > 20 and len({im.tobytes() for im in cs.images}) > 12


def test_calibrate_cli_writes_npz_that_export_reads(tmp_path, fer_csv, capsys):
    out = tmp_path / "calib.npz"
    rc = main(["-q", "calibrate", str(fer_csv), "-o", str(out), "-n", "28"])
    assert rc == 0, capsys.readouterr().err
    d = np.load(out)
    assert d["images"].shape == (28, 48, 48, 1)  # the default classifier's input (EdgeNet, 48 px gray)
    assert [str(c) for c in d["classes"]] == list(FER2013)
    prov = json.loads(str(d["provenance"]))
    from edgefer.artifact import DEFAULT_CLASSIFIER

    assert prov["model"] == DEFAULT_CLASSIFIER and prov["count"] == 28
    t = open_labeled(out, require_labels=False)
    assert len(t) == 28 and t.details["collected_by"]["kind"] == "fer2013-csv"


@pytest.mark.parametrize(
    "args, message",
    [
        (["calibrate", "{tmp}/missing.csv", "-o", "{tmp}/o.npz"], "not found"),
        (["calibrate", "{tmp}/notes.txt", "-o", "{tmp}/o.npz"], "unsupported file type"),
        (["calibrate", "{tmp}/broken.npz", "-o", "{tmp}/o.npz"], "cannot read"),
        (["calibrate", "{tmp}/bad.csv", "-o", "{tmp}/o.npz"], "not a FER2013 CSV"),
        (["calibrate", "{csv}", "-o", "{tmp}/o.txt"], "must end in .npz"),
    ],
)
def test_calibrate_bad_input_one_line_exit_2(tmp_path, fer_csv, capsys, args, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    argv = ["-q"] + [a.format(tmp=tmp_path, csv=fer_csv) for a in args]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_collect_from_video_frames_spread_and_cropped(videos_dir):
    """Frame sampling and cropping of the media path, with a stand-in detector (one fixed box)."""
    from types import SimpleNamespace

    seen = []

    def detector(frame):
        seen.append(frame.shape)
        h, w = frame.shape[:2]
        box = np.array([[w * 0.3, h * 0.2, w * 0.7, h * 0.7]], np.float32)
        eyes = np.array([[[w * 0.42, h * 0.4], [w * 0.58, h * 0.4], [w * 0.5, h * 0.5], [w * 0.44, h * 0.6], [w * 0.56, h * 0.6]]])
        return SimpleNamespace(boxes=box, scores=np.ones(1), landmarks=eyes)

    man = load("mini-xception").manifest
    cs = collect(videos_dir / "frown_512.mp4", man.input, man.crop, count=20, seed=1, detector=detector, progress=False)
    assert cs.images.shape == (20, 64, 64, 1) and cs.labels is None
    assert len(seen) >= 20 and all(s == (512, 512, 3) for s in seen)
    assert cs.provenance["frames_searched"] == len(seen) and cs.provenance["faces_found"] == len(seen)
    assert len({im.tobytes() for im in cs.images}) == 20  # different frames, not one crop repeated
