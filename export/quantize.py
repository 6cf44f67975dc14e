"""INT8 by explicit quantization: one calibrated QDQ ONNX graph, with the variant that runs right.

The graph is made by ONNX Runtime's static quantizer (``quant_pre_process`` then
``quantize_static(QuantFormat.QDQ)``), per-channel symmetric int8 weights, Softmax left in
float so probabilities keep their resolution. Variants differ in two knobs:

=========  ==========================  ================  ===================================
variant    activations                 weights           runs correctly on
=========  ==========================  ================  ===================================
s8s8       int8, symmetric (zp 0)      int8, 8 bit       TensorRT, OpenVINO/ORT with VNNI
s8s8-rr    int8, symmetric (zp 0)      int8, 7 bit       any x86 (no int16 overflow)
u8s8-rr    uint8, asymmetric           int8, 7 bit       ONNX Runtime on any x86 (not TRT)
u8s8       uint8, asymmetric           int8, 8 bit       ONNX Runtime with VNNI / ARM
=========  ==========================  ================  ===================================

Why: x86 CPUs without VNNI multiply u8 x s8 pairs with ``vpmaddubsw``, which sums two
products into a saturating int16; 8-bit weights times large activations overflow it. ONNX
Runtime's S8S8/U8S8 kernels (issue #12072) and OpenVINO's CPU plugin both lose accuracy there
(measured on an AVX2 EPYC with the bundled mini-XCEPTION: ORT S8S8 top-1 -4.4 points, OpenVINO
S8S8 -0.8 points and 93% agreement with FP32). 7-bit weights (``reduce_range``) cannot
overflow. TensorRT runs on the GPU and rejects non-zero zero points, so it always gets ``s8s8``.

:func:`choose_variant` quantizes each candidate for the target and CPU, runs it on the target
runtime over held-out faces and keeps the one that agrees most with FP32; the measurements and
the reason go in the manifest.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from .ranges import Samples

log = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {
    "s8s8": {"activation": "int8", "symmetric": True, "reduce_range": False},
    "s8s8-rr": {"activation": "int8", "symmetric": True, "reduce_range": True},
    "u8s8-rr": {"activation": "uint8", "symmetric": False, "reduce_range": True},
    "u8s8": {"activation": "uint8", "symmetric": False, "reduce_range": False},
}
#: tie-break order: the most portable graph first (symmetric full range feeds every runtime)
PREFERENCE = ("s8s8", "s8s8-rr", "u8s8-rr", "u8s8")
METHODS = ("minmax", "entropy", "percentile")
#: ops whose outputs stay float: probabilities need more than 1/127 resolution
KEEP_FLOAT_OPS = ("Softmax", "LogSoftmax")
#: CPU flags that give x86 an int8 dot product without an int16 intermediate
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avxvnni", "amx_int8")


def cpu_profile() -> dict[str, Any]:
    """What decides the INT8 variant on this machine: architecture and VNNI support."""
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686", "x86")
    flags: set[str] = set()
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(val.split())
                elif key == "model name" and model is None:
                    model = val.strip()
    except OSError:
        pass
    found = sorted(f for f in VNNI_FLAGS if f in flags)
    return {
        "machine": machine,
        "cpu": model or platform.processor() or machine,
        "x86": x86,
        "flags_read": bool(flags),
        "vnni": bool(found),
        "vnni_flags": found,
        "avx2": "avx2" in flags,
        "avx512": any(f.startswith("avx512") for f in flags),
    }


def overflow_risk(cpu: dict[str, Any]) -> bool:
    """True where 8-bit weights can overflow int16 accumulation (x86 without VNNI)."""
    if not cpu["x86"]:
        return False
    if not cpu["flags_read"]:  # unknown x86 (macOS/Windows): assume the worst, 7-bit is safe
        return True
    return not cpu["vnni"]


def candidates(target: str, cpu: dict[str, Any]) -> list[str]:
    """Variants worth trying for ``target`` on this CPU (first = default when not measured)."""
    if target == "trt":
        return ["s8s8"]
    if not overflow_risk(cpu):
        return ["s8s8"]
    if target == "openvino":
        return ["s8s8-rr", "s8s8"]
    return ["s8s8-rr", "u8s8-rr", "s8s8"]


def _method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def activation_ranges(
    src: str | Path,
    input_name: str,
    calib_inputs: "np.ndarray | Samples",
    method: str,
    symmetric: bool,
    cache: Path,
    batch_size: int = 16,
) -> Path:
    """Calibrate activation ranges once and keep them as an ORT calibration cache (JSON).

    Done here rather than inside ``quantize_static`` for three reasons: the ranges are shared by
    every variant tried (min/max ranges do not depend on the variant; the quantizer makes them
    symmetric where asked); ``quantize_static`` does not pass histogram sizes through, which
    leaves its entropy calibrator with 128 bins for 128 quantized levels: nothing to clip, so
    "entropy" silently equals min/max (entropy here uses 2048 bins, as TensorRT's calibrator);
    and ONNX Runtime's histogram calibrators keep every activation of every sample in memory
    (23 GB for 300 detector frames), where :func:`edgefer.export.ranges.compute_ranges`
    accumulates statistics batch by batch to the same ranges.

    ``calib_inputs`` is an array or any object sliced lazily into model-ready batches.
    """
    from onnxruntime.quantization.calibrate import save_tensors_data

    from .ranges import compute_ranges

    if cache.exists():
        return cache
    data = compute_ranges(src, input_name, calib_inputs, method, symmetric, batch_size=batch_size)
    save_tensors_data(data, cache)
    return cache


def quantize_qdq(
    src: str | Path,
    dst: str | Path,
    input_name: str,
    calib_inputs: "np.ndarray | Samples",
    variant: str = "s8s8",
    method: str = "minmax",
    per_channel: bool = True,
    batch_size: int = 16,
    cache_dir: Path | None = None,
    exclude: Sequence[str] = (),
) -> Path:
    """Write a QDQ INT8 model of ``src`` (already :func:`graph.simplify`-ed) calibrated on
    ``calib_inputs`` (model-ready samples, first axis = samples: an array, or an object that
    builds each slice on demand so the samples need not all be in memory at once)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if variant not in VARIANTS:
        raise ValueError(f"unknown INT8 variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    v = VARIANTS[variant]
    dst = Path(dst)
    cache_dir = cache_dir or dst.parent
    sym = bool(v["symmetric"])
    cache = cache_dir / f"ranges-{method}{'-sym' if sym and method != 'minmax' else ''}.json"
    activation_ranges(src, input_name, calib_inputs, method, sym, cache, batch_size)
    model = onnx.load(str(src))
    unnamed = [n for n in model.graph.node if not n.name]
    for i, n in enumerate(unnamed):  # nodes_to_exclude works by name
        n.name = f"{n.op_type}_{i}_edgefer"
    keep_float = [n.name for n in model.graph.node if n.op_type in KEEP_FLOAT_OPS or n.name in set(exclude)]
    quantize_static(
        model,
        str(dst),
        None,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=bool(v["reduce_range"]),
        activation_type=QuantType.QInt8 if v["activation"] == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep_float,
        calibrate_method=_method(method),
        extra_options={"ActivationSymmetric": sym, "WeightSymmetric": True},
        calibration_cache_path=str(cache),
    )
    return dst


def describe_variant(variant: str) -> dict[str, Any]:
    v = VARIANTS[variant]
    return {
        "variant": variant,
        "activations": f"{v['activation']} {'symmetric (zero point 0)' if v['symmetric'] else 'asymmetric'}",
        "weights": f"int8 symmetric per-channel, {'7-bit range (reduce_range)' if v['reduce_range'] else 'full 8-bit range'}",
    }


@dataclass
class VariantChoice:
    variant: str
    path: Path
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str = ""


def agreement(pred: np.ndarray, ref: np.ndarray) -> float:
    return float((np.asarray(pred).argmax(1) == np.asarray(ref).argmax(1)).mean()) if len(ref) else float("nan")


@dataclass
class CheckFaces:
    """What a variant is measured on: model-ready faces, the FP32 outputs on them, labels when known."""

    inputs: np.ndarray
    ref: np.ndarray  # the FP32 graph's outputs on ``inputs``
    labels: np.ndarray | None = None
    desc: str | None = None  # in words, for the reason recorded in the manifest


def choose_variant(
    target: str,
    src: Path,
    workdir: Path,
    input_name: str,
    calib_inputs: np.ndarray,
    check: CheckFaces,
    predict: Callable[[Path, np.ndarray], np.ndarray],
    simulate: Callable[[Path, np.ndarray], np.ndarray] | None = None,
    method: str = "minmax",
    forced: str | None = None,
    cpu: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> VariantChoice:
    """Quantize the candidate variants, run each on the target runtime, keep the best.

    ``predict(path, x)`` runs a QDQ ONNX file on the target runtime; ``simulate`` runs it as
    exact float arithmetic (reference for what the graph should give).
    """
    cpu = cpu or cpu_profile()
    names = [forced] if forced and forced != "auto" else candidates(target, cpu)
    if target == "trt" and any(VARIANTS[n]["activation"] != "int8" or not VARIANTS[n]["symmetric"] for n in names):
        raise ValueError("TensorRT needs symmetric int8 (zero point 0): use the s8s8 or s8s8-rr variant")
    scores: dict[str, dict[str, float]] = {}
    paths: dict[str, Path] = {}
    for name in names:
        if progress:
            progress(f"quantize {name}")
        p = quantize_qdq(src, workdir / f"int8-{name}.onnx", input_name, calib_inputs, variant=name, method=method)
        paths[name] = p
        if len(check.inputs) == 0 or target == "trt":
            continue
        out = predict(p, check.inputs)
        s = {"agreement": round(agreement(out, check.ref), 4)}
        if check.labels is not None:
            s["top1"] = round(float((out.argmax(1) == check.labels).mean()), 4)
        if simulate is not None:
            s["simulated_agreement"] = round(agreement(simulate(p, check.inputs), check.ref), 4)
        scores[name] = s
    if len(names) == 1:
        chosen = names[0]
        if forced and forced != "auto":
            reason = f"variant {chosen} forced by the user"
        elif target == "trt":
            reason = "TensorRT: symmetric int8 with zero point 0 and full 8-bit weights (GPU kernels do not overflow)"
        else:
            reason = f"{cpu['cpu']}: no int16-overflow risk (VNNI: {', '.join(cpu['vnni_flags']) or 'n/a'}), full-range S8S8"
    else:
        rank = {n: i for i, n in enumerate(PREFERENCE)}
        # most agreement with FP32 wins; within 0.5 point the more portable variant wins
        best = max(scores[n]["agreement"] for n in names)
        near = [n for n in names if scores[n]["agreement"] >= best - 0.005]
        chosen = min(near, key=lambda n: rank[n])
        measured = ", ".join(f"{n} {100 * scores[n]['agreement']:.1f}%" for n in names)
        reason = (
            f"{cpu['cpu']} has no VNNI ({'x86' if cpu['x86'] else cpu['machine']}): 8-bit weights can overflow the int16 "
            f"accumulation of u8*s8 kernels; measured agreement with FP32 on {check.desc or f'{len(check.inputs)} faces'}: "
            f"{measured}; kept {chosen}"
        )
    return VariantChoice(chosen, paths[chosen], scores, reason)
