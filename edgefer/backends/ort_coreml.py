"""``ort-coreml``: ONNX Runtime with CoreMLExecutionProvider (then CPU) on a ``.onnx`` artifact, on macOS.

The alternative to exporting a ``.mlpackage``: the same ONNX artifacts (the bundled models
included) with Core ML running the nodes it supports. Compute units and provider options are
described in :mod:`edgefer.backends.coreml` (one place for both Core ML paths).
"""

from __future__ import annotations

from typing import Any

from .coreml import ort_coreml_provider_options
from .onnxruntime import OnnxRuntimeBackend


def _check_available() -> None:
    import onnxruntime as ort

    if "CoreMLExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            f"this onnxruntime {ort.__version__} has no CoreMLExecutionProvider (its providers: "
            f"{', '.join(ort.get_available_providers())}); the macOS arm64 wheels from PyPI have it"
        )


class OrtCoreMLBackend(OnnxRuntimeBackend):
    name = "ort-coreml"

    def _load(self) -> None:
        from ..artifact import cache_dir

        units = self.device or self.options.get("compute_units") or self.options.get("device")
        cdir = self.options.get("coreml_cache_dir") or str(cache_dir() / "coreml-ep")
        opts = ort_coreml_provider_options(units, self.options.get("model_format"), cdir)
        self.coreml_options = opts
        # ONNX Runtime takes (name, options) pairs; CPU behind it runs what Core ML does not take
        self.options = {**self.options, "providers": [("CoreMLExecutionProvider", opts), "CPUExecutionProvider"]}
        super()._load()
        self.device = opts["MLComputeUnits"]

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["backend"] = self.name
        d["device"] = f"coreml-ep:{self.coreml_options['MLComputeUnits']}"
        d["coreml_ep"] = dict(self.coreml_options)
        return d
