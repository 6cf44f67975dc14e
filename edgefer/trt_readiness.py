"""Static TensorRT-readiness check of an ONNX graph (no TensorRT, no GPU needed).

Runs before every engine build and in ``edgefer export --target trt``, so that a graph that
TensorRT would reject is caught on the build machine, with a reason, instead of on the
device. Checks:

* opset of the default domain within what TensorRT 10/11's ONNX parser reads;
* explicit quantization: QuantizeLinear/DequantizeLinear must have zero point 0 (TensorRT
  rejects asymmetric quantization), int8 zero-point type (uint8 is not a TensorRT Q/DQ type),
  constant positive scales;
* tensor types TensorRT has no kernels for (double, string, complex, ...);
* operators the parser does not import (QOperator-format int8 ops such as QLinearConv,
  ConvInteger; custom domains such as ``com.microsoft``);
* dynamic dimensions other than the batch (the engine's optimisation profile only ranges the
  batch);
* weights in external data files (``.onnx.data``), which must travel with the model.

Only ``onnx`` is needed, imported lazily. ``python -m edgefer.trt_readiness model.onnx``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: default-domain opsets the TensorRT 10.x / 11.x ONNX parsers import
OPSET_MIN = 9
OPSET_MAX = 22
#: ONNX ops TensorRT's parser does not import (QOperator int8, training, strings, sequences...)
UNSUPPORTED_OPS = {
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax",
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
    "StringNormalizer", "TfIdfVectorizer", "Tokenizer", "RegexFullMatch", "StringConcat", "StringSplit",
    "SequenceConstruct", "SequenceAt", "SequenceInsert", "SequenceErase", "SequenceLength", "SequenceEmpty",
    "SplitToSequence", "ConcatFromSequence",
    "Optional", "OptionalGetElement", "OptionalHasElement",
    "Gradient", "Momentum", "Adagrad", "Adam",
    "DictVectorizer", "ZipMap", "CategoryMapper", "LabelEncoder", "TreeEnsembleClassifier", "TreeEnsembleRegressor",
    "ImageDecoder", "Col2Im",
}
#: element types TensorRT has no kernels for (onnx.TensorProto numbers)
_BAD_TYPES = {11: "double", 8: "string", 14: "complex64", 15: "complex128", 12: "uint32", 13: "uint64", 4: "uint16"}
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class Finding:
    severity: str  # "error" (TensorRT will reject or mis-run it), "warning", "info"
    code: str
    message: str
    nodes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        where = f" [{', '.join(self.nodes[:4])}{', ...' if len(self.nodes) > 4 else ''}]" if self.nodes else ""
        return f"{self.severity}: {self.code}: {self.message}{where}"


def _load(model: Any):
    import onnx

    if isinstance(model, (str, os.PathLike)):
        return onnx.load(str(model), load_external_data=False), Path(model)
    return model, None


def const_values(model) -> dict:
    """name -> numpy value of initializers and Constant nodes (None for external or unreadable data)."""
    from onnx import numpy_helper

    vals = {}
    for init in model.graph.initializer:
        try:
            vals[init.name] = numpy_helper.to_array(init) if init.data_location != 1 else None
        except Exception:
            vals[init.name] = None
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def _elem_types(model) -> dict[str, int]:
    types = {}
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def check(model: Any) -> list[Finding]:
    """Findings for an ONNX ``ModelProto`` or path, most severe first."""
    import numpy as np

    m, path = _load(model)
    out: list[Finding] = []

    # opset
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        out.append(Finding("error", "opset", "the model imports no default-domain opset"))
    elif opset < OPSET_MIN:
        out.append(Finding("error", "opset", f"opset {opset} is older than TensorRT's parser reads ({OPSET_MIN}..{OPSET_MAX}); re-export with opset >= 13"))
    elif opset > OPSET_MAX:
        out.append(Finding("warning", "opset", f"opset {opset} is newer than TensorRT 10/11 parsers are known to read ({OPSET_MIN}..{OPSET_MAX})"))
    else:
        out.append(Finding("info", "opset", f"opset {opset} (TensorRT parsers read {OPSET_MIN}..{OPSET_MAX})"))

    # operators
    custom = sorted({f"{n.domain}::{n.op_type}" for n in m.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        out.append(Finding("error", "custom-domain-ops", f"ops from non-standard domains need TensorRT plugins: {', '.join(custom[:6])}",
                           [n.name for n in m.graph.node if n.domain not in ("", "ai.onnx")]))
    bad = [n for n in m.graph.node if n.domain in ("", "ai.onnx") and n.op_type in UNSUPPORTED_OPS]
    if bad:
        kinds = sorted({n.op_type for n in bad})
        hint = " (QOperator int8: re-quantize in QDQ format)" if any(k.startswith("QLinear") or k.endswith("Integer") for k in kinds) else ""
        out.append(Finding("error", "unsupported-ops", f"TensorRT does not import {', '.join(kinds)}{hint}", [n.name for n in bad]))

    # explicit quantization
    consts = const_values(m)
    types = _elem_types(m)
    qdq = [n for n in m.graph.node if n.op_type in _QDQ]
    asym, uint8_zp, no_const, bad_scale, missing_zp = [], [], [], [], []
    int8_kinds: set[str] = set()
    for n in qdq:
        scale = consts.get(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            no_const.append(n.name)
        elif np.any(np.asarray(scale, np.float64) <= 0) or not np.all(np.isfinite(scale)):
            bad_scale.append(n.name)
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if zp_name is None:
            missing_zp.append(n.name)  # default zero point: uint8 0 for QuantizeLinear
            if n.op_type == "QuantizeLinear":
                out_t = next((a.i for a in n.attribute if a.name == "output_dtype"), 0)
                if out_t in (0, 2):
                    uint8_zp.append(n.name)
            continue
        zt = types.get(zp_name)
        zp = consts.get(zp_name)
        if zt == 2 or (zp is not None and zp.dtype == np.uint8):
            uint8_zp.append(n.name)
        if zp is not None:
            int8_kinds.add(str(zp.dtype))
            if np.any(np.asarray(zp) != 0):
                asym.append(n.name)
        elif zp_name not in consts:
            no_const.append(n.name)
    if asym:
        out.append(Finding("error", "asymmetric-zero-point",
                           f"{len(asym)} Q/DQ nodes have a non-zero zero point; TensorRT supports only symmetric quantization "
                           "(re-quantize with symmetric int8 activations, e.g. ActivationSymmetric=True)", asym))
    if uint8_zp:
        out.append(Finding("error", "uint8-quantization",
                           f"{len(uint8_zp)} Q/DQ nodes quantize to uint8; TensorRT's Q/DQ type is int8 (signed)", uint8_zp))
    if no_const:
        out.append(Finding("error", "dynamic-qdq-params", f"{len(no_const)} Q/DQ nodes take scale/zero point from a computed tensor; TensorRT needs constants", no_const))
    if bad_scale:
        out.append(Finding("error", "bad-scale", f"{len(bad_scale)} Q/DQ nodes have a non-positive or non-finite scale", bad_scale))
    if qdq and not (asym or uint8_zp or no_const or bad_scale):
        out.append(Finding("info", "explicit-int8", f"{len(qdq)} Q/DQ nodes, symmetric int8 (zero point 0): explicit quantization"))

    # tensor types
    badt = sorted({(_BAD_TYPES[t], name) for name, t in types.items() if t in _BAD_TYPES})
    if badt:
        kinds = sorted({k for k, _ in badt})
        out.append(Finding("error", "unsupported-types", f"tensors of type {', '.join(kinds)} have no TensorRT kernels", [n for _, n in badt]))
    for inp in m.graph.input:
        if inp.name in consts:
            continue
        t = inp.type.tensor_type.elem_type
        if t == 2:
            out.append(Finding("info", "uint8-input", f"input {inp.name!r} is uint8: TensorRT >= 8.6 takes uint8 I/O and casts it inside the graph"))
        elif t == 3:
            out.append(Finding("warning", "int8-input", f"input {inp.name!r} is int8 without Q/DQ: TensorRT wants int8 I/O only with explicit scales"))

    # shapes
    for inp in m.graph.input:
        if inp.name in consts:
            continue
        dims = inp.type.tensor_type.shape.dim
        dyn = [i for i, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0]
        other = [i for i in dyn if i != 0]
        if other:
            out.append(Finding("error", "dynamic-shape",
                               f"input {inp.name!r} has dynamic dimensions {other} besides the batch; edgefer's engine profile ranges only the batch "
                               "(export with a fixed input size)"))
        elif dyn:
            out.append(Finding("info", "dynamic-batch", f"input {inp.name!r}: dynamic batch (optimisation profile min/opt/max)"))

    # external data
    ext = [i.name for i in m.graph.initializer if i.data_location == 1]
    if ext:
        sev = "info"
        msg = f"{len(ext)} weights are in external data files; keep them beside the .onnx (the builder parses from the file)"
        if path is not None:
            locs = set()
            for i in m.graph.initializer:
                if i.data_location == 1:
                    for e in i.external_data:
                        if e.key == "location":
                            locs.add(e.value)
            missing = [l for l in locs if not (path.parent / l).exists()]
            if missing:
                sev, msg = "error", f"external weight files missing beside {path.name}: {', '.join(sorted(missing))}"
        out.append(Finding(sev, "external-data", msg, ext[:8]))

    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order[f.severity])


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def summary(findings: list[Finding]) -> str:
    errs = errors(findings)
    if errs:
        return "not TensorRT-ready: " + "; ".join(f"{f.code}: {f.message}" for f in errs)
    warns = [f for f in findings if f.severity == "warning"]
    return "TensorRT-ready" + (f" ({len(warns)} warnings: " + "; ".join(f.message for f in warns) + ")" if warns else "")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m edgefer.trt_readiness MODEL.onnx [...]", file=sys.stderr)
        return 2
    worst = 0
    for a in args:
        try:
            fs = check(a)
        except Exception as e:  # unreadable file
            print(f"{a}: cannot read: {e}", file=sys.stderr)
            worst = 2
            continue
        print(f"{a}: {summary(fs)}")
        for f in fs:
            print(f"  {f}")
        if errors(fs):
            worst = max(worst, 1)
    return worst


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
