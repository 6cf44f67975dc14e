"""ONNX Runtime: ``model.onnx`` as FP32, FP16 (float I/O kept) or the calibrated QDQ INT8 graph."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..job import Built
from .base import Target

if TYPE_CHECKING:
    from ..job import Job


def write_graph(job: Job, dst: Path) -> dict[str, Any]:
    """``dst`` at the job's precision from the FP32 graph; returns the manifest's extra entries.

    Shared by the targets that deploy an ONNX graph (ONNX Runtime, TensorRT).
    """
    precision = job.req.precision
    if precision == "fp32":
        shutil.copy(job.fp32, dst)
        return {}
    if precision == "fp16":
        from ..fp16 import convert

        job.used.add("onnxconverter-common")
        convert(job.fp32, dst)
        return {}
    qdq = job.quantize()
    shutil.copy(qdq.path, dst)
    return {"int8": qdq.extra}


class OnnxTarget(Target):
    name = "onnx"
    int8_runtime = "onnxruntime"
    check_backend = "onnxruntime"

    def modules(self, precision: str, nncf: bool) -> list[str]:
        return ["onnxconverter_common"] if precision == "fp16" else []

    def build(self, job: Job) -> Built:
        extra = write_graph(job, job.staging / "model.onnx")
        return Built({"model": "model.onnx"}, extra)
