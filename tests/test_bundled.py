"""The bundled classifiers: manifests valid, checksums right, accuracy on FER2013 PublicTest kept."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.artifact import BUNDLED, load
from edgefer.classify import EmotionClassifier


@pytest.mark.parametrize("name, min_top1", [("mini-xception", 65.0), ("edgenet", 69.5), ("edgenet-fast", 69.0),
                                            ("edgenet2", 68.2), ("edgenet2-fast", 66.8),
                                            ("edgenet3", 68.0), ("edgenet3-fast", 67.5)])
def test_bundled_classifier_accuracy(name, min_top1, publictest):
    art = load(name)  # verifies every checksum
    assert art.manifest.kind == "classifier" and art.manifest.precision == "fp32"
    assert art.manifest.classes == publictest["classes"]
    clf = EmotionClassifier(name, backend="onnxruntime")
    probs = clf.predict_images(publictest["images"])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    top1 = 100 * float((probs.argmax(1) == publictest["labels"]).mean())
    assert top1 >= min_top1, f"{name}: {top1:.2f}% on PublicTest"
    card = art.manifest.extra["card"]  # the model card states what this model scores, not a stale number
    assert abs(card["publictest"]["top1"] - top1) < 0.1, f"{name}: card {card['publictest']['top1']}, measured {top1:.2f}"


def test_every_bundled_name_loads():
    for name in BUNDLED:
        assert load(name).manifest.name


@pytest.mark.parametrize("name", ["edgenet3", "edgenet2", "edgenet"])
def test_edgenets_and_their_cam_twins_match(name, publictest):
    """The default classifier is EdgeNet 3 (selected and adjusted on a carve of the training data)
    with the in-graph flip; each EdgeNet's CAM twin gives the same probabilities, a face and its mirror image
    get the same answer, and the -fast twin is one pass."""
    from edgefer.artifact import DEFAULT_CLASSIFIER
    from edgefer.align import resize_faces

    assert DEFAULT_CLASSIFIER == "edgenet3" and load("default").manifest.name == "edgenet3"
    assert load(name).manifest.extra["tta"] == "flip" and "tta" not in (load(f"{name}-fast").manifest.extra or {})
    clf = EmotionClassifier(name, backend="onnxruntime")
    faces = resize_faces(publictest["images"][:64], clf.spec)
    p = clf.predict(faces)
    probs, cams = EmotionClassifier(f"{name}-cam", backend="onnxruntime").predict(faces, with_cam=True)
    np.testing.assert_allclose(probs, p, atol=1e-5)
    assert cams.shape == (64, 7, 3, 3)
    np.testing.assert_allclose(clf.predict(np.ascontiguousarray(faces[:, :, ::-1])), p, atol=1e-5)
    if name != "edgenet":  # selected on the carve, never on PublicTest (the manifest says so)
        training = load(name).manifest.provenance["base"]["training"]
        sel = training["selected_on"]
        assert sel["kind"] == "carved" and "publictest" not in str(sel).lower()
        if name == "edgenet3":  # its logit adjustment was chosen on that same carve
            assert training["adjust"]["chosen_by"] == "best macro-F1 on the carve" and training["adjust"]["tau"] > 0


def test_bundled_edgenet_finds_its_checkpoint_for_torch_side_exports(publictest):
    """Core ML / TensorRT-from-torch exports of a bundled EdgeNet rebuild the torch module from the
    checkpoint its manifest names (sha256-checked); it computes what the bundled graph computes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from edgefer.align import resize_faces
    from edgefer.export.source import bundled_torch_factory

    for name in ("edgenet", "edgenet-fast", "edgenet2", "edgenet2-fast", "edgenet3", "edgenet3-fast"):
        art = load(name)
        clf = EmotionClassifier(name, backend="onnxruntime")
        faces = resize_faces(publictest["images"][:32], clf.spec)
        with torch.no_grad():
            got = bundled_torch_factory(art.manifest)()(torch.from_numpy(faces)).numpy()
        np.testing.assert_allclose(got, clf.predict(faces), atol=1e-5)
