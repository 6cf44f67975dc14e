"""The one protocol every export target implements (the build-side mirror of ``edgefer/backends``).

A target says:

* its ``name`` (the ``--target`` value) and the optional modules it needs (:meth:`Target.modules`,
  checked by the CLI before any work starts);
* which requests it accepts (:meth:`Target.prepare`) and sources (:meth:`Target.check_source`);
* how it builds from the simplified FP32 ONNX graph, the QDQ INT8 graph (``job.quantize()``) or
  the torch module (:meth:`Target.build`), and what it records in the manifest (``Built``);
* how the result is checked here: the edgefer backend that runs it (``check_backend``), the
  runner the INT8 variant choice measures QDQ candidates on (:meth:`Target.qdq_runner`);
* what to run next, if anything (:meth:`Target.next_command`).

Everything else (source, calibration, validation, the artifact folder) is shared by the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgefer.errors import EdgeferError

if TYPE_CHECKING:
    from ..job import Built, Job
    from ..output import ExportResult
    from ..request import ExportRequest
    from ..source import SourceModel

NNCF_ONLY = "--nncf quantizes OpenVINO models: use it with --target openvino --int8"


class Target(ABC):
    """A runtime an artifact is exported for."""

    name: ClassVar[str]
    #: what the INT8 variant choice is recorded as measured for (manifest.extra.int8.chosen_for)
    int8_runtime: ClassVar[str] = ""
    #: the edgefer backend that runs the written artifact for the check here (None: not run here)
    check_backend: ClassVar[str | None] = None
    #: INT8 needs calibration data (Core ML can quantize the weights alone)
    int8_needs_calib: ClassVar[bool] = True
    #: FP32/FP16 exports are checked on the faces given with --calib
    checked_on_faces: ClassVar[bool] = True
    #: how the check is labelled when the QDQ graph was only simulated (TensorRT off the device)
    simulated_by: ClassVar[str | None] = None

    def modules(self, precision: str, nncf: bool) -> list[str]:
        """Optional modules (import names) this export imports, beyond onnx."""
        return []

    def prepare(self, req: ExportRequest) -> ExportRequest:
        """Refuse options this target does not take; return the request as this target runs it."""
        if req.nncf:
            raise EdgeferError(NNCF_ONLY)
        return req

    def check_source(self, src: SourceModel) -> None:
        """Refuse a source this target cannot build from (before any data is read)."""

    def calibrates_on_crops(self) -> bool:
        """Whether INT8 calibrates on face crops here (Core ML: only where it can run the model)."""
        return True

    def qdq_runner(self, device: str | None) -> Callable[[Path, np.ndarray], np.ndarray]:
        """Runs a QDQ ONNX file the way this target will (what the INT8 variant choice measures)."""
        from ..validate import predict_onnxruntime

        return predict_onnxruntime

    @abstractmethod
    def build(self, job: Job) -> Built:
        """Write the artifact's model files into ``job.staging`` at ``job.req.precision``."""

    def check_options(self, device: str | None) -> dict[str, Any]:
        """Options of ``check_backend`` for the check (an OpenVINO device)."""
        return {}

    def review(self, job: Job, backend_info: dict[str, Any]) -> None:
        """Notes on how the checked artifact ran (``backend_info``: the backend's ``info()``)."""

    def next_command(self, out_dir: Path, files: dict[str, str]) -> str | None:
        """The command that finishes the artifact elsewhere (TensorRT: the engine on the device)."""
        return None

    def from_ready_artifact(self, job: Job) -> ExportResult:
        """Finish an artifact this target already exported (``src.notes['trt_ready']``)."""
        raise EdgeferError(f"{self.name} exports start from an FP32 model")
