"""`edgefer export --target trt` and the static TensorRT-readiness check.

Without TensorRT (this CI) the export writes the checked TensorRT-ready ONNX and the one
device command; the readiness checker must pass our QDQ graph and flag asymmetric zero points,
uint8 quantization, QOperator ops, extra dynamic dims and missing external data. Engine
builds run only where TensorRT and a GPU are present."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefer.artifact import load
from edgefer.backends import available
from edgefer.export.api import export_model
from edgefer.trt_readiness import check, errors, main as readiness_main

from conftest import shared_file


@pytest.fixture(scope="module")
def calib():
    return str(shared_file("data/fer2013/train.npz"))


@pytest.fixture(scope="module")
def trt_int8(tmp_path_factory, calib):
    out = tmp_path_factory.mktemp("trt") / "int8"
    return export_model("mini-xception", "trt", "int8", calib=calib, output=out, progress=False, check_size=150,
                        build_engine=False)


def codes(findings):
    return {f.code for f in errors(findings)}


def test_trt_int8_artifact_is_ready_and_symmetric(trt_int8):
    m = load(trt_int8.path).manifest
    assert (m.target, m.precision) == ("trt", "int8")
    assert m.files["model"] == "model.onnx"
    i8 = m.extra["int8"]
    assert i8["variant"] == "s8s8" and i8["tensorrt_ready"]  # full 8-bit, zero point 0: what TensorRT takes
    assert not [f for f in m.extra["trt_readiness"] if f["severity"] == "error"]
    assert not codes(check(trt_int8.path / "model.onnx"))
    # the exact float simulation of the graph TensorRT will run stays close to FP32
    assert trt_int8.validation["agreement"] >= 0.93


def test_trt_export_prints_the_device_command_without_tensorrt(trt_int8):
    ok, why = available("tensorrt")
    if ok:
        pytest.skip("TensorRT is installed here: the engine is built directly")
    # the folder as the user copies it to the device, never a path of the exporting machine
    assert trt_int8.next_command == f"edgefer export {trt_int8.path.name} --target trt"
    assert "why_not_here" in trt_int8.manifest.extra["trt_build"]
    assert not (trt_int8.path / "model.engine").exists()  # never a fake engine


def test_trt_fp16_carries_both_graphs(tmp_path):
    res = export_model("mini-xception", "trt", "fp16", output=tmp_path / "fp16", progress=False, build_engine=False)
    files = res.manifest.files
    assert files["model"] == "model.onnx" and files["onnx_fp32"] == "model_fp32.onnx"
    m16 = onnx.load(str(res.path / "model.onnx"))
    assert any(i.data_type == TensorProto.FLOAT16 for i in m16.graph.initializer)  # 11.x: float16 graph
    m32 = onnx.load(str(res.path / "model_fp32.onnx"))
    assert all(i.data_type != TensorProto.FLOAT16 for i in m32.graph.initializer)  # 10.x: FP32 + FP16 flag
    assert not codes(check(res.path / "model.onnx"))


def test_readiness_flags_asymmetric_zero_points(tmp_path, calib):
    """The U8S8 variant (asymmetric uint8 activations) is fine for ORT but not for TensorRT."""
    res = export_model("mini-xception", "onnx", "int8", calib=calib, int8_variant="u8s8-rr", calib_size=64,
                       check_size=0, output=tmp_path / "u8", progress=False)
    found = codes(check(res.path / "model.onnx"))
    assert "asymmetric-zero-point" in found and "uint8-quantization" in found
    with pytest.raises(Exception, match="symmetric int8"):
        export_model("mini-xception", "trt", "int8", calib=calib, int8_variant="u8s8-rr", output=tmp_path / "x",
                     progress=False)


def _tiny(nodes, inits, inp_shape=("N", 3), opset=17, extra_inputs=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inp_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "t", [x, *extra_inputs], [y], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_readiness_flags_synthetic_problems(tmp_path):
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp_i8_bad = numpy_helper.from_array(np.array(3, np.int8), "zp")
    m = _tiny([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
               helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])], [s, zp_i8_bad])
    assert "asymmetric-zero-point" in codes(check(m))

    zp_u8 = numpy_helper.from_array(np.array(0, np.uint8), "zp")
    m = _tiny([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
               helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])], [s, zp_u8])
    assert codes(check(m)) == {"uint8-quantization"}

    m = _tiny([helper.make_node("ConvInteger", ["x", "x"], ["y"])], [])
    assert "unsupported-ops" in codes(check(m))

    m = _tiny([helper.make_node("Relu", ["x"], ["y"])], [], inp_shape=("N", "C"))
    assert "dynamic-shape" in codes(check(m))

    m = _tiny([helper.make_node("Relu", ["x"], ["y"])], [], opset=7)
    assert "opset" in codes(check(m))

    m = _tiny([helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft")], [])
    assert "custom-domain-ops" in codes(check(m))

    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    m = _tiny([helper.make_node("MatMul", ["x", "w"], ["y"])], [w])
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    assert not codes(check(p))
    (tmp_path / "ext.onnx.data").unlink()
    assert "external-data" in codes(check(p))
    assert readiness_main([str(p)]) == 1


def test_trt_engine_build_on_device(trt_int8, tmp_path):
    ok, why = available("tensorrt")
    if not ok:
        pytest.skip(f"TensorRT engine build needs TensorRT and a GPU: {why}")
    from edgefer.backends import open_backend
    from edgefer.align import resize_faces

    res = export_model(str(trt_int8.path), "trt", "int8", output=tmp_path / "engine", progress=False)
    assert res.manifest.files["model"] == "model.engine" and res.manifest.extra["trt"]["gpu"]
    b = open_backend(res.path, "tensorrt")
    pt = np.load(shared_file("data/fer2013/publictest.npz"))
    x = resize_faces(pt["images"][:256], b.manifest.input)
    ref = open_backend("mini-xception", "onnxruntime").run(x)[0]
    assert (b.run(x)[0].argmax(1) == ref.argmax(1)).mean() >= 0.93
