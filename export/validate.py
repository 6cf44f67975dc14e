"""Run what export produced, the way the runtime will, and compare it with the FP32 reference.

Export never reports a precision it did not check: after writing an artifact it is loaded
through edgefer's own backend (ONNX Runtime or OpenVINO), fed held-out faces, and compared
with the FP32 ONNX graph on ONNX Runtime: top-1 agreement, and top-1 accuracy when labels
are known. The helpers here are also what the INT8 variant choice runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def _batched(fn, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    outs = [np.asarray(fn(x[i : i + batch_size]), np.float32) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _ort_session(path: str | os.PathLike, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict_onnxruntime(path: str | os.PathLike, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    """First output of an ONNX model on ONNX Runtime's CPU provider.

    ``optimize=False`` runs QuantizeLinear/DequantizeLinear as written (no fused int8 kernels):
    the exact float simulation of a QDQ graph, the reference a runtime's int8 kernels should meet.
    """
    s = _ort_session(path, optimize)
    name = s.get_inputs()[0].name
    return _batched(lambda b: s.run(None, {name: b})[0], x)


def simulate_qdq(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    return predict_onnxruntime(path, x, optimize=False)


def predict_openvino(model: Any, x: np.ndarray, device: str = "CPU") -> np.ndarray:
    """First output of an ov.Model / IR / ONNX path compiled on OpenVINO ``device``."""
    import openvino as ov

    core = ov.Core()
    cm = core.compile_model(str(model) if isinstance(model, (str, Path)) else model, device)
    out = cm.outputs[0]
    return _batched(lambda b: cm(b)[out], x)


def predict_artifact(art_path: str | os.PathLike, x: np.ndarray, backend: str = "auto", **options: Any) -> tuple[np.ndarray, dict]:
    """Outputs of an artifact through edgefer's backend, and the backend's ``info()``."""
    from edgefer.backends import open_backend

    b = open_backend(str(art_path), backend, **options)
    return _batched(lambda batch: b.run(batch)[0], x), b.info()


def compare(pred: np.ndarray, ref: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Agreement with the reference (top-1 equal), and top-1 of both when labels are given."""
    p, r = pred.argmax(1), ref.argmax(1)
    d: dict[str, float] = {"samples": int(len(ref)), "agreement": round(float((p == r).mean()), 4)}
    if labels is not None and len(labels) == len(ref) and (labels >= 0).all():
        d["top1"] = round(float((p == labels).mean()), 4)
        d["fp32_top1"] = round(float((r == labels).mean()), 4)
        d["drop_points"] = round(100.0 * (d["fp32_top1"] - d["top1"]), 2)
    return d
