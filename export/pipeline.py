"""The export pipeline, top to bottom: one :class:`ExportRequest` -> one artifact folder.

    source -> FP32 ONNX -> calibration + check data -> target (INT8: quantization) -> validation -> artifact

1. **source**: a bundled name, an artifact, or a checkpoint + zoo architecture (:mod:`.source`);
2. **FP32 ONNX**: the graph every precision starts from, simplified (:mod:`.graph`);
3. **calibration**: a plan chooses what the model is calibrated and checked on -- face crops for
   classifiers (:mod:`.crops`), whole frames for INT8 detectors (:mod:`.frames`);
4. **target**: ``export/targets/<name>.py`` builds the model files from the FP32 graph, the QDQ
   INT8 graph the plan quantizes (``job.quantize()``), or the torch module;
5. **validation**: the written artifact loaded the way the runtime loads it (one synthetic
   inference), then run on the check data and compared with FP32;
6. **artifact**: the manifest (calibration provenance, source checksum, tool versions,
   measurements) and the files in the output folder (:mod:`.output`); ``--max-drop`` gates last.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgefer.artifact import write_artifact

from . import graph
from . import quantize as q
from .crops import FaceCrops
from .frames import DetectorFrames
from .job import Job, Plan
from .output import ExportResult, manifest_for, write_output
from .request import ExportRequest
from .source import resolve_source
from .targets import TARGETS
from .validate import check_artifact


class Steps:
    """One progress bar over the export's stages (silent when progress is off). On a terminal a
    tqdm bar; in a log or a pipe one plain line per finished stage (edgefer.progress), not a
    stream of carriage returns."""

    def __init__(self, total: int, enabled: bool, desc: str):
        from edgefer.progress import progress

        self.bar = progress(total=total, desc=desc, unit="step", disable=not enabled, leave=False, every_s=0,
                            bar_format="{desc}: {n_fmt}/{total_fmt} {bar} {postfix}")
        self.current = None

    def __call__(self, what: str) -> None:
        if self.current is not None:
            self.bar.update(1)
        self.current = what
        self.bar.set_postfix_str(what)

    def close(self) -> None:
        if self.current is not None:
            self.bar.update(1)
        self.bar.close()


def choose_plan(job: Job) -> Plan:
    """Detectors quantized to INT8 calibrate and check on whole frames; everything else on face crops."""
    if job.req.precision == "int8" and job.manifest0.kind == "detector":
        return DetectorFrames()
    return FaceCrops()


def run(req: ExportRequest) -> ExportResult:
    """Run the export ``req`` describes; see the module doc."""
    req = req.checked(TARGETS)
    target = TARGETS[req.target]
    steps = Steps(4 + (req.val is not None) + (req.calib is not None), req.progress,
                  f"export {req.target} {req.precision}")
    try:
        with tempfile.TemporaryDirectory(prefix="edgefer-export-") as tmp:
            job = Job(req, target, Path(tmp), steps, req.command())
            # 1. source
            steps("load model")
            job.src = resolve_source(req.source, req.target, arch=req.arch, classes=req.classes, workdir=job.work)
            if job.src.origin == "checkpoint":
                job.used.add("torch")
            if job.src.notes.get("trt_ready"):  # an exported TensorRT artifact on the device: its engine
                return target.from_ready_artifact(job)
            job.plan = choose_plan(job)
            job.nncf = req.nncf and job.plan.allows_nncf
            job.plan.check(job)
            target.check_source(job.src)
            # 2. FP32 ONNX
            steps("simplify FP32 graph")
            job.fp32 = graph.simplify(job.src.onnx_path, job.work / "fp32.onnx")
            # 3. calibration and check data (and the FP32 reference on it)
            job.data = job.plan.collect(job)
            job.cpu = q.cpu_profile()
            # 4. target (INT8 targets call job.quantize() for the plan's QDQ graph)
            steps(f"convert to {req.target} {req.precision}")
            job.staging.mkdir()
            built = target.build(job)
            # 5. validation: loaded as the runtime loads it, then compared with FP32
            steps("validate")
            man = manifest_for(job, built)
            write_artifact(man, job.staging)
            check_artifact(job.staging, req.device)  # one inference: NaN/Inf outputs and misfits refused
            validation = job.plan.validate(job, man, built)
            # 6. artifact
            return write_output(job, man, validation)
    finally:
        steps.close()
