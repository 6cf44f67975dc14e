"""Core ML: an ``.mlpackage`` (ML program) converted from the torch module, FP32 / FP16 / INT8.

Core ML takes no uint8 tensors, so the package's input is float32 carrying raw pixel values
(0..255) in the manifest's layout; the normalisation stays inside the graph exactly as in the
ONNX artifacts, and the manifest keeps saying "raw pixels in" (the Core ML backend casts).
The batch axis is flexible (``RangeDim``).

* FP32 / FP16: ``compute_precision`` FLOAT32 / FLOAT16 (FP16 is Core ML's native precision on
  the GPU and Neural Engine).
* INT8: per-channel symmetric int8 weights (``coremltools.optimize.coreml.linear_quantize_weights``)
  everywhere; on macOS with calibration crops also int8 activations
  (``linear_quantize_activations``: it runs the model, which only macOS can). Linux gets W8
  with FP16 activations, and the manifest says so.

Linux cannot run Core ML models: :func:`inspect_package` validates what it can — the package
loads as a spec, its input/output names, types and shapes, the ops of the ML program, the
storage precision of its weights, and whether int8 weights are really there.
"""

from __future__ import annotations

import logging
import platform
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefer.errors import EdgeferError

from ..job import Built
from .base import Target

if TYPE_CHECKING:
    from ..job import Job
    from ..source import SourceModel

log = logging.getLogger(__name__)

MAX_BATCH = 64
DEPLOYMENT_TARGET = "iOS16"  # also macOS13: mlprogram FP16 I/O and per-channel int8 weights


def can_predict() -> bool:
    """Core ML prediction (and activation calibration) works only on macOS."""
    return platform.system() == "Darwin"


def _torch_program(wrapper, example):
    """ExportedProgram (ATEN dialect) of the wrapper with a dynamic batch, else a TorchScript trace."""
    import torch

    try:
        ep = torch.export.export(
            wrapper, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
        )
        return ep.run_decompositions({}), "torch.export"
    except Exception as e:  # data-dependent control flow etc.: fall back to tracing
        log.info("torch.export failed (%s); tracing instead", str(e).splitlines()[0] if str(e) else type(e).__name__)
        with torch.no_grad():
            return torch.jit.trace(wrapper, example), "torch.jit.trace"


def convert(
    factory: Callable[[], Any],
    spec,
    out: Path,
    precision: str,
    calib_inputs: np.ndarray | None = None,
    output_name: str = "probs",
) -> dict[str, Any]:
    """Convert the wrapped torch module to ``out`` (.mlpackage); returns a report for the manifest."""
    import coremltools as ct
    import torch

    wrapper = factory().eval()
    h, w = spec.size
    c = spec.channels
    shape_ex = (2, h, w, c) if spec.layout == "NHWC" else (2, c, h, w)
    example = torch.randint(0, 256, shape_ex, generator=torch.Generator().manual_seed(0)).to(torch.float32)
    program, how = _torch_program(wrapper, example)
    dims = (ct.RangeDim(1, MAX_BATCH, 1), h, w, c) if spec.layout == "NHWC" else (ct.RangeDim(1, MAX_BATCH, 1), c, h, w)
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    ml = ct.convert(
        program,
        inputs=[ct.TensorType(name=spec.name, shape=ct.Shape(dims), dtype=np.float32)],
        outputs=[ct.TensorType(name=output_name, dtype=np.float32)],
        convert_to="mlprogram",
        compute_precision=compute,
        minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
    )
    report: dict[str, Any] = {
        "converter": f"coremltools {ct.__version__} from {how}",
        "deployment_target": DEPLOYMENT_TARGET,
        "input_dtype": "float32 raw pixels 0..255 (Core ML has no uint8 tensors; the backend casts)",
        "compute_precision": "fp32" if precision == "fp32" else "fp16",
    }
    if precision == "int8":
        from coremltools.optimize import coreml as cto

        if calib_inputs is not None and len(calib_inputs) and can_predict():
            act_cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
            samples = [{spec.name: calib_inputs[i : i + 1].astype(np.float32)} for i in range(len(calib_inputs))]
            ml = cto.linear_quantize_activations(ml, act_cfg, samples)
            report["activations"] = f"int8 (linear_quantize_activations, {len(samples)} calibration crops)"
        else:
            why = "needs macOS (it runs the model)" if not can_predict() else "no calibration data"
            report["activations"] = f"fp16 (activation quantization {why})"
        w_cfg = cto.OptimizationConfig(
            global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
            )
        )
        ml = cto.linear_quantize_weights(ml, w_cfg)
        report["weights"] = "int8 symmetric per-channel (linear_quantize_weights)"
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    ml.short_description = f"edgefer {spec.name} -> {output_name}"
    ml.save(str(out))
    return report


def _feature_desc(f) -> dict[str, Any]:
    t = f.type
    kind = t.WhichOneof("Type")
    d: dict[str, Any] = {"name": f.name, "type": kind}
    if kind == "multiArrayType":
        from coremltools.proto import FeatureTypes_pb2 as ft

        d["dtype"] = ft.ArrayFeatureType.ArrayDataType.Name(t.multiArrayType.dataType)
        d["shape"] = list(t.multiArrayType.shape)
        rng = t.multiArrayType.shapeRange.sizeRanges
        if len(rng):
            d["shape_range"] = [[r.lowerBound, r.upperBound] for r in rng]
    return d


