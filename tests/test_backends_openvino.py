"""OpenVINO backend: IR and ONNX, devices and hints, manifest fit checks, what really runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino not installed (pip install 'edgefer[openvino]')")

from edgefer.align import resize_faces  # noqa: E402
from edgefer.artifact import load  # noqa: E402
from edgefer.backends import open_backend  # noqa: E402
from edgefer.errors import EdgeferError  # noqa: E402


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    from edgefer.export.api import export_model

    return export_model("mini-xception", "openvino", "fp32", output=tmp_path_factory.mktemp("ir") / "fp32",
                        progress=False).path


@pytest.fixture(scope="module")
def batch(publictest):
    return resize_faces(publictest["images"][:37], load("mini-xception").manifest.input)


def test_ir_matches_onnxruntime_any_batch(ir, batch):
    ref = open_backend("mini-xception", "onnxruntime").run(batch)[0]
    b = open_backend(ir, "openvino")
    np.testing.assert_allclose(b.run(batch)[0], ref, atol=1e-4)
    np.testing.assert_allclose(b.run(batch[:1])[0], ref[:1], atol=1e-4)
    info = b.info()
    assert info["backend"] == "openvino" and info["device"] == "CPU" and info["hint"] == "latency"
    assert info["compute_layers"].get("fp32", 0) >= 20 and info["executes"] == "fp32"


def test_onnx_artifact_runs_on_openvino_throughput_hint(batch):
    b = open_backend("mini-xception", "openvino", hint="throughput")
    ref = open_backend("mini-xception", "onnxruntime").run(batch)[0]
    np.testing.assert_allclose(b.run(batch)[0], ref, atol=1e-4)
    assert b.info()["hint"] == "throughput"


@pytest.mark.parametrize(
    "options, message",
    [({"device": "QPU"}, "not available here"), ({"hint": "fastest"}, "hint must be one of")],
)
def test_bad_device_or_hint(ir, options, message):
    with pytest.raises(EdgeferError, match=message):
        open_backend(ir, "openvino", **options)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"classes": ["a", "b", "c"]}, "outputs 7 classes"),
        ({"input": {"size": [48, 48]}}, "graph input is 64x64"),
        ({"input": {"name": "pixels"}}, "manifest says 'pixels'"),
        ({"input": {"dtype": "float32"}}, "input type is u8"),
    ],
)
def test_model_must_fit_its_manifest(ir, tmp_path, patch, message):
    d = tmp_path / "art"
    shutil.copytree(ir, d)
    man = json.loads((d / "manifest.json").read_text())
    for k, v in patch.items():
        if isinstance(v, dict):
            man[k].update(v)
        else:
            man[k] = v
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(EdgeferError, match=f"does not fit its manifest: .*{message}"):
        open_backend(d, "openvino")
