"""OpenVINO: IR (.xml/.bin) from the FP32 or QDQ ONNX graph, or NNCF's own INT8.

* FP32: ``ov.convert_model`` + ``ov.save_model(compress_to_fp16=False)``.
* FP16: the same with ``compress_to_fp16=True`` (weights stored as FP16; each device computes
  in its own inference precision, which the backend reports).
* INT8 from the calibrated QDQ graph: OpenVINO's ONNX frontend turns Q/DQ pairs into
  FakeQuantize and the CPU plugin runs int8 kernels.
* INT8 with NNCF (``--nncf``): ``nncf.quantize`` on the FP32 model with the same calibration
  crops; with labeled validation data and ``--max-drop``, ``nncf.quantize_with_accuracy_control``
  keeps the layers that cost accuracy in float. On x86 without VNNI, NNCF's overflow fix is
  applied to every layer (7-bit weights), for the same reason as the QDQ variant choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefer.errors import EdgeferError

from .. import quantize as q
from ..job import Built
from .base import NNCF_ONLY, Target

if TYPE_CHECKING:
    from ..job import Job
    from ..request import ExportRequest

log = logging.getLogger(__name__)


def save_ir(model: Any, xml: Path, fp16: bool = False) -> Path:
    import openvino as ov

    if isinstance(model, (str, Path)):
        model = ov.convert_model(str(model))
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return xml


def nncf_quantize(
    onnx_fp32: Path,
    calib_inputs: np.ndarray,
    overflow_fix: bool,
    val_inputs: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    max_drop: float | None = None,
    batch_size: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training quantization of the FP32 model; returns (ov.Model, report)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    nncf.set_log_level(logging.WARNING)  # our summary reports the outcome
    model = ov.convert_model(str(onnx_fp32))
    items = [calib_inputs[i : i + batch_size] for i in range(0, len(calib_inputs), batch_size)]
    calib = nncf.Dataset(items)
    adv = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.FIRST_LAYER)
    report: dict[str, Any] = {
        "tool": "nncf",
        "nncf": nncf.__version__,
        "preset": "performance (symmetric int8)",
        "overflow_fix": "all layers (7-bit weights)" if overflow_fix else "first layer (NNCF default)",
        "subset_size": len(items),
    }
    if max_drop is None or val_inputs is None or val_labels is None:
        q = nncf.quantize(
            model, calib, subset_size=len(items), preset=nncf.QuantizationPreset.PERFORMANCE, advanced_parameters=adv
        )
        report["algorithm"] = "nncf.quantize"
        return q, report

    val_items = [(val_inputs[i : i + 64], val_labels[i : i + 64]) for i in range(0, len(val_inputs), 64)]

    def validate(compiled_model, data) -> float:
        out = compiled_model.outputs[0]
        right = total = 0
        for x, y in data:
            pred = np.asarray(compiled_model(x)[out]).argmax(1)
            right += int((pred == y).sum())
            total += len(y)
        return right / max(total, 1)

    q = nncf.quantize_with_accuracy_control(
        model,
        calib,
        nncf.Dataset(val_items),
        validation_fn=validate,
        max_drop=max_drop / 100.0,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(items),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        advanced_quantization_parameters=adv,
    )
    report.update(algorithm="nncf.quantize_with_accuracy_control", max_drop_points=max_drop, validation_samples=len(val_inputs))
    return q, report


def int8_layer_count(model: Any) -> dict[str, int]:
    """FakeQuantize / quantize ops in an ov.Model (what will become int8 kernels)."""
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t in ("FakeQuantize", "FakeConvert"):
            counts[t] = counts.get(t, 0) + 1
    return counts


class OpenVINOTarget(Target):
    name = "openvino"
    int8_runtime = "openvino"
    check_backend = "openvino"

    def modules(self, precision: str, nncf: bool) -> list[str]:
        return ["openvino"] + (["nncf"] if nncf else [])

    def prepare(self, req: ExportRequest) -> ExportRequest:
        if req.nncf and req.precision != "int8":
            raise EdgeferError(NNCF_ONLY)
        # --max-drop on OpenVINO INT8 is NNCF's accuracy control
        accuracy_control = req.precision == "int8" and req.max_drop is not None
        return replace(req, nncf=req.nncf or accuracy_control, device=req.device.upper() if req.device else req.device)

    def qdq_runner(self, device: str | None) -> Callable[[Path, np.ndarray], np.ndarray]:
        import openvino as ov

        from ..validate import predict_openvino

        def ov_predict(p: Path, x: np.ndarray) -> np.ndarray:
            return predict_openvino(ov.convert_model(str(p)), x, device or "CPU")

        return ov_predict

    def build(self, job: Job) -> Built:
        job.used.add("openvino")
        xml = job.staging / "model.xml"
        files = {"model": "model.xml", "weights": "model.bin"}
        precision = job.req.precision
        if precision in ("fp32", "fp16"):
            save_ir(job.fp32, xml, fp16=precision == "fp16")
            return Built(files, {"openvino": {"compress_to_fp16": precision == "fp16"}})
        if job.nncf:
            return Built(files, {"int8": self._nncf(job, xml)})
        qdq = job.quantize()
        save_ir(qdq.path, xml, fp16=False)
        return Built(files, {"int8": qdq.extra})

    @staticmethod
    def _nncf(job: Job, xml: Path) -> dict[str, Any]:
        """NNCF INT8 IR at ``xml``; with --max-drop its accuracy control on the --val faces."""
        job.used.add("nncf")
        cpu, d = job.cpu, job.data
        ac = job.req.max_drop is not None
        qm, report = nncf_quantize(job.fp32, d.cal_x, overflow_fix=q.overflow_risk(cpu),
                                   val_inputs=d.val_x if ac else None, val_labels=d.val_y if ac else None,
                                   max_drop=job.req.max_drop if ac else None)
        report["fake_quantize_ops"] = int8_layer_count(qm).get("FakeQuantize", 0)
        report["reason"] = (
            f"{cpu['cpu']}: no VNNI, NNCF overflow fix on every layer (7-bit weights)" if q.overflow_risk(cpu)
            else f"{cpu['cpu']}: VNNI present, NNCF defaults"
        )
        save_ir(qm, xml, fp16=False)
        return {**report, "cpu": cpu["cpu"], "vnni": cpu["vnni"]}

    def check_options(self, device: str | None) -> dict[str, Any]:
        return {"device": device} if device else {}

    def review(self, job: Job, backend_info: dict[str, Any]) -> None:
        if job.req.precision == "int8":
            executes = backend_info.get("compute_layers", {})
            if not executes.get("int8"):
                job.messages.append(f"warning: OpenVINO runs no layer in int8 on {backend_info.get('device')} ({executes})")
