"""One export in flight: the state the stages of :mod:`edgefer.export.pipeline` read and add to.

Kept apart from the stages so that the targets (``export/targets/``) and the two calibration
plans (:mod:`.crops` for face crops, :mod:`.frames` for detector frames) can share these types
without importing each other or the pipeline. Nothing here does work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from edgefer.artifact import Manifest

    from .request import ExportRequest
    from .source import SourceModel


@dataclass
class CalibData:
    """What an export calibrates on and is checked on (collected by the plan, read by the targets)."""

    cal_x: Any = None  # model-ready calibration inputs: an array, or frames batched on demand
    chk_x: np.ndarray | None = None  # model-ready check faces (classifiers)
    chk_y: np.ndarray | None = None  # their labels in the model's class order, when known
    chk_desc: str | None = None  # what the check ran on, in words (manifest.extra.check_data)
    chk_split: str | None = None  # the dataset split of the check faces, when known
    ref: np.ndarray | None = None  # the FP32 graph's outputs on chk_x
    val_x: np.ndarray | None = None  # --val faces (NNCF's accuracy control reads them)
    val_y: np.ndarray | None = None
    check_frames: list[np.ndarray] | None = None  # detectors: held-out frames
    record: dict[str, Any] | None = None  # manifest.calibration
    extra: dict[str, Any] = field(default_factory=dict)  # manifest.extra entries of the plan


@dataclass
class Qdq:
    """The calibrated QDQ INT8 graph a target builds from, and what the manifest says of it."""

    path: Path
    extra: dict[str, Any]  # manifest.extra.int8


@dataclass
class Built:
    """What a target wrote into the staging folder."""

    files: dict[str, str]  # manifest.files: role -> file name
    extra: dict[str, Any] = field(default_factory=dict)  # manifest.extra entries of the target
    calibration: dict[str, Any] | None = None  # replaces the plan's calibration record when set


class Plan(Protocol):
    """How an export calibrates and checks: face crops (:class:`.crops.FaceCrops`) or whole
    frames (:class:`.frames.DetectorFrames`, INT8 detectors)."""

    #: whether ``--nncf`` applies (detectors always quantize the QDQ graph)
    allows_nncf: bool
    #: whether the TensorRT target may build an engine here (detectors: always on the device)
    builds_engine: bool

    def check(self, job: Job) -> None:
        """Refuse, before any work, what this plan cannot do with the request and source."""

    def collect(self, job: Job) -> CalibData:
        """Calibration and check data, and the FP32 reference on the check data."""

    def quantize(self, job: Job) -> Qdq:
        """The QDQ INT8 graph of ``job.fp32`` for ``job.target``."""

    def validate(self, job: Job, man: Manifest, built: Built) -> dict[str, Any] | None:
        """Run what ``job.staging`` holds and compare it with FP32; records it in ``man``."""


@dataclass
class Job:
    """One export: the request, where it works, and what the stages have produced so far."""

    req: ExportRequest
    target: Any  # an edgefer.export.targets.base.Target (targets sit above the job and read it)
    work: Path  # temporary folder; the artifact is staged in work/out
    steps: Callable[[str], None]  # progress: names the stage starting now
    cmd: str  # the `edgefer export` command that reproduces this export
    used: set[str] = field(default_factory=set)  # optional tools used (their versions go in the manifest)
    messages: list[str] = field(default_factory=list)  # notes for the user (ExportResult.messages)
    src: SourceModel | None = None
    plan: Plan | None = None
    nncf: bool = False  # NNCF quantizes (OpenVINO INT8 of a classifier)
    fp32: Path | None = None  # the simplified FP32 graph every precision starts from
    cpu: dict[str, Any] = field(default_factory=dict)  # quantize.cpu_profile()
    data: CalibData = field(default_factory=CalibData)

    @property
    def staging(self) -> Path:
        return self.work / "out"

    @property
    def manifest0(self) -> Manifest:
        """The FP32 source's manifest (input spec, classes, kind)."""
        return self.src.manifest

    def quantize(self) -> Qdq:
        """The plan's QDQ graph, for targets that build INT8 from it."""
        return self.plan.quantize(self)
