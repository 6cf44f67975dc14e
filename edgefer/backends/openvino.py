"""OpenVINO backend: IR (.xml/.bin) or ONNX on CPU, GPU, NPU or AUTO.

Options: ``device`` (CPU default; GPU, NPU, AUTO, or any OpenVINO device string), ``hint``
(``latency`` default, or ``throughput``), ``threads``, ``inference_precision`` (``f32``, ``f16``,
``bf16``; env ``EDGEFER_OV_PRECISION``), ``pinning`` (CPU threads pinned to cores, OpenVINO's
default; env ``EDGEFER_OV_PINNING``).

An FP32 artifact is compiled with ``INFERENCE_PRECISION_HINT=f32``: OpenVINO's CPU plugin
otherwise runs FP32 models in bf16 on CPUs with AVX512-BF16 or AMX (it did on this project's
Xeon, where FP32 IR probabilities then differed from ONNX Runtime's by up to 0.017), which would
make the "FP32 reference" of a bench silently lossy. FP16 and INT8 artifacts keep the device's
own choice (bf16 or f16 where the CPU has it, f32 otherwise), and ``info()`` says which it was.

``info()`` reports what the compiled model really executes, read from the runtime (execution)
graph rather than from the manifest: the inference precision the device chose
(``INFERENCE_PRECISION_HINT``), the execution devices, and how many compute layers run in
int8 / fp16 / fp32. An INT8 artifact whose layers all run in f32 is visible at a glance.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np

from .base import Backend
from ..errors import EdgeferError

log = logging.getLogger(__name__)

HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
#: execution-graph layer types that do the arithmetic (what "runs in int8" is about)
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm", "BinaryConvolution")
_KERNEL_PREC = re.compile(r"_(I8|i8|u8|U8|f32|F32|f16|F16|bf16|BF16)$")
_PREC_NAMES = {"u8": "int8", "i8": "int8", "f16": "fp16", "bf16": "bf16", "f32": "fp32"}


def _check_available() -> None:
    import openvino  # noqa: F401


def runtime_version() -> str:
    """OpenVINO's version (part of the key under which ``auto`` caches its measurement)."""
    import openvino

    return str(getattr(openvino, "__version__", None) or openvino.get_version())


def _core():
    import openvino as ov

    return ov.Core()


def _type_name(t) -> str:
    """Short OpenVINO element type name: u8, f32, f16..."""
    try:
        return t.get_type_name()
    except AttributeError:  # pragma: no cover - older bindings
        return str(t).lower()


