"""TensorRT backend: engine-cache identity and the refusal of engines built elsewhere.

Building and running engines needs TensorRT and a GPU (tests skip with the reason here); the
portability rules are checked without them."""

from __future__ import annotations

import json

import pytest

from edgefer.artifact import Artifact, InputSpec, Manifest, write_artifact
from edgefer.backends import available, open_backend
from edgefer.backends.tensorrt import TensorRTBackend, engine_key, incompatibility
from edgefer.errors import EdgeferError

BUILT = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}


def test_engine_identity_and_incompatibility():
    here = dict(BUILT)
    assert incompatibility(BUILT, here) is None
    why = incompatibility(BUILT, {**here, "gpu": "NVIDIA H100", "compute_capability": "9.0"})
    assert "GPU Orin" in why and "sm 8.7" in why and "H100" in why
    assert "TensorRT 10.3.0 vs this 11.0.1" in incompatibility(BUILT, {**here, "tensorrt": "11.0.1"})
    k = engine_key({**BUILT, "precision": "int8", "max_batch": 32})
    assert k == engine_key({"max_batch": 32, "precision": "int8", **BUILT})  # order-free
    assert k != engine_key({**BUILT, "precision": "fp16", "max_batch": 32})
    assert k != engine_key({**BUILT, "precision": "int8", "max_batch": 64})


def _engine_artifact(tmp_path, with_onnx: bool) -> Artifact:
    (tmp_path / "model.engine").write_bytes(b"serialized engine for another GPU")
    files = {"model": "model.engine"}
    if with_onnx:
        (tmp_path / "model.onnx").write_bytes(b"onnx")
        files["onnx"] = "model.onnx"
    man = Manifest(name="m", kind="classifier", target="trt", precision="int8", files=files, classes=["a", "b"],
                   input=InputSpec(size=[64, 64]), extra={"trt": BUILT})
    write_artifact(man, tmp_path)
    return Artifact(man, tmp_path, tmp_path / "manifest.json")


def _bare_backend(art: Artifact, here: dict) -> TensorRTBackend:
    b = object.__new__(TensorRTBackend)  # no TensorRT here: exercise the engine-source logic only
    b.artifact, b.manifest, b.options, b.here = art, art.manifest, {}, here
    return b


def test_foreign_engine_without_onnx_is_refused_clearly(tmp_path):
    b = _bare_backend(_engine_artifact(tmp_path, with_onnx=False), {**BUILT, "gpu": "NVIDIA H100", "compute_capability": "9.0"})
    with pytest.raises(EdgeferError, match="not portable.*no ONNX to rebuild from"):
        b._engine_bytes()


def test_foreign_engine_with_onnx_is_rebuilt(tmp_path, monkeypatch):
    b = _bare_backend(_engine_artifact(tmp_path, with_onnx=True), {**BUILT, "tensorrt": "10.7.0"})
    called = {}
    monkeypatch.setattr(b, "_cached_build", lambda p: called.setdefault("onnx", p.name) and (b"engine", {}))
    b._engine_bytes()
    assert called["onnx"] == "model.onnx"


def test_matching_engine_is_used_as_is(tmp_path):
    b = _bare_backend(_engine_artifact(tmp_path, with_onnx=False), dict(BUILT))
    blob, meta = b._engine_bytes()
    assert blob.startswith(b"serialized") and meta == BUILT


def test_trt_artifact_without_tensorrt_says_what_to_install(tmp_path):
    ok, why = available("tensorrt")
    if ok:
        pytest.skip("TensorRT is installed here")
    _engine_artifact(tmp_path, with_onnx=True)
    with pytest.raises(EdgeferError, match="no installed backend runs trt artifacts.*edgefer\\[trt\\]"):
        open_backend(tmp_path, "auto")
    assert json.loads((tmp_path / "manifest.json").read_text())["target"] == "trt"

