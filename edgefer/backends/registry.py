"""The backend registry: which runtimes exist, which artifact targets each runs, which pip extra
installs it, and how one is constructed by name. It knows backends only: ensembles are
classifiers made of classifiers (:mod:`edgefer.ensemble`), opened above this layer.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..artifact import Artifact
from ..errors import EdgeferError
from ..extras import install_hint
from .base import Backend

#: backend name -> (module, class, artifact targets it can run, pip extra that installs it)
REGISTRY: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "onnxruntime": ("edgefer.backends.onnxruntime", "OnnxRuntimeBackend", ("onnx",), ""),
    "openvino": ("edgefer.backends.openvino", "OpenVINOBackend", ("openvino", "onnx"), "openvino"),
    "tensorrt": ("edgefer.backends.tensorrt", "TensorRTBackend", ("trt", "onnx"), "trt"),
    "coreml": ("edgefer.backends.coreml", "CoreMLBackend", ("coreml",), "coreml"),
    # macOS: .onnx on ONNX Runtime's CoreML execution provider (docs/DEPLOY.md)
    "ort-coreml": ("edgefer.backends.ort_coreml", "OrtCoreMLBackend", ("onnx",), ""),
}
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
#: which backend runs a target when the user says "auto"
#: (several: measured, the first kept unless another is clearly faster; see autoselect)
AUTO_ORDER = {
    "onnx": ("onnxruntime", "openvino"),
    "openvino": ("openvino",),
    "trt": ("tensorrt",),
    "coreml": ("coreml",),
}


def available(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` can be imported here, and why not."""
    mod, _, _, extra = REGISTRY[name]
    try:
        importlib.import_module(mod)._check_available()
    except ImportError as e:
        hint = f"; install with: {install_hint(extra)}" if extra else ""
        return False, f"{e}{hint}"
    except RuntimeError as e:
        return False, str(e)
    return True, ""


def construct(name: str, target: str, art: Artifact, options: dict[str, Any], asked: str | None = None) -> Backend:
    """Backend ``name`` on ``art``, refused in one line when unknown, unfit for the target or not installed."""
    if name not in REGISTRY:
        raise EdgeferError(f"unknown backend {asked or name!r}; choose from auto, {', '.join(REGISTRY)}")
    mod, cls, targets, _ = REGISTRY[name]
    if target not in targets:
        raise EdgeferError(
            f"backend {name} cannot run {art.describe()}: it runs {', '.join(targets)} artifacts"
        )
    ok, why = available(name)
    if not ok:
        raise EdgeferError(f"backend {name} is not available: {why}")
    return getattr(importlib.import_module(mod), cls)(art, **options)