def inspect_package(path: Path) -> dict[str, Any]:
    """What Linux can check of an .mlpackage: I/O, ML program ops, weight storage precision."""
    import coremltools as ct

    ml = ct.models.MLModel(str(path), skip_model_load=True)
    spec = ml.get_spec()
    d: dict[str, Any] = {
        "model_type": spec.WhichOneof("Type"),
        "specification_version": spec.specificationVersion,
        "inputs": [_feature_desc(f) for f in spec.description.input],
        "outputs": [_feature_desc(f) for f in spec.description.output],
    }
    ops: Counter = Counter()
    dtypes: Counter = Counter()
    if spec.WhichOneof("Type") == "mlProgram":
        for fn in spec.mlProgram.functions.values():
            for blk in fn.block_specializations.values():
                for op in blk.operations:
                    ops[op.type] += 1
                    for o in op.outputs:
                        tt = o.type.tensorType
                        if o.type.WhichOneof("type") == "tensorType":
                            from coremltools.proto import MIL_pb2

                            dtypes[MIL_pb2.DataType.Name(tt.dataType)] += 1
    d["ops"] = dict(ops)
    d["value_types"] = dict(dtypes)
    # int8 weights appear as constexpr dequantization ops (iOS16: constexpr_affine_dequantize;
    # iOS18: constexpr_blockwise_shift_scale) whose data is int8/uint8
    d["int8_weight_ops"] = sum(v for k, v in ops.items() if k in ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"))
    d["activation_quant_ops"] = ops.get("quantize", 0) + ops.get("dequantize", 0)
    d["compute"] = (
        "fp16" if dtypes.get("FLOAT16", 0) > dtypes.get("FLOAT32", 0) else "fp32"
    )
    d["can_predict_here"] = can_predict()
    return d


def check_package(report: dict[str, Any], spec, n_classes: int, precision: str, output_name: str = "probs") -> list[str]:
    """Problems with an inspected package against the manifest (empty list: it fits)."""
    problems = []
    if report["model_type"] != "mlProgram":
        problems.append(f"model type is {report['model_type']}, expected an ML program")
    ins = report["inputs"]
    if len(ins) != 1 or ins[0]["name"] != spec.name:
        problems.append(f"inputs are {[i['name'] for i in ins]}, expected [{spec.name!r}]")
    else:
        shp = ins[0].get("shape", [])
        want = [spec.size[0], spec.size[1], spec.channels] if spec.layout == "NHWC" else [spec.channels, spec.size[0], spec.size[1]]
        if list(shp[1:]) != want:
            problems.append(f"input shape {shp} does not end in {want}")
    outs = report["outputs"]
    if not outs or outs[0]["name"] != output_name:
        problems.append(f"outputs are {[o['name'] for o in outs]}, expected {output_name!r} first")
    if precision == "fp16" and report["compute"] != "fp16":
        problems.append("FP16 package computes in fp32")
    if precision == "int8" and not report["int8_weight_ops"]:
        problems.append("INT8 package has no int8 weights")
    if report["ops"].get("softmax", 0) == 0 and output_name == "probs":
        problems.append("no softmax in the program, but the manifest says probs")
    return problems


class CoreMLTarget(Target):
    name = "coreml"
    int8_runtime = "coreml"
    int8_needs_calib = False  # weight-only int8 needs no data
    checked_on_faces = False  # Linux cannot run Core ML; macOS runs it in the backend's self-check

    def modules(self, precision: str, nncf: bool) -> list[str]:
        return ["torch", "coremltools"]

    def check_source(self, src: SourceModel) -> None:
        if src.torch_factory is not None:
            return
        man0 = src.manifest
        if man0.arch:
            # a zoo architecture whose module did not import: say why (torch missing -> the CLI names
            # the extra that installs it), rather than that no torch module is known
            import torch  # noqa: F401

            from ..source import zoo_module

            zoo_module(man0.arch)
        raise EdgeferError(
            f"Core ML export converts the torch module, and edgefer has none for {man0.name} "
            f"({f'a {man0.kind}' if man0.arch else 'its manifest names no zoo architecture'}): "
            "export its checkpoint (edgefer export model.pth --arch NAME --target coreml)"
        )

    def calibrates_on_crops(self) -> bool:
        return can_predict()  # activation calibration runs the model: macOS only

    def build(self, job: Job) -> Built:
        job.used.update({"coremltools", "torch"})
        man0, precision = job.manifest0, job.req.precision
        spec = man0.input
        pkg = job.staging / "model.mlpackage"
        report = convert(job.src.torch_factory, spec, pkg, precision, job.data.cal_x, output_name=man0.output)
        insp = inspect_package(pkg)
        problems = check_package(insp, spec, len(man0.classes or []), precision, output_name=man0.output)
        if problems:
            raise EdgeferError("the Core ML package does not fit the manifest: " + "; ".join(problems))
        report["validated"] = {k: insp[k] for k in ("model_type", "specification_version", "inputs", "outputs",
                                                   "int8_weight_ops", "activation_quant_ops", "compute")}
        report["ops"] = insp["ops"]
        calibration = None
        if precision == "int8" and job.data.record is None:
            calibration = {"method": "none (weight-only int8, no activation calibration)"}
        return Built({"model": "model.mlpackage"}, {"coreml": report}, calibration)
