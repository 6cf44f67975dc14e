"""The bundled classifiers: manifests valid, checksums right, accuracy on FER2013 PublicTest kept."""

from __future__ import annotations

import numpy as np
import pytest

from edgefer.artifact import BUNDLED, load
from edgefer.classify import EmotionClassifier


@pytest.mark.parametrize("name, min_top1", [("mini-xception", 65.0), ("edgenet", 67.5)])
def test_bundled_classifier_accuracy(name, min_top1, publictest):
    art = load(name)  # verifies every checksum
    assert art.manifest.kind == "classifier" and art.manifest.precision == "fp32"
    assert art.manifest.classes == publictest["classes"]
    clf = EmotionClassifier(name, backend="onnxruntime")
    probs = clf.predict_images(publictest["images"])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    top1 = 100 * float((probs.argmax(1) == publictest["labels"]).mean())
    assert top1 >= min_top1, f"{name}: {top1:.2f}% on PublicTest"


def test_every_bundled_name_loads():
    for name in BUNDLED:
        assert load(name).manifest.name
