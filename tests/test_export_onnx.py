"""`edgefer export --target onnx`: FP16 and calibrated INT8 of the trained mini-XCEPTION, checked
on real FER2013 PublicTest faces through the ONNX Runtime backend, and the manifest they carry."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgefer.align import resize_faces
from edgefer.artifact import load
from edgefer.backends import open_backend
from edgefer.export.api import export_model
from edgefer.export.quantize import cpu_profile, overflow_risk

from conftest import shared_file

N_FACES = 600


@pytest.fixture(scope="module")
def subset(publictest):
    """600 PublicTest faces (fixed random subset) and labels."""
    idx = np.sort(np.random.default_rng(0).choice(len(publictest["labels"]), N_FACES, replace=False))
    return publictest["images"][idx], publictest["labels"][idx]


def predict(ref, images, backend="onnxruntime"):
    b = open_backend(ref, backend)
    x = resize_faces(images, b.manifest.input)
    return np.concatenate([b.run(x[i : i + 200])[0] for i in range(0, len(x), 200)])


@pytest.fixture(scope="module")
def fp32(subset):
    return predict("mini-xception", subset[0])


@pytest.fixture(scope="module")
def onnx_int8(tmp_path_factory):
    calib = shared_file("data/fer2013/train.npz")
    out = tmp_path_factory.mktemp("onnx") / "int8"
    return export_model("mini-xception", "onnx", "int8", calib=str(calib), output=out, progress=False, check_size=200)


@pytest.fixture(scope="module")
def onnx_fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "fp16"
    return export_model("mini-xception", "onnx", "fp16", output=out, progress=False)


def top1(probs, labels):
    return 100.0 * float((probs.argmax(1) == labels).mean())


def test_fp16_accuracy_and_agreement(onnx_fp16, subset, fp32):
    images, labels = subset
    p = predict(onnx_fp16.path, images)
    assert abs(top1(p, labels) - top1(fp32, labels)) <= 0.35  # FP16 target: <= 0.1 on the full split
    assert (p.argmax(1) == fp32.argmax(1)).mean() >= 0.99
    m = onnx.load(str(onnx_fp16.path / "model.onnx"))
    inits = {i.data_type for i in m.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in inits and onnx.TensorProto.FLOAT not in inits
    # the interface is unchanged: uint8 pixels in, float32 probabilities out
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_int8_accuracy_and_agreement(onnx_int8, subset, fp32):
    images, labels = subset
    p = predict(onnx_int8.path, images)
    drop = top1(fp32, labels) - top1(p, labels)
    assert drop <= 1.5, f"INT8 drop {drop:.2f} points on {N_FACES} faces"  # target <= 1.0 on the full split
    assert (p.argmax(1) == fp32.argmax(1)).mean() >= 0.94


def test_int8_graph_is_symmetric_per_channel_qdq(onnx_int8):
    m = onnx.load(str(onnx_int8.path / "model.onnx"))
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) > 20
    weights = [n for n in dq if n.input[0] in init and init[n.input[0]].ndim == 4]
    assert weights and all(init[n.input[1]].size > 1 for n in weights)  # per-channel scales
    assert all(init[n.input[0]].dtype == np.int8 for n in weights)
    producer = {o: n for n in m.graph.node for o in n.output}
    softmax = [n for n in m.graph.node if n.op_type == "Softmax"]
    assert softmax and producer[softmax[0].input[0]].op_type != "DequantizeLinear"  # probabilities stay float
    variant = onnx_int8.manifest.extra["int8"]["variant"]
    if variant.startswith("s8s8"):
        zps = [init[n.input[2]] for n in dq if len(n.input) > 2 and n.input[2] in init]
        assert all(np.all(z == 0) for z in zps)


def test_int8_variant_choice_recorded(onnx_int8):
    i8 = onnx_int8.manifest.extra["int8"]
    cpu = cpu_profile()
    assert i8["reason"] and i8["cpu"] == cpu["cpu"]
    if overflow_risk(cpu):
        # x86 without VNNI: full-range S8S8 overflows in ORT's kernels; a 7-bit variant is kept
        assert i8["variant"] in ("s8s8-rr", "u8s8-rr")
        scores = i8["measured"]
        assert scores["s8s8"]["agreement"] < scores[i8["variant"]]["agreement"]
        # the exact float simulation of the same S8S8 graph is fine: the loss is the kernels'
        assert scores["s8s8"]["simulated_agreement"] > scores["s8s8"]["agreement"]
    else:
        assert i8["variant"] == "s8s8"


def test_int8_manifest_provenance(onnx_int8):
    art = load(onnx_int8.path)  # checksums verified
    m = art.manifest
    assert (m.target, m.precision) == ("onnx", "int8")
    c = m.calibration
    assert c["count"] == 300 and c["method"] == "minmax" and c["seed"] == 0
    assert c["source_name"] == "train.npz" and c["checksum"].startswith("sha256:")
    assert min(c["per_class"].values()) >= 40  # class-balanced
    p = m.provenance
    assert p["source"]["sha256"].startswith("sha256:") and p["source"]["kind"] == "bundled"
    assert "edgefer export mini-xception --target onnx --int8" in p["command"]
    assert {"onnx", "onnxruntime", "edgefer"} <= set(p["tools"])
    assert m.extra["validation"]["agreement"] >= 0.9
    assert m.input.dtype == "uint8" and m.classes[0] == "angry"
