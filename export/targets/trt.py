"""TensorRT: a checked TensorRT-ready ONNX everywhere, an engine where TensorRT is.

Engines are built on the device that runs them (they are tied to the GPU and the TensorRT
version). So ``--target trt`` writes, per precision, the ONNX graph TensorRT 10.x and 11.x
both build from:

* fp32: the simplified FP32 graph;
* fp16: the float16 graph with float32 I/O (``model.onnx``, what 11.x builds strongly typed)
  plus the FP32 graph (``model_fp32.onnx``, what 10.x builds with the FP16 flag);
* int8: the calibrated QDQ graph, symmetric int8, zero point 0, per-channel weights.

Each graph passes :mod:`edgefer.trt_readiness` before it is written. Where TensorRT and a GPU
are present the engine is built right away (``model.engine`` beside the ONNX, so a later
mismatch can be rebuilt); elsewhere the one command to run on the device is returned.

Device options for the build (Jetson): ``device`` ``dla0``/``dla1`` builds for a DLA core with
GPU fallback (FP16/INT8 only), ``workspace_mb`` caps the builder's scratch memory (small Jetsons
share RAM with the GPU), ``timing_cache`` names the cache file (``off`` for none). Each defaults
to ``$EDGEFER_TRT_DEVICE``, ``$EDGEFER_TRT_WORKSPACE_MB``, ``$EDGEFER_TRT_TIMING_CACHE``, so
``EDGEFER_TRT_DEVICE=dla0 edgefer export ... --target trt --int8`` works from the CLI; the options
are checked (one line, exit 2) before any model is read.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefer.artifact import Manifest, write_artifact
from edgefer.errors import EdgeferError

from ..job import Built
from ..output import ExportResult, artifact_size, tool_versions
from .base import Target
from .onnx import write_graph

if TYPE_CHECKING:
    from ..job import Job
    from ..request import ExportRequest

#: manifest.extra.trt_build where the engine is left to the device
READY = "TensorRT-ready ONNX; build the engine on the device"

log = logging.getLogger(__name__)


def readiness(path: Path) -> tuple[list[dict[str, Any]], str]:
    """Findings (as dicts for the manifest) and a one-line summary; raises on errors."""
    from edgefer.trt_readiness import check, errors, summary

    fs = check(path)
    if errors(fs):
        raise EdgeferError(f"{path.name}: {summary(fs)}")
    return [{"severity": f.severity, "code": f.code, "message": f.message} for f in fs], summary(fs)


def tensorrt_here() -> tuple[bool, str]:
    """Whether an engine can be built on this machine, and why not."""
    from edgefer.backends import available

    return available("tensorrt")


def build_options(device: Any = None, workspace_mb: Any = None, timing_cache: Any = None) -> dict[str, Any]:
    """The engine-build options checked (or taken from the environment): gpu, dla_core, workspace_mb, timing_cache.

    Needs no TensorRT, so a bad ``--device dla7`` or workspace fails in one line on any machine.
    ``timing_cache`` stays as given (None: the per-device default, resolved once the GPU is known).
    """
    from edgefer.backends.tensorrt import check_workspace, parse_device

    gpu, dla = parse_device(device)
    return {"gpu": gpu, "dla_core": dla, "workspace_mb": check_workspace(workspace_mb), "timing_cache": timing_cache}


def build_into(out_dir: Path, onnx_name: str, precision: str, onnx_fp32: str | None = None,
               max_batch: int = 32, opt_batch: int = 8, device: Any = None, workspace_mb: Any = None,
               timing_cache: Any = None) -> tuple[str, dict[str, Any]]:
    """Build ``out_dir/model.engine`` from ``out_dir/onnx_name``; returns (file name, engine meta)."""
    from edgefer.backends.tensorrt import (
        _Cuda,
        build_engine,
        cache_root,
        timing_cache_path,
        trt_version,
    )

    opts = build_options(device, workspace_mb, timing_cache)
    cuda = _Cuda(opts["gpu"])
    here = cuda.device_info()
    cuda.close()
    blob, meta = build_engine(
        out_dir / onnx_name, precision, max_batch=max_batch, opt_batch=opt_batch,
        workspace_mb=opts["workspace_mb"],
        timing_cache=timing_cache_path(opts["timing_cache"], cache_root(), {**here, "tensorrt": trt_version()}),
        onnx_fp32=(out_dir / onnx_fp32) if onnx_fp32 else None,
        dla_core=opts["dla_core"],
    )
    meta.update(here)
    (out_dir / "model.engine").write_bytes(blob)
    return "model.engine", meta


def device_command(artifact_dir: Path) -> str:
    """The one command that builds the engine on the device from the TensorRT-ready artifact."""
    return f"edgefer export {shlex.quote(str(artifact_dir))} --target trt"


class TensorRTTarget(Target):
    name = "trt"
    int8_runtime = "tensorrt"
    simulated_by = "onnxruntime QDQ simulation (TensorRT not run)"

    def modules(self, precision: str, nncf: bool) -> list[str]:
        return ["onnxconverter_common"] if precision == "fp16" else []

    def prepare(self, req: ExportRequest) -> ExportRequest:
        req = super().prepare(req)
        if req.int8_variant not in ("auto", "s8s8", "s8s8-rr"):
            raise EdgeferError("TensorRT needs symmetric int8 (zero point 0): --int8-variant s8s8 or s8s8-rr")
        return req

    def build(self, job: Job) -> Built:
        onnx = job.staging / "model.onnx"
        files: dict[str, str] = {}
        extra = write_graph(job, onnx)
        if job.req.precision == "fp16":  # TensorRT 10.x builds FP16 from the FP32 graph with the FP16 flag
            shutil.copy(job.fp32, job.staging / "model_fp32.onnx")
            files["onnx_fp32"] = "model_fp32.onnx"
        d = job.data
        if "int8" in extra and d.chk_x is not None:
            from ..validate import compare, simulate_qdq

            # what the graph computes exactly; TensorRT's int8 kernels should match it
            extra["int8"]["simulated"] = compare(simulate_qdq(onnx, d.chk_x), d.ref, d.chk_y)
        findings, summ = readiness(onnx)
        extra["trt_readiness"] = findings
        job.messages.append(f"model.onnx: {summ}")
        if not job.plan.builds_engine:
            files["model"] = "model.onnx"
            extra["trt_build"] = {"status": READY}
            return Built(files, extra)
        here, why = tensorrt_here()
        build_engine = here if job.req.build_engine is None else job.req.build_engine
        if not build_engine:
            files["model"] = "model.onnx"
            extra["trt_build"] = {"status": READY, "why_not_here": why}
            return Built(files, extra)
        if not here:
            raise EdgeferError(f"cannot build a TensorRT engine here: {why}")
        job.used.add("tensorrt")
        eng, meta = build_into(job.staging, "model.onnx", job.req.precision, files.get("onnx_fp32"))
        files["model"] = eng
        files["onnx"] = "model.onnx"
        extra["trt"] = meta
        return Built(files, extra)

    def next_command(self, out_dir: Path, files: dict[str, str]) -> str | None:
        if files["model"].endswith(".onnx"):
            return device_command(Path(out_dir.name))  # the folder as copied to the device: no path of this machine
        return None

    def from_ready_artifact(self, job: Job) -> ExportResult:
        """``edgefer export TRT_READY_ARTIFACT --target trt`` on the device: build its engine."""
        src = job.src
        here, why = tensorrt_here()
        if not here:
            raise EdgeferError(
                f"{src.artifact.describe()} is TensorRT-ready; building its engine needs TensorRT and a GPU, "
                f"and this machine has none ({why})"
            )
        art = src.artifact
        man = Manifest.from_dict(art.manifest.to_dict())
        out_dir = Path(job.req.output) if job.req.output else art.root
        onnx_rel = man.files.get("onnx") or man.files["model"]
        if out_dir.resolve() != art.root.resolve():
            out_dir.mkdir(parents=True, exist_ok=True)
            for role, rel in man.files.items():
                if role != "model" or rel.endswith(".onnx"):
                    shutil.copy(art.root / rel, out_dir / rel)
        job.steps("readiness check")
        findings, _summary = readiness(out_dir / onnx_rel)
        job.steps("build engine")
        eng, meta = build_into(out_dir, onnx_rel, man.precision, man.files.get("onnx_fp32"))
        man.files["model"] = eng
        man.files["onnx"] = onnx_rel
        man.extra = {**(man.extra or {}), "trt": meta, "trt_readiness": findings}
        man.extra.pop("trt_build", None)
        man.provenance = {**man.provenance, "engine_command": job.cmd,
                          "tools": {**man.provenance.get("tools", {}), **tool_versions({"tensorrt"})}}
        write_artifact(man, out_dir)
        job.messages.append(f"engine built for {meta.get('gpu')} (sm {meta.get('compute_capability')}), "
                            f"TensorRT {meta['tensorrt']}")
        return ExportResult(out_dir, man, artifact_size(out_dir, man), None, job.messages, None)
