"""TensorRT artifacts: a checked TensorRT-ready ONNX everywhere, an engine where TensorRT is.

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
from pathlib import Path
from typing import Any

from edgefer.errors import EdgeferError

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
    from edgefer.backends.tensorrt import _Cuda, build_engine, cache_root, timing_cache_path, trt_version

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
