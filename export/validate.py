"""Run what export produced, the way the runtime will, and compare it with the FP32 reference.

Export never reports a precision it did not check: after writing an artifact it is loaded
through edgefer's own backend (ONNX Runtime or OpenVINO), fed held-out faces, and compared
with the FP32 ONNX graph on ONNX Runtime: top-1 agreement, and top-1 accuracy when labels
are known. The helpers here are also what the INT8 variant choice runs.

Non-finite outputs (NaN or Inf, from broken weights or a quantization that overflowed) are
refused, not scored: :func:`compare` and :func:`predict_artifact` raise on them, and
:func:`check_artifact` runs what was written once, the way the runtime's load-time self-check
does (``edgefer.selfcheck``), whether or not check data was given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import EdgeferError


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
    out = _batched(lambda batch: b.run(batch)[0], x)
    require_finite(out, f"{b.artifact.describe()} (exported, on {b.name})")
    return out, b.info()


def require_finite(out: np.ndarray, who: str) -> None:
    """Refuse outputs holding NaN or Inf: one line naming the model and how many samples."""
    out = np.asarray(out)
    if out.dtype.kind in "fc" and not np.isfinite(out).all():
        rows = out.reshape(len(out), -1) if out.ndim > 1 and len(out) else out.reshape(1, -1)
        bad = int((~np.isfinite(rows)).any(axis=1).sum())
        raise EdgeferError(f"{who} outputs NaN/Inf on {bad} of {len(rows)} inputs: its weights or arithmetic are "
                           "broken, refusing it")


def check_artifact(art_dir: str | os.PathLike, device: str | None = None) -> str:
    """Run a written artifact once on a synthetic input the way the runtime will, and refuse
    it (EdgeferError, one line) when it does not fit its manifest or its outputs are not finite.

    ONNX and OpenVINO artifacts are built as `edgefer run` builds them (the load-time
    self-check). A TensorRT artifact's ONNX graph runs on ONNX Runtime instead (no GPU needed);
    a Core ML package is checked only where Core ML predicts. Returns what was run.
    """
    from edgefer.artifact import load
    from edgefer.backends import available

    art = load(art_dir)
    m = art.manifest
    if m.target in ("onnx", "openvino"):
        opts = {"device": device} if (device and m.target == "openvino") else {}
        opts["auto"] = "first"  # a correctness check: no runtime race (edgefer.backends.autoselect)
        if m.kind == "detector":
            from edgefer.detect import FaceDetector

            FaceDetector(art, "auto", **opts)
        else:
            from edgefer.classify import EmotionClassifier

            EmotionClassifier(art, "auto", **opts)
        return f"one synthetic inference on {'onnxruntime' if m.target == 'onnx' else 'openvino'}: finite"
    if m.target == "trt":
        rel = m.files.get("onnx") or (m.files["model"] if str(m.files["model"]).endswith(".onnx") else None)
        if rel is None:
            return "not run (no ONNX graph beside the engine)"
        return _check_onnx_graph(art, art.root / rel)
    if m.target == "coreml" and available("coreml")[0]:
        from edgefer.classify import EmotionClassifier

        EmotionClassifier(art, "coreml")
        return "one synthetic inference on coreml: finite"
    return "not run here"


def _check_onnx_graph(art, path: Path) -> str:
    """One ORT inference of ``path`` (a TensorRT artifact's graph) on a synthetic input."""
    from edgefer.align import layout
    from edgefer.selfcheck import sample_image

    spec = art.manifest.input
    try:
        sess = _ort_session(path)
    except Exception as e:  # a TensorRT-only graph ORT cannot build: the engine build checks it
        return f"not run (ONNX Runtime cannot load {path.name}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else e})"
    h, w = spec.size or (128, 128)
    x = layout(sample_image(h, w, spec.channels)[None], spec)
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    for o in outs:
        require_finite(np.asarray(o), f"{art.describe()} ({path.name} on onnxruntime)")
    return f"one synthetic inference of {path.name} on onnxruntime: finite"


def compare(pred: np.ndarray, ref: np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
    """Agreement with the reference (top-1 equal), and top-1 of both when labels are given.

    Non-finite outputs are refused (EdgeferError) rather than scored: argmax of NaN is 0.
    """
    require_finite(ref, "the FP32 reference model")
    require_finite(pred, "the exported model")
    p, r = pred.argmax(1), ref.argmax(1)
    d: dict[str, float] = {"samples": int(len(ref)), "agreement": round(float((p == r).mean()), 4)}
    if labels is not None and len(labels) == len(ref) and (labels >= 0).all():
        d["top1"] = round(float((p == labels).mean()), 4)
        d["fp32_top1"] = round(float((r == labels).mean()), 4)
        d["drop_points"] = round(100.0 * (d["fp32_top1"] - d["top1"]), 2)
    return d
