"""TensorRT engine building: options, the engine cache's key and compatibility rule, and the
builder itself (ONNX -> serialized engine on this GPU, TensorRT 10.x and 11.x).

The build side of :mod:`edgefer.backends.tensorrt`, which runs engines (CUDA buffers, the
execution context) and re-exports every name here. ``edgefer export --target trt --build``
(:mod:`edgefer.export.targets.trt`) builds through the same function, so an engine exported
ahead of time and one built on first run are the same. See the backend module's docstring for
the version rules (strongly typed 11.x, FP16/INT8 flags on 10.x, DLA).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..artifact import cache_dir, sha256_file
from ..errors import EdgeferError
from ..trt_readiness import check, errors

#: the backend's logger: build and run messages read as one component
log = logging.getLogger("edgefer.backends.tensorrt")

DEFAULT_MAX_BATCH = 32
DEFAULT_OPT_BATCH = 8
DEFAULT_WORKSPACE_MB = 1024
#: DLA cores a Jetson can have (AGX Orin, AGX Xavier, Orin NX 16 GB: 2; Xavier NX, Orin NX 8 GB: 1 or 2)
DLA_MAX_CORES = 2
#: largest builder workspace accepted (MiB): 64 GiB, more than any Jetson or desktop GPU has
MAX_WORKSPACE_MB = 64 * 1024


# ----------------------------------------------------------------------------- options
def parse_device(dev: Any) -> tuple[int, int | None]:
    """``(gpu index, dla core or None)`` from ``--device``; a one-line EdgeferError for anything else.

    Accepted: nothing / ``gpu`` / ``cuda`` (GPU 0), ``N`` / ``gpu:N`` / ``cuda:N``, ``dla`` (core 0),
    ``dlaN`` / ``dla:N`` with N below :data:`DLA_MAX_CORES`. Checked before TensorRT is touched,
    so a typo fails at once, not after minutes of engine building.
    """
    if dev is None:
        dev = os.environ.get("EDGEFER_TRT_DEVICE", "")
    text = str(dev).strip().lower()
    if text in ("", "gpu", "cuda"):
        return 0, None
    import re

    m = re.fullmatch(r"(?:(?:gpu|cuda):)?([0-9]{1,2})", text)
    if m:
        return int(m.group(1)), None
    m = re.fullmatch(r"dla:?([0-9]{0,2})", text)
    if m:
        core = int(m.group(1) or 0)
        if core >= DLA_MAX_CORES:
            raise EdgeferError(
                f"TensorRT device {dev!r}: a Jetson has at most {DLA_MAX_CORES} DLA cores (dla0, dla1)"
            )
        return 0, core
    raise EdgeferError(
        f"TensorRT device must be a GPU index (0, gpu:1) or a DLA core (dla0, dla1), not {dev!r}"
    )


def check_workspace(value: Any) -> int:
    """Builder workspace in MiB (option, ``$EDGEFER_TRT_WORKSPACE_MB`` or 1024), checked to be 1..64 GiB."""
    if value is None:
        value = os.environ.get("EDGEFER_TRT_WORKSPACE_MB", "").strip() or DEFAULT_WORKSPACE_MB
    try:
        mb = int(value)
    except (TypeError, ValueError):
        raise EdgeferError(f"TensorRT workspace must be a whole number of MiB, not {value!r}") from None
    if isinstance(value, bool) or not 1 <= mb <= MAX_WORKSPACE_MB:
        raise EdgeferError(f"TensorRT workspace must be between 1 and {MAX_WORKSPACE_MB} MiB, not {value!r}")
    return mb


def timing_cache_path(option: Any, root: Path, here: dict[str, Any]) -> Path | None:
    """Where the builder's timing cache lives (None: ``off``).

    A timing cache holds measured tactic timings per layer configuration for one GPU and one
    TensorRT version; it is what makes the second engine build on a Jetson take seconds instead
    of minutes, and it is safe to share between models, so the default is one file per
    GPU + compute capability + TensorRT version (``ignore_mismatch=False`` makes TensorRT refuse
    a cache from another device rather than trust it).
    """
    if option is None:
        option = os.environ.get("EDGEFER_TRT_TIMING_CACHE", "").strip() or None
    if option is not None and str(option).strip().lower() in ("off", "none", "0", "false", "no"):
        return None
    if option:
        path = Path(str(option)).expanduser()
        if path.is_dir():
            raise EdgeferError(f"TensorRT timing cache must be a file, {path} is a folder")
        return path
    tag = "-".join(str(here.get(k, "")) for k in ("gpu", "compute_capability", "tensorrt"))
    safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in tag)
    return root / f"timing-{safe}.cache"


def trt_version() -> str:
    import tensorrt as trt

    return trt.__version__


def trt_major() -> int:
    return int(trt_version().split(".")[0])


def cache_root(option: str | os.PathLike | None = None) -> Path:
    if option:
        return Path(option).expanduser()
    return cache_dir() / "trt"


def _sha256(path: Path) -> str:
    return sha256_file(path).split(":", 1)[1]


def engine_key(identity: dict[str, Any]) -> str:
    """Cache key: everything that makes an engine valid (GPU, TRT version, precision, shapes, graph)."""
    blob = json.dumps({k: identity[k] for k in sorted(identity)}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def incompatibility(built: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why an engine built under ``built`` cannot run ``here`` (None when it can)."""
    why = []
    if built.get("gpu") != here.get("gpu") or built.get("compute_capability") != here.get("compute_capability"):
        why.append(f"GPU {built.get('gpu')} (sm {built.get('compute_capability')}) vs this {here.get('gpu')} (sm {here.get('compute_capability')})")
    if built.get("tensorrt") != here.get("tensorrt"):
        why.append(f"TensorRT {built.get('tensorrt')} vs this {here.get('tensorrt')}")
    return "; ".join(why) or None


