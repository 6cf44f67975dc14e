"""OpenVINO IR (.xml/.bin) from the FP32 or QDQ ONNX graph, and NNCF's native INT8 path.

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
from pathlib import Path
from typing import Any

import numpy as np

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
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

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
