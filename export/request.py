"""What an export is asked to do: :class:`ExportRequest`, checked before any model is read.

One dataclass instead of two dozen arguments: ``export_model(model, target, precision,
**options)`` and ``edgefer export`` build it, :func:`edgefer.export.pipeline.run` runs it. Its
fields are the CLI's options under the same names (``--calib-size`` is ``calib_size``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefer.artifact import PRECISIONS
from edgefer.errors import EdgeferError

from . import quantize as q

CALIB_METHODS = q.METHODS
INT8_VARIANTS = ("auto",) + tuple(q.VARIANTS)
#: held-out crops drawn beside the calibration sample to check the result (no --val given)
DEFAULT_CHECK = 300


@dataclass
class ExportRequest:
    """One export: a source, a target and a precision, and how to calibrate, check and write it."""

    source: str  # bundled name, artifact (folder, manifest, .onnx) or checkpoint
    target: str = "onnx"  # a key of edgefer.export.targets.TARGETS (the request does not import them)
    precision: str = "fp32"  # fp32 | fp16 | int8
    # -- the source (checkpoints)
    arch: str | None = None  # zoo architecture; guessed or read from the training sidecar when None
    classes: list[str] | None = None  # class names in output order
    # -- calibration (INT8)
    calib: str | None = None  # faces (classifiers) or frames (detectors); for FP32/FP16 faces to check on
    calib_size: int = 300
    calib_method: str | None = None  # None: minmax for classifiers, percentile for detectors
    calib_usage: str | None = "Training"  # FER2013 CSV rows / Kaggle folders to calibrate on
    calib_detect: bool | None = None  # run the face detector on class-folder images
    seed: int = 0
    int8_variant: str = "auto"  # QDQ variant; auto measures which runs right on the target and CPU
    nncf: bool = False  # OpenVINO INT8 by NNCF instead of the QDQ graph
    # -- the check
    val: str | None = None  # labeled faces to measure on (fer2013.csv, class folders, .npz)
    val_usage: str | None = "PublicTest"
    val_size: int | None = None
    max_drop: float | None = None  # top-1 points: NNCF accuracy control (OpenVINO INT8), a gate elsewhere
    check_size: int = DEFAULT_CHECK  # held-out crops to check on when no --val is given
    device: str | None = None  # OpenVINO device to check on
    # -- output
    output: str | Path | None = None  # artifact folder (default ./NAME-TARGET-PRECISION)
    progress: bool = True
    build_engine: bool | None = None  # TensorRT: build the engine here (None: where TensorRT is)

    def checked(self, targets: Mapping[str, Any]) -> ExportRequest:
        """This request with every option checked (EdgeferError, one line) and the target's
        normalisation applied (OpenVINO: ``--max-drop`` means NNCF, device names upper case).

        ``targets`` is the registry (:data:`edgefer.export.targets.TARGETS`), passed in so that the
        request stays below the targets, which read it."""
        if self.target not in targets:
            raise EdgeferError(f"unknown target {self.target!r}; choose from {', '.join(targets)}")
        if self.precision not in PRECISIONS:
            raise EdgeferError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.calib_method is not None and self.calib_method not in CALIB_METHODS:
            raise EdgeferError(
                f"unknown calibration method {self.calib_method!r}; choose from {', '.join(CALIB_METHODS)}")
        if self.int8_variant not in INT8_VARIANTS:
            raise EdgeferError(f"unknown INT8 variant {self.int8_variant!r}; choose from {', '.join(INT8_VARIANTS)}")
        if self.calib_size < 1:
            raise EdgeferError("--calib-size must be at least 1")
        if self.max_drop is not None and self.val is None:
            raise EdgeferError("--max-drop needs labeled validation data: pass --val (fer2013.csv, class folders or .npz)")
        if self.max_drop is not None and self.max_drop < 0:
            raise EdgeferError("--max-drop is in accuracy points and must be >= 0")
        return targets[self.target].prepare(replace(self))

    def command(self) -> str:
        """The ``edgefer export`` command that reproduces this export (recorded in the manifest)."""
        calibrated = bool(self.precision == "int8" and self.calib)
        return command_line(
            self.source, self.target, self.precision, calib=self.calib,
            calib_size=self.calib_size if calibrated else None,
            calib_method=self.calib_method if calibrated and not self.nncf else None,
            calib_usage=None if self.calib_usage in (None, "Training") else self.calib_usage,
            calib_detect=self.calib_detect, seed=self.seed if self.seed else None, arch=self.arch,
            classes=self.classes, device=self.device, nncf=self.nncf, max_drop=self.max_drop, val=self.val,
            int8_variant=None if self.int8_variant == "auto" else self.int8_variant, output=self.output,
        )


def command_line(model: str, target: str, precision: str, **kw: Any) -> str:
    """The ``edgefer export`` command line of these options (None and False ones left out)."""
    parts = ["edgefer", "export", model, "--target", target]
    if precision != "fp32":
        parts.append(f"--{precision}")
    flags = {
        "calib": "--calib", "calib_size": "--calib-size", "calib_method": "--calib-method", "calib_usage": "--calib-usage",
        "seed": "--seed", "arch": "--arch", "classes": "--classes", "device": "--device", "max_drop": "--max-drop",
        "val": "--val", "int8_variant": "--int8-variant", "output": "-o",
    }
    for k, flag in flags.items():
        v = kw.get(k)
        if v is None or v is False:
            continue
        if k == "classes":
            v = ",".join(v)
        parts += [flag, str(v)]
    if kw.get("nncf"):
        parts.append("--nncf")
    if kw.get("calib_detect"):
        parts.append("--calib-detect")
    return " ".join(shlex.quote(p) for p in parts)
