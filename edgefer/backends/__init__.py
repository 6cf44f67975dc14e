"""Backends: one small protocol over ONNX Runtime, OpenVINO, TensorRT and Core ML.

A backend loads an artifact, says what it really runs (target, precision, device), and runs a
batch of inputs already laid out as the manifest's ``input`` spec, returning the graph outputs
as numpy arrays in a fixed order. ``open_backend`` picks one by name or ``auto``.

``auto``: the runtimes of ``AUTO_ORDER`` that can run the artifact's target; where more than one
is installed (ONNX Runtime and OpenVINO both run ``.onnx``), the faster on this machine, measured
once and cached (:mod:`edgefer.backends.autoselect`); ``EDGEFER_AUTO=first`` or the option
``auto="first"`` takes the first installed one instead. ``info()["auto"]`` says what was chosen
and why. A backend named explicitly never measures.
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


#: most threads one runtime session may use; more only multiplies scheduling overhead (and
#: `--threads 100000` once spawned threads until the machine ran out of PIDs)
MAX_THREADS = 256


def check_threads(threads: int | None) -> int | None:
    """``threads`` (or ``$EDGEFER_THREADS`` when not given) checked to lie in 0..MAX_THREADS."""
    import os

    if not threads:
        env = os.environ.get("EDGEFER_THREADS", "").strip()
        if not env:
            return None
        try:
            threads = int(env)
        except ValueError:
            raise EdgeferError(f"EDGEFER_THREADS must be a whole number of threads, not {env!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
        raise EdgeferError(f"threads must be between 0 (runtime default) and {MAX_THREADS}, not {threads!r}")
    return threads or None


class Backend:
    """Base class. Subclasses set ``name`` and implement ``_load`` and ``run``."""

    name = "base"

    def __init__(self, artifact: Artifact, device: str | None = None, threads: int | None = None, **options: Any):
        self.artifact = artifact
        self.manifest = artifact.manifest
        self.device = device
        self.threads = check_threads(threads)
        self.options = options
        self.input_name = self.manifest.input.name
        self.output_names: list[str] = []
        #: set by ``open_backend(..., "auto")``: which runtime auto chose and why (see autoselect)
        self.auto: dict[str, Any] | None = None
        self._load()

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What this backend really runs: used by `edgefer info` and the bench."""
        d: dict[str, Any] = {
            "backend": self.name,
            "target": self.manifest.target,
            "precision": self.manifest.precision,
            "device": self.device or "cpu",
            # what `edgefer run` prints in its summary: the threads asked of the runtime, or its own default
            "threads": self.threads or "runtime default",
        }
        if self.auto:
            d["auto"] = dict(self.auto)
        return d

    def fits_error(self, what: str) -> EdgeferError:
        return EdgeferError(f"{self.artifact.describe()} does not fit its manifest: {what}")


def available(name: str) -> tuple[bool, str]:
    """Whether backend ``name`` can be imported here, and why not."""
    mod, _, _, extra = REGISTRY[name]
    try:
        importlib.import_module(mod)._check_available()
    except ImportError as e:
        from ..extras import install_hint

        hint = f"; install with: {install_hint(extra)}" if extra else ""
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
    auto_option = options.pop("auto", None)  # the auto rule; an explicit backend ignores it
    if name == "auto":
        from .autoselect import auto_mode, select

        mode = auto_mode(auto_option)
        candidates = AUTO_ORDER.get(target, ())
        if mode != "first" and len(candidates) > 1:
            chosen = select(art, candidates, mode, options)
            if chosen is not None:
                return chosen
        for cand in candidates:
            ok, _ = available(cand)
            if ok:
                name = cand
                break
        else:
            _, why = available(candidates[0]) if candidates else (False, "no runtime is registered for it")
            raise EdgeferError(f"no installed backend runs {target} artifacts ({art.describe()}): {why}")
        b = _construct(name, target, art, options)
        rule = "first installed" if mode == "first" else "only installed"
        b.auto = {"chosen": name, "rule": f"{rule} of {', '.join(candidates)}"}
        return b
    return _construct(name, target, art, options, backend)


def _construct(name: str, target: str, art: Artifact, options: dict[str, Any], asked: str | None = None) -> Backend:
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
