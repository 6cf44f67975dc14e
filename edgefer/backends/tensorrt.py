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

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeferError
from .base import Backend
from .trt_build import (  # noqa: F401  (re-exported: the build side's names, as before the split)
    DEFAULT_MAX_BATCH,
    DEFAULT_OPT_BATCH,
    DEFAULT_WORKSPACE_MB,
    DLA_MAX_CORES,
    MAX_WORKSPACE_MB,
    _Logger,
    _sha256,
    build_engine,
    cache_root,
    check_dla,
    check_workspace,
    engine_key,
    incompatibility,
    parse_device,
    timing_cache_path,
    trt_major,
    trt_version,
)

log = logging.getLogger(__name__)


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
