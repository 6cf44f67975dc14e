"""Core ML on a Mac: ``.mlpackage`` (ML program) natively, or ``.onnx`` through ONNX Runtime's CoreML EP.

Two backends live here, both choosing Core ML's **compute units** with ``--device``:

=============  ==========================  =============================  ===========================
``--device``   coremltools ``ComputeUnit``  ONNX Runtime ``MLComputeUnits``  runs on
=============  ==========================  =============================  ===========================
``all``        ``ALL`` (default)           ``ALL``                        CPU, GPU and Neural Engine
``cpu``        ``CPU_ONLY``                ``CPUOnly``                    CPU only (reference numbers)
``gpu``        ``CPU_AND_GPU``             ``CPUAndGPU``                  CPU and GPU (Metal)
``ane``        ``CPU_AND_NE``              ``CPUAndNeuralEngine``         CPU and Neural Engine
=============  ==========================  =============================  ===========================

(``ne``/``npu`` are accepted for ``ane``, and coremltools' own names, e.g. ``CPU_AND_NE``, too.)
Core ML decides per layer within what is allowed; ``all`` is usually fastest for these small CNNs,
``ane`` the most frugal with power. ``CPU_AND_NE`` needs macOS 13.

* ``coreml`` (:class:`CoreMLBackend`): ``.mlpackage`` artifacts (``edgefer export --target coreml``).
  Core ML has no uint8 tensors: packages exported by edgefer take float32 raw pixel values, so the
  backend casts the manifest's uint8 batch to float32 (the graph still normalises). All faces of a
  frame go to Core ML in **one** call: as one tensor when the package has a flexible batch axis
  (edgefer's exports: 1..64), else as one batch prediction (a list of inputs, which coremltools
  hands to Core ML as one ``MLBatchProvider``) — a tiny model loses most of its time to dispatch
  when called once per face.
* ``ort-coreml`` (:class:`OrtCoreMLBackend`): any ``.onnx`` artifact (the bundled models included)
  on ONNX Runtime with ``CoreMLExecutionProvider`` first and the CPU provider behind it, for the
  nodes Core ML does not take. Provider options: ``ModelFormat=MLProgram`` (Core ML 5+, macOS 12+;
  ``model_format="NeuralNetwork"`` for older systems), ``MLComputeUnits`` from ``--device``, and
  ``ModelCacheDirectory`` (``$EDGEFER_CACHE/coreml-ep``) so the compiled model is reused across
  runs. Needs an onnxruntime build with that provider: the macOS arm64 wheels on PyPI have it.

Prediction needs macOS (Core ML framework); elsewhere ``_check_available`` says so, and
``edgefer.export.targets.coreml.inspect_package`` validates packages without running them.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from .base import Backend
from ..errors import EdgeferError

#: ``--device`` names -> coremltools ``ComputeUnit`` member names
UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "ne": "CPU_AND_NE", "npu": "CPU_AND_NE"}
#: coremltools ``ComputeUnit`` names -> ONNX Runtime CoreML EP ``MLComputeUnits`` values
ORT_UNITS = {"ALL": "ALL", "CPU_ONLY": "CPUOnly", "CPU_AND_GPU": "CPUAndGPU", "CPU_AND_NE": "CPUAndNeuralEngine"}
ORT_MODEL_FORMATS = ("MLProgram", "NeuralNetwork")


def compute_units(device: Any) -> str:
    """The coremltools ``ComputeUnit`` name for ``--device`` (default ``ALL``); one-line EdgeferError otherwise.

    Pure name checking, no coremltools import: a typo fails the same way on Linux and on a Mac.
    """
    text = str(device if device is not None else "all").strip()
    low = text.lower()
    if low in ("", "auto"):
        return "ALL"
    if low in UNITS:
        return UNITS[low]
    if text.upper() in ORT_UNITS:
        return text.upper()
    raise EdgeferError(
        f"Core ML device must be one of all, cpu, gpu, ane (or {', '.join(ORT_UNITS)}), not {device!r}"
    )


def _check_available() -> None:
    # the platform first: importing coremltools off macOS prints a warning per missing native proxy
    if platform.system() != "Darwin":
        raise RuntimeError(
            f"Core ML runs models only on macOS (this is {platform.system()}); coremltools can convert "
            "and inspect packages elsewhere (edgefer export --target coreml) but not predict"
        )
    import coremltools  # noqa: F401


class CoreMLBackend(Backend):
    name = "coreml"

    def _load(self) -> None:
        import coremltools as ct

        units = compute_units(self.device or self.options.get("compute_units") or self.options.get("device"))
        path = self.artifact.model_path
        if path.suffix not in (".mlpackage", ".mlmodel"):
            raise self.fits_error(f"Core ML reads .mlpackage/.mlmodel, not {path.name}")
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, units))
        except Exception as e:
            raise EdgeferError(f"cannot load {path.name} in Core ML: {str(e).splitlines()[0] if str(e) else e}") from None
        self.device = units
        spec = self.model.get_spec()
        ins = list(spec.description.input)
        want = self.manifest.input
        if len(ins) != 1 or ins[0].name != want.name:
            raise self.fits_error(f"package inputs are {[i.name for i in ins]}, manifest says {want.name!r}")
        shape = list(ins[0].type.multiArrayType.shape)
        if want.size is not None and len(shape) == 4:
            h_ax, w_ax = (1, 2) if want.layout == "NHWC" else (2, 3)
            if [shape[h_ax], shape[w_ax]] != list(want.size):
                raise self.fits_error(f"package input is {shape[h_ax]}x{shape[w_ax]}, manifest says {want.size[0]}x{want.size[1]}")
        self.output_names = [o.name for o in spec.description.output]
        rng = ins[0].type.multiArrayType.shapeRange.sizeRanges
        self._max_batch = int(rng[0].upperBound) if len(rng) and rng[0].upperBound > 0 else 1
        self._report: dict[str, Any] | None = None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._max_batch == 1 and n > 1:
            # a fixed batch-1 package: still one Core ML call, as a batch prediction
            outs = self.model.predict([{self.input_name: x[i : i + 1]} for i in range(n)])
            res = [np.concatenate([np.asarray(o[name], np.float32).reshape(1, -1) if np.asarray(o[name]).ndim < 2
                                   else np.asarray(o[name], np.float32) for o in outs])
                   for name in self.output_names]
        elif n > self._max_batch:
            parts = [self.run(batch[i : i + self._max_batch]) for i in range(0, n, self._max_batch)]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]
        else:
            out = self.model.predict({self.input_name: x})
            res = [np.asarray(out[name], np.float32) for name in self.output_names]
        if self.manifest.kind == "classifier":
            n_cls = len(self.manifest.classes or [])
            if res[0].shape[-1] != n_cls:
                raise self.fits_error(f"the package outputs {res[0].shape[-1]} classes, the manifest lists {n_cls}")
        return res

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["device"] = f"coreml:{self.device}"
        d["compute_units"] = self.device
        d["max_batch_per_call"] = self._max_batch if self._max_batch > 1 else "batch prediction"
        extra = (self.manifest.extra or {}).get("coreml", {})
        if extra:
            d["compute_precision"] = extra.get("compute_precision")
            if "weights" in extra:
                d["weights"] = extra["weights"]
            if "activations" in extra:
                d["activations"] = extra["activations"]
        return d


# ----------------------------------------------------------------------------- ONNX Runtime's CoreML EP
def ort_coreml_provider_options(device: Any = None, model_format: str | None = None,
                                cache_dir: str | None = None) -> dict[str, str]:
    """The CoreMLExecutionProvider options (ONNX Runtime's string-keyed API) for ``--device``."""
    fmt = model_format or "MLProgram"
    if fmt not in ORT_MODEL_FORMATS:
        raise EdgeferError(f"CoreML EP model format must be one of {', '.join(ORT_MODEL_FORMATS)}, not {model_format!r}")
    opts = {"ModelFormat": fmt, "MLComputeUnits": ORT_UNITS[compute_units(device)]}
    if cache_dir:
        opts["ModelCacheDirectory"] = str(cache_dir)
    return opts