class OpenVINOBackend(Backend):
    name = "openvino"

    def _load(self) -> None:
        self.core = _core()
        device = (self.device or self.options.get("device") or os.environ.get("EDGEFER_OV_DEVICE") or "CPU").upper()
        hint = str(self.options.get("hint") or "latency").lower()
        if hint not in HINTS:
            raise EdgeferError(f"OpenVINO hint must be one of {', '.join(HINTS)}, not {hint!r}")
        have = self.core.available_devices
        base = device.split(":")[0].split(".")[0]
        if base not in ("AUTO", "MULTI", "HETERO", "BATCH") and not any(d.split(".")[0] == base for d in have):
            raise EdgeferError(f"OpenVINO device {device} is not available here (available: {', '.join(have)})")
        path = self.artifact.model_path
        if path.suffix.lower() not in (".xml", ".onnx"):
            raise self.fits_error(f"OpenVINO reads .xml (IR) or .onnx, not {path.name}")
        try:
            model = self.core.read_model(str(path))
        except Exception as e:  # RuntimeError from the frontend
            raise EdgeferError(f"cannot read {path} in OpenVINO: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from None
        self._check_fits(model)
        config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[hint]}
        prec = str(self.options.get("inference_precision") or os.environ.get("EDGEFER_OV_PRECISION") or "").lower()
        if not prec and (self.manifest.precision or "fp32") == "fp32" and base in ("CPU", "GPU"):
            prec = "f32"
        if prec:
            prec = {"fp32": "f32", "fp16": "f16"}.get(prec, prec)
            if prec not in ("f32", "f16", "bf16"):
                raise EdgeferError(f"OpenVINO inference precision must be f32, f16 or bf16, not {prec!r}")
            config["INFERENCE_PRECISION_HINT"] = prec
        threads = self.threads  # already checked, $EDGEFER_THREADS included (backends.check_threads)
        if threads and base == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        pinning = self._pinning()
        if pinning is not None and base == "CPU":
            config["ENABLE_CPU_PINNING"] = pinning
        try:
            self.compiled = self.core.compile_model(model, device, config)
        except Exception as e:
            raise EdgeferError(f"OpenVINO cannot compile {path.name} for {device}: {str(e).strip().splitlines()[0]}") from None
        self.device = device
        self.hint = hint
        self.pinning = pinning if base == "CPU" else None
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._outputs = list(self.compiled.outputs)
        self._request = self.compiled.create_infer_request()
        self._exec: dict[str, Any] | None = None

    def _pinning(self) -> bool | None:
        """Whether the CPU plugin pins its threads to cores: option ``pinning``, else
        ``$EDGEFER_OV_PINNING``, else None (OpenVINO's default: pinned).

        The default is kept on purpose. ONNX Runtime also affinitizes its intra-op threads when left
        at its default thread count (its threading docs), so both start from the same treatment. Unpinned looked
        better one model at a time (EdgeNet batch 1: 1.8 against 4.6 ms wall, loaded 2-core EPYC
        VM), but in the video loop, detector and classifier on two threads, pinned ran faster:
        webcam_720p 75.5 against 64.6 fps median of 6 interleaved runs, 14.9 against 14.0 ms CPU
        a frame (within noise). ``spin=False``, which the loop gives ONNX Runtime, has no setting
        to map to in OpenVINO's CPU plugin.
        """
        pin = self.options.get("pinning")
        if pin is None and os.environ.get("EDGEFER_OV_PINNING"):
            pin = os.environ["EDGEFER_OV_PINNING"].strip().lower() not in ("0", "false", "no", "off")
        return None if pin is None else bool(pin)

    def _check_fits(self, model) -> None:
        spec = self.manifest.input
        if len(model.inputs) != 1:
            raise self.fits_error(f"the graph has {len(model.inputs)} inputs, edgefer feeds one")
        inp = model.inputs[0]
        names = inp.get_names()
        if spec.name not in names:
            raise self.fits_error(f"graph input is {inp.get_any_name()!r}, manifest says {spec.name!r}")
        t = _type_name(inp.get_element_type())
        want = {"uint8": "u8", "float32": "f32"}[spec.dtype]
        if t != want:
            raise self.fits_error(f"graph input type is {t}, manifest says {spec.dtype}")
        shape = inp.get_partial_shape()
        if spec.size is not None and shape.rank.is_static and shape.rank.get_length() == 4:
            h_ax, w_ax = (1, 2) if spec.layout == "NHWC" else (2, 3)
            gh, gw = shape[h_ax], shape[w_ax]
            if gh.is_static and gw.is_static and [gh.get_length(), gw.get_length()] != list(spec.size):
                raise self.fits_error(
                    f"graph input is {gh.get_length()}x{gw.get_length()}, manifest says {spec.size[0]}x{spec.size[1]}"
                )
        self._batch_fixed = shape[0].get_length() if shape.rank.is_static and shape[0].is_static else None
        if self.manifest.kind == "classifier":
            out = model.outputs[0].get_partial_shape()
            if out.rank.is_static and out[out.rank.get_length() - 1].is_static:
                n = out[out.rank.get_length() - 1].get_length()
                if n != len(self.manifest.classes or []):
                    raise self.fits_error(f"the graph outputs {n} classes, the manifest lists {len(self.manifest.classes)}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._batch_fixed and batch.shape[0] != self._batch_fixed:
            outs = [self.run(batch[i : i + 1]) for i in range(batch.shape[0])]
            return [np.concatenate([o[k] for o in outs]) for k in range(len(self._outputs))]
        res = self._request.infer({0: batch})
        # copy: the request reuses its output tensors on the next call
        return [np.array(res[o]) for o in self._outputs]

    # ------------------------------------------------------------------ what really runs
    def execution(self) -> dict[str, Any]:
        """Precisions of the compute layers in the execution graph, and device properties."""
        if self._exec is not None:
            return self._exec
        d: dict[str, Any] = {}
        for prop, key in (("INFERENCE_PRECISION_HINT", "inference_precision"), ("EXECUTION_DEVICES", "execution_devices")):
            try:
                v = self.compiled.get_property(prop)
                d[key] = _type_name(v) if prop == "INFERENCE_PRECISION_HINT" else [str(x) for x in v]
            except Exception:  # not every device exposes every property
                pass
        layers: dict[str, int] = {}
        notes: dict[str, int] = {}
        try:
            for op in self.compiled.get_runtime_model().get_ordered_ops():
                ri = op.get_rt_info()
                if "layerType" not in ri or ri["layerType"].astype(str) not in COMPUTE_LAYERS:
                    continue
                rt_prec = ri["runtimePrecision"].astype(str) if "runtimePrecision" in ri else "?"
                prim = ri["primitiveType"].astype(str) if "primitiveType" in ri else ""
                # the kernel's own precision is the primitive's suffix (jit_avx2_I8, brgconv_avx2_f32):
                # runtimePrecision reports the input/weight type, f16 even when FP16 weights are
                # decompressed and convolved in f32
                m = _KERNEL_PREC.search(prim)
                kern = m.group(1).lower() if m else rt_prec
                key = _PREC_NAMES.get(kern, kern)
                layers[key] = layers.get(key, 0) + 1
                if _PREC_NAMES.get(rt_prec, rt_prec) != key:
                    note = f"{_PREC_NAMES.get(rt_prec, rt_prec)} weights/inputs, {key} kernels"
                    notes[note] = notes.get(note, 0) + 1
        except Exception as e:  # runtime model not exposed by this device plugin
            log.debug("no runtime model: %s", e)
        d["compute_layers"] = layers
        if notes:
            d["precision_notes"] = notes
        total = sum(layers.values())
        if total:
            top = max(layers, key=layers.get)
            d["executes"] = top if layers[top] == total else "mixed " + ", ".join(f"{k} {v}" for k, v in sorted(layers.items()))
        self._exec = d
        return d

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["device"] = self.device
        d["hint"] = self.hint
        if self.pinning is not None:
            d["pinning"] = self.pinning
        d.update(self.execution())
        return d
