"""Backends: one small protocol over ONNX Runtime, OpenVINO, TensorRT and Core ML.

A backend loads an artifact, says what it really runs (target, precision, device), and runs a
batch of inputs already laid out as the manifest's ``input`` spec, returning the graph outputs
as numpy arrays in a fixed order. ``open_backend`` picks one by name or ``auto``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..artifact import Artifact, load
from ..errors import EdgeferError

#: backend name -> (module, class, artifact targets it can run, pip extra that installs it)
REGISTRY: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "onnxruntime": ("edgefer.backends.onnxruntime", "OnnxRuntimeBackend", ("onnx",), ""),
    "openvino": ("edgefer.backends.openvino", "OpenVINOBackend", ("openvino", "onnx"), "openvino"),
    "tensorrt": ("edgefer.backends.tensorrt", "TensorRTBackend", ("trt", "onnx"), "trt"),
    "coreml": ("edgefer.backends.coreml", "CoreMLBackend", ("coreml",), "coreml"),
}
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
#: which backend runs a target when the user says "auto"
AUTO_ORDER = {
    "onnx": ("onnxruntime",),
    "openvino": ("openvino",),
    "trt": ("tensorrt",),
    "coreml": ("coreml",),
}


class Backend:
    """Base class. Subclasses set ``name`` and implement ``_load`` and ``run``."""

    name = "base"

    def __init__(self, artifact: Artifact, device: str | None = None, threads: int | None = None, **options: Any):
        self.artifact = artifact
        self.manifest = artifact.manifest
        self.device = device
        self.threads = threads
        self.options = options
        self.input_name = self.manifest.input.name
        self.output_names: list[str] = []
        self._load()

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What this backend really runs: used by `edgefer info` and the bench."""
        return {
            "backend": self.name,
            "target": self.manifest.target,
            "precision": self.manifest.precision,
            "device": self.device or "cpu",
        }

    def fits_error(self, what: str) -> EdgeferError:
        return EdgeferError(f"{self.artifact.describe()} does not fit its manifest: {what}")


def available(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` can be imported here, and why not."""
    mod, _, _, extra = REGISTRY[name]
    try:
        importlib.import_module(mod)._check_available()
    except ImportError as e:
        hint = f"; install with: pip install 'edgefer[{extra}]'" if extra else ""
        return False, f"{e}{hint}"
    except RuntimeError as e:
        return False, str(e)
    return True, ""


def open_backend(ref: Any, backend: str = "auto", kind: str | None = None, **options: Any) -> Backend:
    """Load an artifact (reference or :class:`Artifact`) on the named backend."""
    art = ref if isinstance(ref, Artifact) else load(ref, kind=kind)
    if art.manifest.kind == "ensemble":
        # members pick their own backends; the ensemble's face answers run() and info()
        from ..ensemble import EnsembleClassifier

        return EnsembleClassifier(art, backend, **options).backend  # type: ignore[return-value]
    name = ALIASES.get(backend, backend)
    target = art.manifest.target
    if name == "auto":
        candidates = AUTO_ORDER[target]
        for cand in candidates:
            ok, _ = available(cand)
            if ok:
                name = cand
                break
        else:
            _, why = available(candidates[0])
            raise EdgeferError(f"no installed backend runs {target} artifacts ({art.describe()}): {why}")
    if name not in REGISTRY:
        raise EdgeferError(f"unknown backend {backend!r}; choose from auto, {', '.join(REGISTRY)}")
    mod, cls, targets, _ = REGISTRY[name]
    if target not in targets:
        raise EdgeferError(
            f"backend {name} cannot run {art.describe()}: it runs {', '.join(targets)} artifacts"
        )
    ok, why = available(name)
    if not ok:
        raise EdgeferError(f"backend {name} is not available: {why}")
    return getattr(importlib.import_module(mod), cls)(art, **options)
