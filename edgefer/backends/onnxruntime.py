"""ONNX Runtime backend, with selectable execution providers.

``providers``: a list of ONNX Runtime provider names, or ``None`` for the best this build
offers (TensorRT EP, CUDA EP, CoreML EP, then CPU). Where a session fails to create on an
accelerator provider, it falls back to the CPU provider and says so in ``info()``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .base import Backend
from ..errors import EdgeferError

log = logging.getLogger(__name__)

PREFERRED = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
_NP = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(float16)": np.float16}


def _check_available() -> None:
    import onnxruntime  # noqa: F401


def runtime_version() -> str:
    """ONNX Runtime's version (part of the key under which ``auto`` caches its measurement)."""
    import onnxruntime

    return str(onnxruntime.__version__)


def default_providers() -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    return [p for p in PREFERRED if p in have] or ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self.threads  # already checked, $EDGEFER_THREADS included (backends.check_threads)
        if threads:
            opts.intra_op_num_threads = threads
        # spinning: ORT's worker threads busy-wait after each run for the next one. Good for one
        # model in a loop; in the pipeline (detector and classifier sessions on two threads) the
        # idle session's spinners steal the cores from the busy one, so the pipeline turns it off
        spin = self.options.get("spin")
        if spin is None and os.environ.get("EDGEFER_ORT_SPIN"):
            spin = os.environ["EDGEFER_ORT_SPIN"] not in ("0", "false", "no")
        if spin is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        providers = self.options.get("providers") or default_providers()
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",") if p.strip()]
        path = str(self.artifact.model_path)
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if providers != ["CPUExecutionProvider"]:
                log.warning("onnxruntime: %s; falling back to CPUExecutionProvider", first)
                try:
                    self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
                except Exception as e2:
                    raise EdgeferError(f"cannot load {path} in ONNX Runtime: {str(e2).splitlines()[0]}") from None
            else:
                raise EdgeferError(f"cannot load {path} in ONNX Runtime: {first}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise self.fits_error(f"the graph has {len(inputs)} inputs, edgefer feeds one")
        inp = inputs[0]
        spec = self.manifest.input
        if inp.name != spec.name:
            raise self.fits_error(f"graph input is {inp.name!r}, manifest says {spec.name!r}")
        want = np.dtype(spec.dtype)
        got = _NP.get(inp.type)
        if got is None or np.dtype(got) != want:
            raise self.fits_error(f"graph input type is {inp.type}, manifest says {spec.dtype}")
        self.input_dtype = want
        if spec.size is not None and len(inp.shape) == 4:
            h_ax, w_ax = (1, 2) if spec.layout == "NHWC" else (2, 3)
            gh, gw = inp.shape[h_ax], inp.shape[w_ax]
            if all(isinstance(v, int) for v in (gh, gw)) and [gh, gw] != list(spec.size):
                raise self.fits_error(f"graph input is {gh}x{gw}, manifest says {spec.size[0]}x{spec.size[1]}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.manifest.kind == "classifier":
            out_shape = self.session.get_outputs()[0].shape
            n = out_shape[-1] if out_shape else None
            if isinstance(n, int) and n != len(self.manifest.classes or []):
                raise self.fits_error(f"the graph outputs {n} classes, the manifest lists {len(self.manifest.classes)}")
        self.providers = self.session.get_providers()
        self._batch_fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._batch_fixed and batch.shape[0] != self._batch_fixed:
            # a fixed-batch graph: run in chunks of its batch size
            outs = [self.session.run(self.output_names, {self.input_name: batch[i : i + 1]}) for i in range(batch.shape[0])]
            return [np.concatenate([o[k] for o in outs]) for k in range(len(self.output_names))]
        return self.session.run(self.output_names, {self.input_name: batch})

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["providers"] = self.providers
        d["device"] = "gpu" if self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else (
            "ane/gpu" if self.providers[0] == "CoreMLExecutionProvider" else "cpu"
        )
        return d
