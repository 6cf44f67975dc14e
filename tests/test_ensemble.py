"""Ensembles: the combination rules on hand-computed inputs, class-set checks, and the artifact
loaded transparently through EmotionClassifier and the video loop (real models, real faces)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from edgefer import artifact
from edgefer.classify import EmotionClassifier
from edgefer.cli import main
from edgefer.ensemble import EnsembleClassifier, class_mapping, combine, combine_mean, combine_vote, write_ensemble
from edgefer.errors import EdgeferError

# three members, two faces, three classes
P = np.array([
    [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]],
    [[0.2, 0.7, 0.1], [0.1, 0.5, 0.4]],
    [[0.5, 0.1, 0.4], [0.2, 0.2, 0.6]],
], np.float32)


def test_mean_rule_by_hand():
    want = np.array([[1.3 / 3, 1.1 / 3, 0.6 / 3], [0.8 / 3, 1.1 / 3, 1.1 / 3]], np.float32)
    np.testing.assert_allclose(combine_mean(P), want, atol=1e-6)
    np.testing.assert_allclose(combine(P, "mean"), want, atol=1e-6)


def test_vote_rule_by_hand():
    out = combine_vote(P)
    # face 0: votes class0 (m0, m2), class1 (m1) -> class 0 wins 2:1
    # face 1: votes class0, class1, class2 -> 1:1:1 tie; means 0.267, 0.367, 0.367 -> classes 1 and 2
    #         tie again on the mean -> the first of them (class 1)
    votes = np.array([[2, 1, 0], [1, 1, 1]], np.float32)
    mean = combine_mean(P)
    np.testing.assert_allclose(out, (votes + mean) / 4, atol=1e-6)
    assert out.argmax(1).tolist() == [0, 1]
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-6)
    # a 2:1 majority beats a higher mean probability: the vote, not the mean, decides
    q = np.array([[[0.40, 0.35, 0.25]], [[0.40, 0.39, 0.21]], [[0.0, 1.0, 0.0]]], np.float32)
    assert combine_mean(q).argmax() == 1 and combine_vote(q).argmax() == 0
    # a 2:2 tie goes to the higher mean *among the tied classes*, even when an unvoted class has
    # the highest mean overall: votes c0, c0, c1, c1; means c0 .3375, c1 .32, c2 .3425 -> c0
    t = np.array([[[0.40, 0.25, 0.35]], [[0.40, 0.25, 0.35]], [[0.25, 0.40, 0.35]], [[0.30, 0.38, 0.32]]], np.float32)
    assert combine_mean(t).argmax() == 2 and combine_vote(t).argmax() == 0
    with pytest.raises(EdgeferError, match="unknown ensemble rule"):
        combine(P, "median")


def test_class_mapping_reorders_by_name_and_refuses_other_sets():
    idx = class_mapping(["angry", "happy", "sad"], ["sadness", "anger", "happiness"], "m")
    assert idx.tolist() == [1, 2, 0]
    with pytest.raises(EdgeferError) as e:
        class_mapping(["angry", "happy", "sad"], ["angry", "happy", "calm"], "member B")
    msg = str(e.value)
    assert "same classes" in msg and "member B" in msg and "lacks sad" in msg and "\n" not in msg


def _copy_artifact(ref: str, dest, **changes):
    """A copy of an artifact with manifest fields changed (classes, name...)."""
    src = artifact.load(ref)
    dest.mkdir(parents=True)
    shutil.copy(src.model_path, dest / src.model_path.name)
    m = json.loads(src.manifest_path.read_text())
    m.update(changes)
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def test_mismatched_class_sets_are_refused(tmp_path, capsys):
    four = _copy_artifact("mini-xception", tmp_path / "other",
                          classes=["angry", "disgust", "fear", "happy", "sad", "surprise", "contempt"])
    with pytest.raises(EdgeferError, match="same classes"):
        write_ensemble(["mini-xception", four], "mean", tmp_path / "ens")
    # the module's CLI says it in one line, exit code 2
    from edgefer.ensemble import main as ens_main

    assert ens_main(["-o", str(tmp_path / "ens2"), "mini-xception", str(four)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgefer: error:") and "lacks neutral" in err and "\n" not in err
    with pytest.raises(EdgeferError, match="at least 2"):
        write_ensemble(["mini-xception"], "mean", tmp_path / "ens3")
    with pytest.raises(EdgeferError, match="must be classifiers"):
        write_ensemble(["mini-xception", "retinaface-mnet025"], "vote", tmp_path / "ens4")


@pytest.fixture(scope="module")
def ensemble_dirs(tmp_path_factory):
    """mean and vote ensembles of the bundled mini-XCEPTION (ONNX Runtime) and its CAM twin run on OpenVINO."""
    pytest.importorskip("openvino")
    root = tmp_path_factory.mktemp("ens")
    twin = _copy_artifact("mini-xception-cam", root / "twin", name="mini-xception-twin")
    out = {}
    for rule in ("mean", "vote"):
        path = write_ensemble(["mini-xception", twin], rule, root / rule)
        m = json.loads(path.read_text())
        m["extra"]["ensemble"]["members"][1]["backend"] = "openvino"  # mixed backends
        path.write_text(json.dumps(m))
        out[rule] = path.parent
    return out


def test_ensemble_loads_transparently(ensemble_dirs, publictest):
    faces = publictest["images"][:64]
    a = EmotionClassifier("mini-xception")
    b = EmotionClassifier(artifact.load(ensemble_dirs["mean"] / "../twin"), backend="openvino")
    pa, pb = a.predict_images(faces), b.predict_images(faces)
    for rule, want in (("mean", (pa + pb) / 2), ("vote", combine_vote(np.stack([pa, pb])))):
        ens = EmotionClassifier(ensemble_dirs[rule])
        assert isinstance(ens, EnsembleClassifier) and ens.rule == rule
        assert [m.backend.name for m in ens.members] == ["onnxruntime", "openvino"]
        assert ens.classes == a.classes
        np.testing.assert_allclose(ens.predict_images(faces), want, atol=1e-5)
        # predict() on a batch laid out as the ensemble's input, and __call__ on a frame
        batch = np.stack([cv2.resize(im, (64, 64)) for im in faces[:8]])[..., None]
        np.testing.assert_allclose(ens.predict(batch), combine(np.stack([a.predict(batch), b.predict(batch)]), rule), atol=1e-5)
        info = ens.backend.info()
        assert info["backend"] == "ensemble" and info["rule"] == rule and len(info["members"]) == 2


def test_run_with_an_ensemble_classifier(ensemble_dirs, videos_dir, tmp_path, capsys):
    summ = tmp_path / "s.json"
    ev = tmp_path / "e.jsonl"
    assert main(["run", str(videos_dir / "frown_512.mp4"), "--max-frames", "4", "--no-display",
                 "--classifier", str(ensemble_dirs["vote"]), "--events", str(ev), "--summary", str(summ)]) == 0
    s = json.loads(summ.read_text())
    assert s["classifier"]["backend"] == "ensemble" and s["faces"] == 4
    lines = [json.loads(x) for x in ev.read_text().splitlines()]
    assert all(len(fr["faces"]) == 1 and abs(sum(fr["faces"][0]["probs"].values()) - 1) < 1e-3 for fr in lines)
    # explain on an ensemble is refused in one line
    assert main(["run", str(videos_dir / "frown_512.mp4"), "--max-frames", "1", "--no-display", "--explain",
                 "--classifier", str(ensemble_dirs["vote"])]) == 2
    assert "is an ensemble" in capsys.readouterr().err