def check_dla(dla_core: int | None, precision: str, major: int) -> None:
    """Refuse, in one line, a DLA build that cannot work (FP32, or a TensorRT without DLA)."""
    if dla_core is None:
        return
    if precision == "fp32":
        raise EdgeferError(
            f"dla{dla_core} runs FP16 and INT8 engines only; this artifact is FP32: export it with "
            "--precision fp16 or --int8 (or run it on the GPU: --device 0)"
        )
    if major >= 11:
        raise EdgeferError(
            f"TensorRT {major}.x has no DLA support on Jetson (JetPack 6 ships TensorRT 10.x, which has): use --device 0"
        )


# ----------------------------------------------------------------------------- building
class _Logger:
    """A TensorRT logger that forwards to logging (created lazily: needs tensorrt)."""

    _inst = None

    @classmethod
    def get(cls):
        if cls._inst is None:
            import tensorrt as trt

            class L(trt.ILogger):
                def __init__(self):
                    trt.ILogger.__init__(self)

                def log(self, severity, msg):
                    sev = trt.ILogger.Severity
                    if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                        log.error("tensorrt: %s", msg)
                    elif severity == sev.WARNING:
                        log.warning("tensorrt: %s", msg)
                    else:
                        log.debug("tensorrt: %s", msg)

            cls._inst = L()
        return cls._inst


def build_engine(
    onnx_path: Path,
    precision: str,
    max_batch: int = DEFAULT_MAX_BATCH,
    opt_batch: int = DEFAULT_OPT_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: Path | None = None,
    onnx_fp32: Path | None = None,
    dla_core: int | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Serialized engine of ``onnx_path`` for ``precision`` on this GPU, and how it was built.

    ``onnx_path`` is the graph in its precision (FP32, float16 or QDQ int8); ``onnx_fp32`` the
    FP32 graph an FP16 build uses on TensorRT 10.x (with the FP16 flag). ``dla_core``: build for
    that DLA core with GPU fallback (FP16/INT8 only, TensorRT 10.x).
    """
    import tensorrt as trt

    major = trt_major()
    check_dla(dla_core, precision, major)
    graph = onnx_path
    strongly_typed = major >= 11
    flags_set: list[str] = []
    if precision == "fp16" and major < 11 and onnx_fp32 is not None and onnx_fp32.exists():
        graph = onnx_fp32  # 10.x: FP32 graph + FP16 flag lets TensorRT choose per layer
    elif precision == "fp16" and major < 11:
        strongly_typed = True  # only the float16 graph is at hand: build it as typed
    findings = check(graph)
    errs = errors(findings)
    if errs:
        raise EdgeferError(f"{graph.name} is not TensorRT-ready: " + "; ".join(f"{f.code}: {f.message}" for f in errs))

    logger = _Logger.get()
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # ignored (always on) in 11.x
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        msgs = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EdgeferError(f"TensorRT cannot parse {graph.name}: {'; '.join(msgs[:3]) or 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if dla_core is not None:
        have = int(getattr(builder, "num_DLA_cores", 0))
        if dla_core >= have:
            raise EdgeferError(
                f"dla{dla_core} asked, but this device has {have} DLA core(s)"
                + (" (Orin Nano and desktop GPUs have none): use --device 0" if have == 0 else f": use dla0..dla{have - 1}")
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run stay on the GPU
        if not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)  # DLA has no FP32: FP16 for what INT8 does not cover
            flags_set.append("FP16")
        flags_set.append(f"DLA{dla_core}+GPU_FALLBACK")
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions for info()
    if not strongly_typed:
        if precision == "fp16" and "FP16" not in flags_set:
            config.set_flag(trt.BuilderFlag.FP16)
            flags_set.append("FP16")
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ scales; no calibrator
            flags_set.append("INT8")

    profile = builder.create_optimization_profile()
    shapes: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        if any(d < 0 for d in dims[1:]):
            raise EdgeferError(f"input {t.name} has dynamic dimensions besides the batch: {dims}")
        if dims[0] < 0:
            lo, opt, hi = [1] + dims[1:], [min(opt_batch, max_batch)] + dims[1:], [max_batch] + dims[1:]
        else:
            lo = opt = hi = dims
        profile.set_shape(t.name, lo, opt, hi)
        shapes[t.name] = [lo, opt, hi]
    config.add_optimization_profile(profile)

    cache_obj = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache_obj = config.create_timing_cache(blob)
        config.set_timing_cache(cache_obj, ignore_mismatch=False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeferError(f"TensorRT failed to build an engine from {graph.name} (see the tensorrt log lines above)")
    build_s = time.perf_counter() - t0
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    dla_layers = None
    if dla_core is not None:
        try:  # how many layers TensorRT can place on the DLA (the rest fall back to the GPU)
            dla_layers = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(network.num_layers))
        except Exception as e:  # best effort: the query differs across versions
            log.debug("can_run_on_DLA: %s", e)
    meta = {
        "tensorrt": trt.__version__,
        "precision": precision,
        "device_type": "gpu" if dla_core is None else f"dla{dla_core}",
        "dla_core": dla_core,
        "dla_layers": None if dla_layers is None else f"{dla_layers} of {network.num_layers}",
        "workspace_mb": int(workspace_mb),
        "timing_cache": str(timing_cache) if timing_cache is not None else None,
        "strongly_typed": strongly_typed,
        "builder_flags": flags_set,
        "onnx": graph.name,
        "onnx_sha256": _sha256(graph),
        "shapes": shapes,
        "build_seconds": round(build_s, 2),
    }
    return bytes(serialized), meta
