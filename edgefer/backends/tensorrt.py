"""TensorRT backend: builds engines from ONNX on the device, caches them, runs them with CUDA.

Works on TensorRT 10.x (JetPack 6) and 11.x:

* INT8 is explicit: the QDQ ONNX graph carries the scales (symmetric int8, zero point 0).
  11.x networks are always strongly typed; on 10.x the INT8 builder flag is set for QDQ
  graphs (weakly typed) — no implicit calibrator is ever used (deprecated in 10.1, removed in 11).
* FP16: 10.x builds the FP32 graph with ``BuilderFlag.FP16``; 11.x has no such flag and builds
  the float16 ONNX graph (float32 I/O) strongly typed. A ``trt`` FP16 artifact carries both.
* A dynamic-batch optimisation profile (min 1, opt ``opt_batch``, max ``max_batch``), a
  persistent timing cache, and an engine cache keyed by GPU name + compute capability,
  TensorRT version, precision, shapes and the ONNX checksum.
* Engines are not portable: an artifact whose ``.engine`` was built for another GPU or
  TensorRT version is refused with a clear message, or rebuilt when its ONNX is at hand.
* Device buffers through cuda-python (``cuda.bindings.runtime`` or the older ``cuda.cudart``),
  or pycuda when that is what is installed.

Options: ``device`` (``0``/``gpu:N``/``cuda:N`` a GPU index, default 0; ``dla0``/``dla1`` a DLA core of
a Jetson, see below; default ``$EDGEFER_TRT_DEVICE``), ``max_batch`` (32), ``opt_batch`` (8),
``workspace_mb`` (builder workspace pool, 1024; ``$EDGEFER_TRT_WORKSPACE_MB``), ``timing_cache``
(a file path, or ``off``; default one file per GPU and TensorRT version in the cache directory,
shared by every build on this device; ``$EDGEFER_TRT_TIMING_CACHE``), ``cache_dir`` (default
``$EDGEFER_CACHE/trt`` or ``~/.cache/edgefer/trt``), ``rebuild`` (ignore cached engines).

DLA (Jetson AGX Orin / Xavier and Orin NX: two cores, ``dla0`` and ``dla1``; Orin Nano has none):
the engine is built with ``default_device_type = DLA``, ``DLA_core = N`` and the ``GPU_FALLBACK``
flag, so layers the DLA cannot run stay on the GPU (each hand-over between DLA and GPU costs a
copy: fewer, larger DLA segments are faster). Limits, from NVIDIA's DLA documentation: FP16 and
INT8 only (an FP32 artifact is refused: export ``--precision fp16`` or ``--int8``), TensorRT 10.x
only (11.x dropped DLA for JetPack), and the DLA core is part of the engine cache key, since an
engine is built for one core. ``info()`` reports how many layers TensorRT placed on the DLA.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import Backend
from ..artifact import cache_dir, sha256_file
from ..errors import EdgeferError

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- CUDA access
class _Cuda:
    """The few CUDA runtime calls the backend needs, over cuda-python or pycuda."""

    def __init__(self, device: int = 0):
        self.device = device
        self.kind = None
        try:
            try:
                from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
            except ImportError:
                from cuda import cudart  # older cuda-python
            self.rt = cudart
            self.kind = "cuda-python"
            self._ok(cudart.cudaSetDevice(device))
            self.stream = self._ok(cudart.cudaStreamCreate())
        except ImportError:
            try:
                import pycuda.driver as drv
            except ImportError:
                raise ImportError("TensorRT needs cuda-python (pip install cuda-python) or pycuda for device buffers") from None
            drv.init()
            self.drv = drv
            self.kind = "pycuda"
            self.ctx = drv.Device(device).retain_primary_context()
            self.ctx.push()
            self.stream = drv.Stream()

    def _ok(self, ret):
        err, *rest = ret if isinstance(ret, tuple) else (ret,)
        if int(err) != 0:
            name = self.rt.cudaGetErrorName(err)[1] if hasattr(self.rt, "cudaGetErrorName") else err
            raise RuntimeError(f"CUDA error {name!r}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_info(self) -> dict[str, Any]:
        if self.kind == "cuda-python":
            prop = self._ok(self.rt.cudaGetDeviceProperties(self.device))
            name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
            return {"gpu": name.strip("\x00 ").strip(), "compute_capability": f"{prop.major}.{prop.minor}"}
        dev = self.drv.Device(self.device)
        major, minor = dev.compute_capability()
        return {"gpu": dev.name(), "compute_capability": f"{major}.{minor}"}

    def malloc(self, nbytes: int):
        if self.kind == "cuda-python":
            return self._ok(self.rt.cudaMalloc(max(int(nbytes), 1)))
        return self.drv.mem_alloc(max(int(nbytes), 1))

    def free(self, ptr) -> None:
        if self.kind == "cuda-python":
            self.rt.cudaFree(ptr)
        else:
            ptr.free()

    def ptr(self, buf) -> int:
        return int(buf)

    def h2d(self, dst, host: np.ndarray) -> None:
        if self.kind == "cuda-python":
            self._ok(self.rt.cudaMemcpyAsync(dst, host.ctypes.data, host.nbytes,
                                             self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        else:
            self.drv.memcpy_htod_async(dst, host, self.stream)

    def d2h(self, host: np.ndarray, src) -> None:
        if self.kind == "cuda-python":
            self._ok(self.rt.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes,
                                             self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        else:
            self.drv.memcpy_dtoh_async(host, src, self.stream)

    @property
    def stream_handle(self) -> int:
        return int(self.stream) if self.kind == "cuda-python" else self.stream.handle

    def sync(self) -> None:
        if self.kind == "cuda-python":
            self._ok(self.rt.cudaStreamSynchronize(self.stream))
        else:
            self.stream.synchronize()

    def close(self) -> None:
        if self.kind == "cuda-python":
            try:
                self.rt.cudaStreamDestroy(self.stream)
            except Exception:
                pass
        if self.kind == "pycuda":
            try:
                self.ctx.pop()
            except Exception:
                pass


def _check_available() -> None:
    import tensorrt  # noqa: F401

    cuda = _Cuda(0)  # raises ImportError without cuda-python/pycuda, RuntimeError without a GPU
    cuda.close()


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

    from ..trt_readiness import check, errors

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


# ----------------------------------------------------------------------------- the backend
class TensorRTBackend(Backend):
    name = "tensorrt"

    def _load(self) -> None:
        import tensorrt as trt

        dev = self.device if self.device is not None else self.options.get("device")
        dev_index, self.dla_core = parse_device(dev)
        self.workspace_mb = check_workspace(self.options.get("workspace_mb"))
        check_dla(self.dla_core, self.manifest.precision, trt_major())
        self.cuda = _Cuda(dev_index)
        self.here = {**self.cuda.device_info(), "tensorrt": trt.__version__}
        self.max_batch = int(self.options.get("max_batch", DEFAULT_MAX_BATCH))
        self.opt_batch = int(self.options.get("opt_batch", DEFAULT_OPT_BATCH))
        self.cache_dir = cache_root(self.options.get("cache_dir"))
        self.timing_cache = timing_cache_path(self.options.get("timing_cache"), self.cache_dir, self.here)
        self.engine_source = ""
        blob, self.build_meta = self._engine_bytes()
        runtime = trt.Runtime(_Logger.get())
        if self.dla_core is not None:
            runtime.DLA_core = int(self.dla_core)  # an engine built for a DLA core is deserialized onto it
        self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EdgeferError(
                f"TensorRT {trt.__version__} cannot deserialize the engine of {self.artifact.describe()} "
                "(built by another TensorRT version or for another GPU); rebuild it on this device"
            )
        self.context = self.engine.create_execution_context()
        self._bind()

    # -- where the engine comes from
    def _engine_bytes(self) -> tuple[bytes, dict[str, Any]]:
        m = self.manifest
        root = self.artifact.root
        model = self.artifact.model_path
        files = m.files
        onnx_rel = files.get("onnx") or (files["model"] if model.suffix.lower() == ".onnx" else None)
        onnx_path = root / onnx_rel if onnx_rel else None
        if model.suffix.lower() in (".engine", ".plan"):
            built = (m.extra or {}).get("trt", {})
            why = incompatibility(built, self.here)
            dla = getattr(self, "dla_core", None)
            if why is None and built.get("dla_core") != dla:
                want = "the GPU" if dla is None else f"dla{dla}"
                why = f"built for {built.get('device_type') or 'the GPU'}, asked to run on {want}"
            if why is None and not self.options.get("rebuild"):
                self.engine_source = f"artifact engine {model.name}"
                return model.read_bytes(), built
            if onnx_path is None or not onnx_path.exists():
                raise EdgeferError(
                    f"{self.artifact.describe()}: its engine was built for another device ({why}); TensorRT engines are not "
                    "portable and this artifact has no ONNX to rebuild from. Export it again on this device: "
                    "edgefer export <fp32 model or trt-ready artifact> --target trt"
                )
            log.warning("%s: engine built for another device (%s); rebuilding from %s", self.artifact.describe(), why, onnx_path.name)
        if onnx_path is None or not onnx_path.exists():
            raise self.fits_error(f"TensorRT needs an .engine or an .onnx, found {model.name}")
        return self._cached_build(onnx_path)

    def _cached_build(self, onnx_path: Path) -> tuple[bytes, dict[str, Any]]:
        m = self.manifest
        fp32_rel = m.files.get("onnx_fp32")
        onnx_fp32 = self.artifact.root / fp32_rel if fp32_rel else None
        identity = {
            **self.here,
            "precision": m.precision,
            "onnx_sha256": _sha256(onnx_path),
            "max_batch": self.max_batch,
            "opt_batch": self.opt_batch,
        }
        dla = getattr(self, "dla_core", None)
        if dla is not None:
            identity["dla_core"] = dla  # an engine runs on the core it was built for
        key = engine_key(identity)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        eng = self.cache_dir / f"{m.name}-{m.precision}-{key}.engine"
        side = eng.with_suffix(".json")
        if eng.exists() and side.exists() and not self.options.get("rebuild"):
            meta = json.loads(side.read_text())
            if incompatibility(meta, self.here) is None:
                self.engine_source = f"cache {eng}"
                return eng.read_bytes(), meta
        log.warning("building a TensorRT %s engine for %s (%s); cached in %s", m.precision, self.here["gpu"], onnx_path.name, self.cache_dir)
        blob, meta = build_engine(
            onnx_path, m.precision, self.max_batch, self.opt_batch,
            getattr(self, "workspace_mb", DEFAULT_WORKSPACE_MB),
            getattr(self, "timing_cache", self.cache_dir / f"timing-{key[:8]}-{self.here['tensorrt']}.cache"),
            onnx_fp32, dla_core=dla,
        )
        meta.update(self.here)
        meta["key"] = key
        eng.write_bytes(blob)
        side.write_text(json.dumps(meta, indent=2))
        self.engine_source = f"built now, cached {eng}"
        return blob, meta

    # -- buffers
    def _bind(self) -> None:
        import tensorrt as trt

        e = self.engine
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        for i in range(e.num_io_tensors):
            name = e.get_tensor_name(i)
            self.dtypes[name] = np.dtype(trt.nptype(e.get_tensor_dtype(name)))
            (self.inputs if e.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(name)
        if len(self.inputs) != 1:
            raise self.fits_error(f"the engine has {len(self.inputs)} inputs, edgefer feeds one")
        spec = self.manifest.input
        if self.inputs[0] != spec.name:
            raise self.fits_error(f"engine input is {self.inputs[0]!r}, manifest says {spec.name!r}")
        if self.dtypes[spec.name] != np.dtype(spec.dtype):
            raise self.fits_error(f"engine input type is {self.dtypes[spec.name]}, manifest says {spec.dtype}")
        self.output_names = list(self.outputs)
        prof_max = list(e.get_tensor_profile_shape(spec.name, 0)[2]) if e.num_optimization_profiles else list(e.get_tensor_shape(spec.name))
        self.engine_max_batch = int(prof_max[0])
        if spec.size is not None:
            h_ax, w_ax = (1, 2) if spec.layout == "NHWC" else (2, 3)
            if [prof_max[h_ax], prof_max[w_ax]] != list(spec.size):
                raise self.fits_error(f"engine input is {prof_max[h_ax]}x{prof_max[w_ax]}, manifest says {spec.size[0]}x{spec.size[1]}")
        self._buffers: dict[str, Any] = {}
        self._capacity: dict[str, int] = {}
        # allocate for the largest batch once; outputs sized from the max-batch shape
        self.context.set_input_shape(spec.name, prof_max)
        for name in self.inputs + self.outputs:
            shape = prof_max if name == spec.name else list(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise self.fits_error(f"output {name} has a data-dependent shape {shape}")
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self._buffers[name] = self.cuda.malloc(nbytes)
            self._capacity[name] = nbytes
            self.context.set_tensor_address(name, self.cuda.ptr(self._buffers[name]))
        if self.manifest.kind == "classifier":
            n = list(self.context.get_tensor_shape(self.outputs[0]))[-1]
            if n != len(self.manifest.classes or []):
                raise self.fits_error(f"the engine outputs {n} classes, the manifest lists {len(self.manifest.classes)}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        if n > self.engine_max_batch:
            parts = [self.run(batch[i : i + self.engine_max_batch]) for i in range(0, n, self.engine_max_batch)]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]
        name = self.inputs[0]
        x = np.ascontiguousarray(batch, dtype=self.dtypes[name])
        self.context.set_input_shape(name, list(x.shape))
        self.cuda.h2d(self._buffers[name], x)
        outs = [np.empty(tuple(self.context.get_tensor_shape(o)), self.dtypes[o]) for o in self.outputs]
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for o, host in zip(self.outputs, outs):
            self.cuda.d2h(host, self._buffers[o])
        self.cuda.sync()
        return outs

    def layer_precisions(self) -> dict[str, int]:
        """Count of engine layers per output data type (needs a DETAILED-verbosity build)."""
        import tensorrt as trt

        counts: dict[str, int] = {}
        try:
            insp = self.engine.create_engine_inspector()
            info = json.loads(insp.get_engine_information(trt.LayerInformationFormat.JSON))
            for layer in info.get("Layers", []):
                if not isinstance(layer, dict):
                    continue
                for o in layer.get("Outputs", []):
                    fmt = str(o.get("Format/Datatype") or o.get("DataType") or o.get("Datatype") or "")
                    key = "int8" if "Int8" in fmt or "INT8" in fmt else "fp16" if "Half" in fmt or "FP16" in fmt else "fp32" if "Float" in fmt or "FP32" in fmt else None
                    if key:
                        counts[key] = counts.get(key, 0) + 1
        except Exception as e:  # inspector output differs across versions; best effort
            log.debug("engine inspector: %s", e)
        return counts

    def info(self) -> dict[str, Any]:
        d = super().info()
        gpu = f"gpu:{self.cuda.device} {self.here['gpu']} (sm {self.here['compute_capability']})"
        d.update(
            device=gpu if self.dla_core is None else f"dla{self.dla_core} + GPU fallback on {gpu}",
            dla_layers=self.build_meta.get("dla_layers"),
            workspace_mb=self.workspace_mb,
            timing_cache=str(self.timing_cache) if self.timing_cache else "off",
            tensorrt=self.here["tensorrt"],
            engine=self.engine_source,
            strongly_typed=self.build_meta.get("strongly_typed"),
            max_batch=self.engine_max_batch,
            cuda=self.cuda.kind,
        )
        lp = self.layer_precisions()
        if lp:
            d["layer_outputs"] = lp
        return d

    def __del__(self):  # free device memory when the backend goes away
        try:
            for b in getattr(self, "_buffers", {}).values():
                self.cuda.free(b)
            self.cuda.close()
        except Exception:
            pass
