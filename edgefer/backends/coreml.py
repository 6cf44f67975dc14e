"""Core ML backend: ``.mlpackage`` (ML program) on the CPU, GPU or Neural Engine of a Mac.

Options: ``device`` (``all`` default, ``cpu``, ``gpu``, ``ane``: the Core ML compute units).
Core ML has no uint8 tensors: packages exported by edgefer take float32 raw pixel values, so
the backend casts the manifest's uint8 batch to float32 (the graph still normalises).

Prediction needs macOS (Core ML framework); elsewhere ``_check_available`` says so, and
``edgefer.export.coreml_export.inspect_package`` validates packages without running them.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from . import Backend
from ..errors import EdgeferError

UNITS = {"all": "ALL", "cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "npu": "CPU_AND_NE"}


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

        dev = str(self.device or self.options.get("device") or "all").lower()
        if dev not in UNITS:
            raise EdgeferError(f"Core ML device must be one of {', '.join(UNITS)}, not {dev!r}")
        path = self.artifact.model_path
        if path.suffix not in (".mlpackage", ".mlmodel"):
            raise self.fits_error(f"Core ML reads .mlpackage/.mlmodel, not {path.name}")
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, UNITS[dev]))
        except Exception as e:
            raise EdgeferError(f"cannot load {path.name} in Core ML: {str(e).splitlines()[0] if str(e) else e}") from None
        self.device = dev
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
        if n > self._max_batch:
            parts = [self.run(batch[i : i + self._max_batch]) for i in range(0, n, self._max_batch)]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]
        out = self.model.predict({self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        res = [np.asarray(out[name], np.float32) for name in self.output_names]
        if self.manifest.kind == "classifier":
            n_cls = len(self.manifest.classes or [])
            if res[0].shape[-1] != n_cls:
                raise self.fits_error(f"the package outputs {res[0].shape[-1]} classes, the manifest lists {n_cls}")
        return res

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["device"] = f"coreml:{self.device}"
        extra = (self.manifest.extra or {}).get("coreml", {})
        if extra:
            d["compute_precision"] = extra.get("compute_precision")
            if "weights" in extra:
                d["weights"] = extra["weights"]
            if "activations" in extra:
                d["activations"] = extra["activations"]
        return d
