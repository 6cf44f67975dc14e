"""`edgefer export --target openvino`: FP16 IR, INT8 from the calibrated QDQ graph, NNCF INT8
(plain and with accuracy control), checked on real FER2013 PublicTest faces through the
OpenVINO backend, including that INT8 really runs int8 kernels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino not installed (pip install 'edgefer[openvino]')")

from edgefer.align import resize_faces  # noqa: E402
from edgefer.artifact import load  # noqa: E402
from edgefer.backends import open_backend  # noqa: E402
from edgefer.export.api import export_model  # noqa: E402

from conftest import shared_file  # noqa: E402

N_FACES = 600


@pytest.fixture(scope="module")
def subset(publictest):
    idx = np.sort(np.random.default_rng(0).choice(len(publictest["labels"]), N_FACES, replace=False))
    return publictest["images"][idx], publictest["labels"][idx]


def predict(ref, images, backend):
    b = open_backend(ref, backend)
    x = resize_faces(images, b.manifest.input)
    return np.concatenate([b.run(x[i : i + 200])[0] for i in range(0, len(x), 200)]), b


@pytest.fixture(scope="module")
def fp32(subset):
    return predict("mini-xception", subset[0], "onnxruntime")[0]


@pytest.fixture(scope="module")
def calib():
    return str(shared_file("data/fer2013/train.npz"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, calib):
    root = tmp_path_factory.mktemp("ov")
    kw = dict(progress=False, check_size=150)
    return {
        "fp16": export_model("mini-xception", "openvino", "fp16", output=root / "fp16", **kw),
        "int8": export_model("mini-xception", "openvino", "int8", calib=calib, output=root / "int8", **kw),
        "nncf": export_model("mini-xception", "openvino", "int8", calib=calib, nncf=True, output=root / "nncf", **kw),
    }


def top1(p, y):
    return 100.0 * float((p.argmax(1) == y).mean())


@pytest.mark.parametrize("which, max_drop, min_agree", [("fp16", 0.35, 0.99), ("int8", 1.5, 0.93), ("nncf", 1.5, 0.93)])
def test_accuracy_and_agreement(exported, subset, fp32, which, max_drop, min_agree):
    images, labels = subset
    p, _ = predict(exported[which].path, images, "openvino")
    drop = top1(fp32, labels) - top1(p, labels)
    assert drop <= max_drop, f"{which}: drop {drop:.2f} points on {N_FACES} faces"
    assert (p.argmax(1) == fp32.argmax(1)).mean() >= min_agree


@pytest.mark.parametrize("which", ["int8", "nncf"])
def test_int8_really_runs_int8_kernels(exported, which):
    b = open_backend(exported[which].path, "openvino", device="CPU")
    info = b.info()
    layers = info["compute_layers"]
    assert layers.get("int8", 0) >= 20 and layers.get("fp32", 0) == 0, layers
    assert info["executes"] == "int8"
    files = exported[which].manifest.files
    assert files["model"] == "model.xml" and files["weights"] == "model.bin"


def test_fp16_ir_reports_what_the_cpu_really_does(exported):
    info = open_backend(exported["fp16"].path, "openvino").info()
    assert info["precision"] == "fp16"
    # FP16 weights; a CPU without native FP16 arithmetic decompresses them and convolves in f32
    if info.get("inference_precision") == "f32":
        assert info["executes"] == "fp32" and info.get("precision_notes")


def test_int8_manifest(exported):
    m = load(exported["int8"].path).manifest
    i8 = m.extra["int8"]
    assert i8["format"].startswith("QDQ") and i8["chosen_for"] == "openvino"
    assert i8["variant"].startswith("s8s8")  # symmetric: the same graph family TensorRT takes
    assert m.calibration["count"] == 300
    n = load(exported["nncf"].path).manifest
    assert n.extra["int8"]["algorithm"] == "nncf.quantize" and n.calibration["method"] == "nncf"
    assert n.extra["int8"]["fake_quantize_ops"] > 20


def test_nncf_accuracy_control(tmp_path, calib, publictest):
    val = tmp_path / "val.npz"
    idx = np.random.default_rng(1).choice(len(publictest["labels"]), 400, replace=False)
    np.savez(val, images=publictest["images"][idx], labels=publictest["labels"][idx])
    res = export_model("mini-xception", "openvino", "int8", calib=calib, val=str(val), max_drop=1.0,
                       output=tmp_path / "ac", progress=False, calib_size=200)
    i8 = res.manifest.extra["int8"]
    assert i8["algorithm"] == "nncf.quantize_with_accuracy_control" and i8["max_drop_points"] == 1.0
    assert res.validation["drop_points"] <= 1.0 and res.validation["samples"] == 400
