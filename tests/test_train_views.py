"""Runtime views (train/views.py): training faces cropped as `edgefer run` crops them, and training on them.

Real parts: the bundled RetinaFace on ONNX Runtime finds real FER2013 faces pasted into frames.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import shared_file
from edgefer.errors import EdgeferError
from edgefer.train.engine import TrainConfig, train, with_views
from edgefer.train.views import load_views, make_views, save_views, views_for

from edgefer.classes import FER2013


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    d = np.load(shared_file("data/fer2013/publictest.npz"))
    idx = np.sort(np.concatenate([np.flatnonzero(d["labels"] == c)[:20] for c in range(7)]))  # 140 faces
    p = tmp_path_factory.mktemp("views") / "train.npz"
    np.savez(p, images=d["images"][idx], labels=d["labels"][idx], classes=np.array(FER2013))
    return p


@pytest.fixture(scope="module")
def made(faces):
    return make_views(str(faces), (48, 48), "gray", per_face=2, limit=40, quiet=True)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def test_views_are_the_same_faces_cropped_otherwise(faces, made):
    v, f = made["views"], made["found"]
    assert v.shape == (40, 2, 48, 48, 1) and v.dtype == np.uint8 and f.shape == (40, 2)
    assert f.mean() >= 0.7, made["meta"]["found_pct"]  # most pasted faces are found at 48-144 px
    assert (v[~f] == 0).all()  # a missed face leaves no view
    images = np.load(faces)["images"][:40]
    same = [_ncc(v[i, j, :, :, 0], images[i]) for i, j in zip(*np.nonzero(f))]
    other = [_ncc(v[i, j, :, :, 0], images[(i + 7) % 40]) for i, j in zip(*np.nonzero(f))]
    # each view is its own face (framed and resampled otherwise, so never identical), not another one
    assert np.median(same) > 0.5 and np.median(same) > np.median(other) + 0.3
    assert not any(np.array_equal(v[i, j, :, :, 0], images[i]) for i, j in zip(*np.nonzero(f)))
    assert made["meta"]["crop"] == {"scale": 0.95, "align": "eyes"} and made["meta"]["data_sha256"].startswith("sha256:")
    again = make_views(str(faces), (48, 48), "gray", per_face=2, limit=10, quiet=True)
    assert np.array_equal(again["views"], v[:10])  # seeded: the same file gives the same views


def test_sensor_noise_views_carry_the_cameras_noise(faces, made):
    noisy = make_views(str(faces), (48, 48), "gray", per_face=2, limit=40, quiet=True, sensor_noise=12.0)
    assert noisy["meta"]["sensor_noise"] == 12.0 and made["meta"]["sensor_noise"] == 0.0
    assert (noisy["noise"] >= 0).all() and (noisy["noise"] <= 12).all() and noisy["noise"].std() > 1
    assert (made["noise"] == 0).all()

    def rough(v, f):  # mean absolute Laplacian of the found views: the noise left after the crop's shrink
        return float(np.mean([np.abs(cv2.Laplacian(v[i, j, :, :, 0].astype(np.float32), cv2.CV_32F)).mean()
                              for i, j in zip(*np.nonzero(f))]))

    assert noisy["found"].mean() >= 0.7
    assert rough(noisy["views"], noisy["found"]) > 1.15 * rough(made["views"], made["found"])
    with pytest.raises(EdgeferError, match="--sensor-noise"):
        make_views(str(faces), (48, 48), "gray", limit=2, quiet=True, sensor_noise=-1.0)


def test_views_file_is_checked_against_data_and_model(tmp_path, faces, made):
    p = save_views(tmp_path / "v.npz", made)
    digest = made["meta"]["data_sha256"]
    loaded = load_views(p, digest, [48, 48], "gray")
    v, f = views_for(loaded, np.array([3, 0, 39, 40, 1000]))  # rows 40 and 1000 have no views
    assert np.array_equal(v[0], made["views"][3]) and np.array_equal(v[2], made["views"][39])
    assert not f[3:].any() and not v[3:].any()
    with pytest.raises(EdgeferError, match="other data"):
        load_views(p, "sha256:" + "0" * 64, [48, 48], "gray")
    with pytest.raises(EdgeferError, match=r"takes \[64, 64\] gray"):
        load_views(p, digest, [64, 64], "gray")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(EdgeferError, match="not a views file"):
        load_views(tmp_path / "bad.npz", digest, [48, 48], "gray")
    with pytest.raises(EdgeferError, match="no such file"):
        load_views(tmp_path / "missing.npz", digest, [48, 48], "gray")


def test_with_views_swaps_only_found_views():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    views = torch.arange(1, 5, dtype=torch.uint8).view(4, 1, 1, 1, 1).repeat(1, 2, 1, 2, 2)
    views[:, 1] += 100
    found = np.array([[True, False], [False, True], [False, False], [True, True]])
    idx = np.array([0, 1, 2, 3])
    out = with_views(x, idx, views, found, 1.0, np.random.default_rng(0))
    assert out[0].unique().tolist() == [1] and out[1].unique().tolist() == [102]
    assert out[2].unique().tolist() == [0]  # no found view: the dataset crop stays
    assert out[3].unique().item() in (4, 104)
    assert x.sum() == 0  # the input batch is not modified in place
    assert with_views(x, idx, views, found, 0.0, np.random.default_rng(0)) is x


def test_training_on_views_runs_and_is_recorded(tmp_path, faces, made):
    from edgefer.cli import main
    from edgefer.train.checkpoint import read_sidecar

    p = save_views(tmp_path / "v.npz", made)
    out = tmp_path / "run"
    cfg = TrainConfig(arch="edgenet", data=str(faces), out=str(out), epochs=1, batch=32, warmup=0, threads=1,
                      quiet=True, views=str(p), view_prob=1.0, val_split=0.2)
    train(cfg)
    side = read_sidecar(out / "best.pth")
    assert side["training"]["views"] == str(p) and side["training"]["view_prob"] == 1.0
    assert "runtime views" in (out / "log.txt").read_text()
    # a views file of a 64x64 model, a missing file and a bad share: one line each, exit 2
    assert main(["train", "--arch", "mini-xception", "--data", str(faces), "--views", str(p), "-o", str(tmp_path / "x")]) == 2
    assert main(["train", "--arch", "edgenet", "--data", str(faces), "--views", str(tmp_path / "no.npz")]) == 2
    assert main(["train", "--arch", "edgenet", "--data", str(faces), "--views", str(p), "--view-prob", "2"]) == 2
    assert json.loads((out / "metrics.json").read_text())["status"] == "done"


def test_views_command_refuses_bad_options_in_one_line(tmp_path, faces, capsys):
    from edgefer.cli import main

    base = ["train", "views", "--data", str(faces), "--arch", "edgenet"]
    assert main([*base, "--sides", "big", "-o", str(tmp_path / "v.npz")]) == 2
    assert "MIN-MAX" in capsys.readouterr().err
    assert main([*base, "--sides", "150-400", "-o", str(tmp_path / "v.npz")]) == 2  # does not fit the frame
    assert "do not fit" in capsys.readouterr().err
    assert main([*base, "--per-face", "0", "-o", str(tmp_path / "v.npz")]) == 2
    assert main([*base, "-o", str(faces)]) == 2  # never over the training data
    assert "overwrite" in capsys.readouterr().err
    assert main(["train", "views", "--data", str(tmp_path / "none.npz"), "--arch", "edgenet", "-o", str(tmp_path / "v.npz")]) == 2
    assert not (tmp_path / "v.npz").exists()
