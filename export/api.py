"""``export_model``: one model -> one artifact for a target and precision (what ``edgefer export`` runs).

Steps, each visible in the progress bar:

1. resolve the FP32 source (bundled name, artifact, or checkpoint + zoo architecture);
2. collect calibration crops (INT8) from real face data, class-balanced, fixed seed, plus
   held-out crops to check the result (or the ``val`` data when given);
3. simplify the FP32 graph (constant folding, Pad/MaxPool fusion);
4. convert for the target (ONNX / OpenVINO IR / TensorRT-ready ONNX or engine / Core ML
   package) at the precision; for INT8 pick the QDQ variant that runs correctly on the target
   and this CPU (see :mod:`edgefer.export.quantize`), or run NNCF for OpenVINO;
5. load the artifact through edgefer's own backend and compare it with FP32 (agreement,
   top-1 and drop when labels are known); ``max_drop`` makes that a gate;
6. write the artifact folder: model files + ``manifest.json`` (input spec, classes,
   calibration provenance, source checksum, tool versions, measurements).
"""

from __future__ import annotations

import importlib.metadata
import logging
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.align import resize_faces
from edgefer.artifact import PRECISIONS, TARGETS, Manifest, write_artifact
from edgefer.classes import canonical
from edgefer.errors import CheckFailed, EdgeferError

from . import quantize as q
from .source import SourceModel, resolve_source
from .validate import check_artifact

log = logging.getLogger(__name__)

CALIB_METHODS = q.METHODS
INT8_VARIANTS = ("auto",) + tuple(q.VARIANTS)
#: held-out crops drawn beside the calibration sample to check the result (no --val given)
DEFAULT_CHECK = 300


@dataclass
class ExportResult:
    """What an export produced, for the CLI summary and for callers such as the bench."""

    path: Path
    manifest: Manifest
    size_mb: float
    validation: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    next_command: str | None = None


class _Steps:
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


def tool_versions(names: set[str]) -> dict[str, str]:
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for n in sorted(names | {"edgefer", "numpy", "onnx", "onnxruntime"}):
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def command_line(model: str, target: str, precision: str, **kw: Any) -> str:
    """The ``edgefer export`` command that reproduces an export (recorded in the manifest)."""
    parts = ["edgefer", "export", model, "--target", target]
    if precision != "fp32":
        parts.append(f"--{precision}")
    flags = {
        "calib": "--calib", "calib_size": "--calib-size", "calib_method": "--calib-method", "calib_usage": "--calib-usage",
        "seed": "--seed", "arch": "--arch", "classes": "--classes", "device": "--device", "max_drop": "--max-drop",
        "val": "--val", "int8_variant": "--int8-variant", "output": "-o",
    }
    for k, flag in flags.items():
        v = kw.get(k)
        if v is None or v is False:
            continue
        if k == "classes":
            v = ",".join(v)
        parts += [flag, str(v)]
    if kw.get("nncf"):
        parts.append("--nncf")
    if kw.get("calib_detect"):
        parts.append("--calib-detect")
    return " ".join(shlex.quote(p) for p in parts)


def map_labels(data_classes: list[str], model_classes: list[str], labels: np.ndarray) -> np.ndarray:
    """Dataset label indices -> model output indices, by canonical emotion name."""
    mc = [canonical(c) for c in model_classes]
    dc = [canonical(c) for c in data_classes]
    if dc == mc:
        return labels
    missing = [c for c in set(dc[i] for i in np.unique(labels)) if c not in mc]
    if missing:
        raise EdgeferError(
            f"validation labels {', '.join(sorted(missing))} are not classes of the model ({', '.join(model_classes)})"
        )
    lut = np.array([mc.index(c) if c in mc else -1 for c in dc], np.int64)
    return lut[labels]


def _dir_size(p: Path) -> int:
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size


def _artifact_size(art_dir: Path, man: Manifest) -> float:
    total = 0
    for rel in man.files.values():
        for r in rel if isinstance(rel, list) else [rel]:
            p = art_dir / r
            if p.exists():
                total += _dir_size(p)
                data = p.with_name(p.name + ".data")
                if data.exists():
                    total += data.stat().st_size
    return total / 1e6


def default_output(src: SourceModel, target: str, precision: str, nncf: bool) -> Path:
    suffix = "-nncf" if nncf else ""
    return Path.cwd() / f"{src.manifest.name}-{target}-{precision}{suffix}"


def _install(staging: Path, out_dir: Path, files: list[str]) -> None:
    """Move produced files into the output folder, replacing what was there under those names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        dst = out_dir / name
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        shutil.move(str(staging / name), str(dst))


def export_model(
    model: str,
    target: str = "onnx",
    precision: str = "fp32",
    *,
    calib: str | None = None,
    calib_size: int = 300,
    calib_method: str | None = None,
    calib_usage: str | None = "Training",
    calib_detect: bool | None = None,
    seed: int = 0,
    arch: str | None = None,
    classes: list[str] | None = None,
    device: str | None = None,
    nncf: bool = False,
    max_drop: float | None = None,
    val: str | None = None,
    val_usage: str | None = "PublicTest",
    val_size: int | None = None,
    int8_variant: str = "auto",
    output: str | Path | None = None,
    progress: bool = True,
    check_size: int = DEFAULT_CHECK,
    build_engine: bool | None = None,
) -> ExportResult:
    """Export ``model`` to an artifact folder for ``target`` at ``precision``; see the module doc."""
    # ---- arguments
    if target not in TARGETS:
        raise EdgeferError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if precision not in PRECISIONS:
        raise EdgeferError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if calib_method is not None and calib_method not in CALIB_METHODS:
        raise EdgeferError(f"unknown calibration method {calib_method!r}; choose from {', '.join(CALIB_METHODS)}")
    if int8_variant not in INT8_VARIANTS:
        raise EdgeferError(f"unknown INT8 variant {int8_variant!r}; choose from {', '.join(INT8_VARIANTS)}")
    if calib_size < 1:
        raise EdgeferError("--calib-size must be at least 1")
    if max_drop is not None and val is None:
        raise EdgeferError("--max-drop needs labeled validation data: pass --val (fer2013.csv, class folders or .npz)")
    if max_drop is not None and max_drop < 0:
        raise EdgeferError("--max-drop is in accuracy points and must be >= 0")
    if nncf and not (target == "openvino" and precision == "int8"):
        raise EdgeferError("--nncf quantizes OpenVINO models: use it with --target openvino --int8")
    if target == "trt" and int8_variant not in ("auto", "s8s8", "s8s8-rr"):
        raise EdgeferError("TensorRT needs symmetric int8 (zero point 0): --int8-variant s8s8 or s8s8-rr")
    use_ac = target == "openvino" and precision == "int8" and max_drop is not None
    nncf = nncf or use_ac
    if device and target == "openvino":
        device = device.upper()

    cmd = command_line(
        model, target, precision, calib=calib, calib_size=calib_size if precision == "int8" and calib else None,
        calib_method=calib_method if precision == "int8" and calib and not nncf else None,
        calib_usage=None if calib_usage in (None, "Training") else calib_usage, calib_detect=calib_detect,
        seed=seed if seed else None, arch=arch, classes=classes, device=device, nncf=nncf, max_drop=max_drop, val=val,
        int8_variant=None if int8_variant == "auto" else int8_variant, output=output,
    )
    used: set[str] = set()
    messages: list[str] = []
    n_steps = 4 + (val is not None) + (calib is not None)
    steps = _Steps(n_steps, progress, f"export {target} {precision}")
    try:
        with tempfile.TemporaryDirectory(prefix="edgefer-export-") as tmp:
            work = Path(tmp)
            steps("load model")
            src = resolve_source(model, target, arch=arch, classes=classes, workdir=work)
            if src.origin == "checkpoint":
                used.add("torch")
            if src.notes.get("trt_ready"):
                return _build_engine_on_device(src, output, steps, messages, cmd)
            return _export(src, work, target, precision, calib, calib_size, calib_method, calib_usage, calib_detect,
                           seed, device, nncf, max_drop, use_ac, val, val_usage, val_size, int8_variant, output,
                           progress, check_size, build_engine, steps, used, messages, cmd)
    finally:
        steps.close()


def _export(src, work, target, precision, calib, calib_size, calib_method, calib_usage, calib_detect, seed, device,
            nncf, max_drop, use_ac, val, val_usage, val_size, int8_variant, output, progress, check_size,
            build_engine, steps, used, messages, cmd) -> ExportResult:
    from edgefer.calibration.datasets import open_labeled
    from edgefer.calibration.samples import collect

    from . import graph
    from .validate import compare, predict_artifact, predict_onnxruntime, predict_openvino, simulate_qdq

    man0 = src.manifest
    spec = man0.input
    classifier = man0.kind == "classifier"
    coreml_int8_weights_only = target == "coreml" and precision == "int8"
    if calib_method is None:  # detectors: min/max ranges of whole frames are set by rare outliers
        calib_method = "percentile" if man0.kind == "detector" else "minmax"
    if precision == "int8" and man0.kind == "detector":
        return _export_detector_int8(src, work, target, calib, calib_size, calib_method, seed, device, int8_variant,
                                     output, steps, used, messages, cmd)
    if precision == "int8" and not classifier:
        raise EdgeferError(f"INT8 export of {man0.kind}s is not supported; use --fp16")
    if precision == "int8" and not calib and not coreml_int8_weights_only:
        raise EdgeferError(
            "--int8 needs calibration data: pass --calib with face data the model will see, e.g. "
            "fer2013.csv, a .npz of faces (edgefer calibrate), a folder of class folders, or a video/photos of faces "
            f"(--calib-size N, default {calib_size})"
        )
    if target == "coreml" and src.torch_factory is None:
        if man0.arch:
            # a zoo architecture whose module did not import: say why (torch missing -> the CLI names
            # the extra that installs it), rather than that no torch module is known
            import torch  # noqa: F401

            from .source import zoo_module

            zoo_module(man0.arch)
        raise EdgeferError(
            f"Core ML export converts the torch module, and edgefer has none for {man0.name} "
            f"({f'a {man0.kind}' if man0.arch else 'its manifest names no zoo architecture'}): "
            "export its checkpoint (edgefer export model.pth --arch NAME --target coreml)"
        )

    # ---- validation data (labeled) and calibration crops
    val_x = val_y = None
    if val is not None:
        if not classifier:
            raise EdgeferError("--val measures classifiers; the model is a " + man0.kind)
        steps("read validation data")
        table = open_labeled(val, usage=val_usage)
        idx = np.arange(len(table))
        if val_size and val_size < len(idx):
            idx = np.sort(np.random.default_rng(seed).permutation(len(idx))[:val_size])
        val_x = resize_faces(table.fetch(idx), spec)
        val_y = map_labels(table.classes, man0.classes, table.labels[idx])
    cal = check = None
    # where the check's faces come from: a split the model was not trained on when the data has one
    # (FER2013 CSV PublicTest rows, Kaggle test/, a publictest.npz beside train.npz), else held-out
    # crops of the calibration data itself, whose split is named so nobody reads it as test accuracy
    split = check_split(calib, calib_usage) if calib and val_x is None and classifier else None
    other = split if split is not None and split.source is not None and check_size > 0 else None
    if precision == "int8" and calib and not (target == "coreml" and not _coreml_calibrates()):
        steps("collect calibration crops")
        want_check = 0 if (val_x is not None or other is not None) else check_size
        cs = collect(calib, spec, man0.crop, count=calib_size, seed=seed, usage=calib_usage, detect=calib_detect,
                     progress=progress, model_classes=man0.classes, holdout=want_check)
        n_cal = min(calib_size, len(cs))
        cal, check = cs.split(n_cal)
        if other is not None:
            check = collect(other.source, spec, man0.crop, count=check_size, seed=seed, usage=other.usage,
                            detect=calib_detect, progress=progress, model_classes=man0.classes)
        if cal.labels is not None and cal.classes:
            counts = np.bincount(cal.labels, minlength=len(cal.classes))
            cal.provenance["per_class"] = {c: int(k) for c, k in zip(cal.classes, counts)}
        if len(check) == 0 and val_x is None:
            check = cal
            messages.append(f"only {len(cal)} calibration crops: checked on the calibration crops themselves (no held-out faces)")
    elif calib and val_x is None and classifier and target != "coreml":
        # FP32/FP16 need no calibration, but faces given with --calib still check the result
        steps("collect check crops")
        src_, usage_ = (other.source, other.usage) if other is not None else (calib, calib_usage)
        check = collect(src_, spec, man0.crop, count=check_size, seed=seed, usage=usage_, detect=calib_detect,
                        progress=progress, model_classes=man0.classes)
    # what the result is checked on: --val, else held-out calibration crops, else the calibration crops
    chk_split = None
    if val_x is not None:
        chk_x, chk_y, chk_desc = val_x, val_y, f"--val {Path(val).name} ({len(val_x)} faces)"
        chk_split = "--val"
    elif check is not None:
        chk_x = check.model_input(spec)
        chk_y = None
        if check.labels is not None and check.classes and classifier:
            try:
                chk_y = map_labels(check.classes, man0.classes, check.labels)
            except EdgeferError:
                chk_y = None
        if other is not None:
            chk_split = other.split
            chk_desc = (f"{len(chk_x)} faces of the {other.split} split of {other.name} "
                        f"(not the calibration data's {split.calib_split} split)")
        else:
            chk_split = split.calib_split if split is not None else None
            held = "held-out " if cal is not None and check is not cal else ""
            where = f"the {chk_split} split of {Path(calib).name}" if chk_split else Path(calib).name
            chk_desc = f"{len(chk_x)} {held}crops from {where}"
            if chk_split == "Training":
                chk_desc += " (training faces: the model may have learnt them, so top-1 reads high)"
            if chk_y is not None and chk_split != "PublicTest" and chk_split != "PrivateTest":
                messages.append(
                    f"the check's faces come from {where}, not from a test split: its top-1 is not the model's "
                    "accuracy; pass --val DATA (e.g. fer2013.csv, whose PublicTest rows are used, or publictest.npz) "
                    "to measure it on faces the model was not trained on")
    else:
        chk_x = chk_y = None
        chk_desc = None

    # ---- the FP32 graph everything starts from
    steps("simplify FP32 graph")
    fp32 = graph.simplify(src.onnx_path, work / "fp32.onnx")
    ref = predict_onnxruntime(fp32, chk_x) if chk_x is not None else None

    staging = work / "out"
    staging.mkdir()
    files: dict[str, str] = {}
    extra: dict[str, Any] = {}
    calibration: dict[str, Any] | None = None
    cpu = q.cpu_profile()
    cal_x = cal.model_input(spec) if cal is not None else None
    if cal is not None:
        calibration = {**{k: v for k, v in cal.provenance.items() if k not in ("requested",)},
                       "method": "nncf" if nncf else calib_method, "count": len(cal)}
        if check is not None and check is not cal and val_x is None and other is None:
            calibration["held_out_checked"] = len(check)

    steps(f"convert to {target} {precision}")
    next_command = None
    if target == "onnx":
        used.add("onnxruntime")
        if precision == "fp32":
            shutil.copy(fp32, staging / "model.onnx")
        elif precision == "fp16":
            from .fp16 import convert

            used.add("onnxconverter-common")
            convert(fp32, staging / "model.onnx")
        else:
            choice = q.choose_variant("onnx", fp32, work, spec.name, cal_x, chk_x, ref, predict_onnxruntime, simulate_qdq,
                                      method=calib_method, forced=int8_variant, cpu=cpu, check_labels=chk_y,
                                      check_desc=chk_desc)
            shutil.copy(choice.path, staging / "model.onnx")
            extra["int8"] = _int8_extra(choice, cpu, "onnxruntime", chk_desc)
        files["model"] = "model.onnx"
    elif target == "openvino":
        from .openvino_export import int8_layer_count, nncf_quantize, save_ir

        used.add("openvino")
        xml = staging / "model.xml"
        if precision in ("fp32", "fp16"):
            save_ir(fp32, xml, fp16=precision == "fp16")
            extra["openvino"] = {"compress_to_fp16": precision == "fp16"}
        elif nncf:
            used.add("nncf")
            qm, report = nncf_quantize(fp32, cal_x, overflow_fix=q.overflow_risk(cpu),
                                       val_inputs=val_x if use_ac else None, val_labels=val_y if use_ac else None,
                                       max_drop=max_drop if use_ac else None)
            report["fake_quantize_ops"] = int8_layer_count(qm).get("FakeQuantize", 0)
            report["reason"] = (
                f"{cpu['cpu']}: no VNNI, NNCF overflow fix on every layer (7-bit weights)" if q.overflow_risk(cpu)
                else f"{cpu['cpu']}: VNNI present, NNCF defaults"
            )
            save_ir(qm, xml, fp16=False)
            extra["int8"] = {**report, "cpu": cpu["cpu"], "vnni": cpu["vnni"]}
        else:
            import openvino as ov

            def ov_predict(p: Path, x: np.ndarray) -> np.ndarray:
                return predict_openvino(ov.convert_model(str(p)), x, device or "CPU")

            choice = q.choose_variant("openvino", fp32, work, spec.name, cal_x, chk_x, ref, ov_predict, simulate_qdq,
                                      method=calib_method, forced=int8_variant, cpu=cpu, check_labels=chk_y,
                                      check_desc=chk_desc)
            save_ir(choice.path, xml, fp16=False)
            extra["int8"] = _int8_extra(choice, cpu, "openvino", chk_desc)
        files["model"] = "model.xml"
        files["weights"] = "model.bin"
    elif target == "trt":
        from .trt_export import build_into, device_command, readiness, tensorrt_here

        if precision == "fp32":
            shutil.copy(fp32, staging / "model.onnx")
        elif precision == "fp16":
            from .fp16 import convert

            used.add("onnxconverter-common")
            convert(fp32, staging / "model.onnx")
            shutil.copy(fp32, staging / "model_fp32.onnx")
            files["onnx_fp32"] = "model_fp32.onnx"
        else:
            choice = q.choose_variant("trt", fp32, work, spec.name, cal_x, chk_x, ref, predict_onnxruntime, simulate_qdq,
                                      method=calib_method, forced=int8_variant, cpu=cpu, check_labels=chk_y,
                                      check_desc=chk_desc)
            shutil.copy(choice.path, staging / "model.onnx")
            extra["int8"] = _int8_extra(choice, cpu, "tensorrt", chk_desc)
            if chk_x is not None:  # what the graph computes exactly; TensorRT's int8 kernels should match it
                extra["int8"]["simulated"] = compare(simulate_qdq(staging / "model.onnx", chk_x), ref, chk_y)
        findings, summ = readiness(staging / "model.onnx")
        extra["trt_readiness"] = findings
        messages.append(f"model.onnx: {summ}")
        here, why = tensorrt_here()
        if build_engine is None:
            build_engine = here
        if build_engine:
            if not here:
                raise EdgeferError(f"cannot build a TensorRT engine here: {why}")
            used.add("tensorrt")
            eng, meta = build_into(staging, "model.onnx", precision, files.get("onnx_fp32"))
            files["model"] = eng
            files["onnx"] = "model.onnx"
            extra["trt"] = meta
        else:
            files["model"] = "model.onnx"
            extra["trt_build"] = {"status": "TensorRT-ready ONNX; build the engine on the device", "why_not_here": why}
    elif target == "coreml":
        from .coreml_export import check_package, convert, inspect_package

        used.update({"coremltools", "torch"})
        pkg = staging / "model.mlpackage"
        report = convert(src.torch_factory, spec, pkg, precision, cal_x, output_name=man0.output)
        insp = inspect_package(pkg)
        problems = check_package(insp, spec, len(man0.classes or []), precision, output_name=man0.output)
        if problems:
            raise EdgeferError("the Core ML package does not fit the manifest: " + "; ".join(problems))
        report["validated"] = {k: insp[k] for k in ("model_type", "specification_version", "inputs", "outputs",
                                                   "int8_weight_ops", "activation_quant_ops", "compute")}
        report["ops"] = insp["ops"]
        extra["coreml"] = report
        files["model"] = "model.mlpackage"
        if precision == "int8" and calibration is None:
            calibration = {"method": "none (weight-only int8, no activation calibration)"}

    # ---- manifest, then load it back through the runtime and compare with FP32
    steps("validate")
    man = Manifest.from_dict(man0.to_dict())
    man.target = target
    man.precision = precision
    man.files = files
    man.calibration = calibration
    man.provenance = _provenance(src, cmd, used, cpu)
    extra["check_data"] = chk_desc
    man.extra = {**(man0.extra or {}), **extra}
    write_artifact(man, staging)
    check_artifact(staging, device)  # one inference as the runtime loads it: NaN/Inf outputs and misfits refused
    validation = None
    if chk_x is not None and target in ("onnx", "openvino"):
        opts = {"device": device} if (device and target == "openvino") else {}
        pred, binfo = predict_artifact(staging, chk_x, "onnxruntime" if target == "onnx" else "openvino", **opts)
        validation = {**compare(pred, ref, chk_y), "on": chk_desc, "split": chk_split, "backend": binfo}
        man.extra["validation"] = validation
        if target == "openvino" and precision == "int8":
            executes = binfo.get("compute_layers", {})
            if not executes.get("int8"):
                messages.append(f"warning: OpenVINO runs no layer in int8 on {binfo.get('device')} ({executes})")
    elif chk_x is not None and target == "trt" and "int8" in extra and "simulated" in extra["int8"]:
        validation = {**extra["int8"]["simulated"], "on": chk_desc, "split": chk_split,
                      "backend": "onnxruntime QDQ simulation (TensorRT not run)"}

    out_dir = Path(output) if output else default_output(src, target, precision, nncf)
    if out_dir.resolve() == (src.artifact.root.resolve() if src.artifact else None):
        raise EdgeferError(f"the output folder {out_dir} is the source artifact's folder; choose another -o")
    produced = [f for f in files.values()] + (["model.bin"] if target == "openvino" else [])
    _install(staging, out_dir, sorted(set(produced)))
    write_artifact(man, out_dir)
    size = _artifact_size(out_dir, man)
    if target == "trt" and files["model"].endswith(".onnx"):
        next_command = device_command(Path(out_dir.name))  # the folder as copied to the device: no path of this machine
    result = ExportResult(out_dir, man, size, validation, messages, next_command)
    if max_drop is not None and validation is not None and "drop_points" in validation:
        if validation["drop_points"] > max_drop:
            raise CheckFailed(
                f"{out_dir.name}: top-1 drop {validation['drop_points']:.2f} points > --max-drop {max_drop} "
                f"({validation['top1']:.2%} vs FP32 {validation['fp32_top1']:.2%} on {chk_desc}); artifact written anyway"
            )
    return result


@dataclass
class CheckSplit:
    """Which split the check's faces come from (see :func:`check_split`)."""

    calib_split: str | None  # the calibration data's split: Training, PublicTest, PrivateTest, or None (unknown)
    source: str | None = None  # another source with a split the model was not trained on, or None
    usage: str | None = None  # the usage (FER2013 CSV rows / Kaggle folders) to read from ``source``
    split: str | None = None  # the split of ``source``

    @property
    def name(self) -> str:
        return Path(self.source).name if self.source else ""


#: words in an .npz name -> the FER2013-style split it holds
_NPZ_SPLITS = (("privatetest", "PrivateTest"), ("publictest", "PublicTest"), ("test", "PublicTest"),
               ("val", "PublicTest"), ("train", "Training"))


def _npz_split(name: str) -> str | None:
    low = name.lower()
    for word, split in _NPZ_SPLITS:
        if word in low:
            return split
    return None


def check_split(calib: str, calib_usage: str | None) -> CheckSplit | None:
    """The split of the calibration data, and a test split of the same data to check on instead.

    Held-out calibration crops are held out from *calibration*; drawn from a Training split,
    they are faces the model was most likely trained on, and a top-1 on them (86.67% for
    EdgeNet, against 69.66% on PublicTest) reads as an accuracy it does not have. So: a FER2013
    CSV with PublicTest rows, a Kaggle root with a test/ (or val/) folder, or a ``train*.npz``
    with a ``publictest*.npz`` / ``test*.npz`` / ``val*.npz`` beside it is checked on that split;
    other data is checked on held-out calibration crops whose split is named where known.
    """
    from edgefer.datasets import class_folder_root, open_labeled

    p = Path(calib)
    usage = calib_usage or "Training"
    if p.is_file() and p.suffix.lower() == ".csv":
        if usage != "Training":
            return CheckSplit(usage)
        try:
            open_labeled(p, usage="PublicTest")  # the file has PublicTest rows (FER2013's Usage column)
        except EdgeferError:
            return CheckSplit(None)  # no Usage column, or no PublicTest rows: the split is unknown
        return CheckSplit("Training", str(p), "PublicTest", "PublicTest")
    if p.is_dir():
        train_root, test_root = class_folder_root(p, "Training"), class_folder_root(p, "PublicTest")
        if train_root is None or test_root is None or train_root.resolve() == test_root.resolve():
            return CheckSplit(None)
        if usage != "Training":
            return CheckSplit("PublicTest")
        return CheckSplit("Training", str(p), "PublicTest", "PublicTest")
    if p.is_file() and p.suffix.lower() == ".npz":
        split = _npz_split(p.stem)
        if split != "Training":
            return CheckSplit(split)
        tests = [q for q in p.parent.glob("*.npz") if q != p and _npz_split(q.stem) in ("PublicTest", "PrivateTest")]
        for q in sorted(tests, key=lambda q: (_npz_split(q.stem) != "PublicTest", q.name)):
            return CheckSplit("Training", str(q), None, _npz_split(q.stem))
        return CheckSplit("Training")
    return None  # videos and photos: unlabeled, the check is agreement with FP32 only


def _provenance(src: SourceModel, cmd: str, used: set[str], cpu: dict[str, Any]) -> dict[str, Any]:
    """An exported artifact's provenance: what it came from, how, with which tools, on what."""
    man0 = src.manifest
    return {
        "source": {"ref": src.ref, "kind": src.origin, "sha256": src.checksum, "name": man0.name, "arch": man0.arch},
        "command": cmd,
        "tools": tool_versions(used),
        "machine": {k: cpu[k] for k in ("machine", "cpu", "vnni")},
        "base": {k: v for k, v in dict(man0.provenance or {}).items() if k != "tools"},
    }


def _export_detector_int8(src, work, target, calib, calib_size, calib_method, seed, device, int8_variant, output,
                          steps, used, messages, cmd) -> ExportResult:
    """INT8 detector: calibrated on whole frames, checked on detections (export/detector_int8.py)."""
    from . import graph
    from .detector_int8 import DET_SIZE, check_detector, export_detector_int8

    man0 = src.manifest
    steps("simplify FP32 graph")
    fp32 = graph.simplify(src.onnx_path, work / "fp32.onnx")
    staging = work / "out"
    staging.mkdir()
    cpu = q.cpu_profile()
    steps(f"convert to {target} int8")
    files, extra, calibration, chk = export_detector_int8(
        src, fp32, work, target, calib, calib_size, calib_method, seed, DET_SIZE, device, steps, used, messages, cpu,
        None if int8_variant == "auto" else int8_variant, man0, staging)
    steps("validate")
    man = Manifest.from_dict(man0.to_dict())
    man.target, man.precision, man.files, man.calibration = target, "int8", files, calibration
    man.provenance = _provenance(src, cmd, used, cpu)
    man.extra = {**(man0.extra or {}), **extra}
    write_artifact(man, staging)
    check_artifact(staging, device)  # one inference as the runtime loads it: NaN/Inf outputs and misfits refused
    validation = None
    if target in ("onnx", "openvino"):
        ref = src.artifact if src.artifact is not None else src.ref
        validation = check_detector(ref, staging, target, chk["check_frames"], DET_SIZE, device)
        validation["on"] = f"{validation['frames']} held-out frames of {Path(calib).name} at a {DET_SIZE} px long side"
        man.extra["validation"] = validation
        write_artifact(man, staging)
    out_dir = Path(output) if output else default_output(src, target, "int8", False)
    if src.artifact is not None and out_dir.resolve() == src.artifact.root.resolve():
        raise EdgeferError(f"the output folder {out_dir} is the source artifact's folder; choose another -o")
    produced = sorted(set(files.values()))
    _install(staging, out_dir, produced)
    write_artifact(man, out_dir)
    next_command = None
    if target == "trt":
        from .trt_export import device_command

        next_command = device_command(Path(out_dir.name))  # the folder as copied to the device: no path of this machine
    return ExportResult(out_dir, man, _artifact_size(out_dir, man), validation, messages, next_command)


def _coreml_calibrates() -> bool:
    from .coreml_export import can_predict

    return can_predict()


def _int8_extra(choice: q.VariantChoice, cpu: dict[str, Any], runtime: str, chk_desc: str | None) -> dict[str, Any]:
    return {
        **q.describe_variant(choice.variant),
        "format": "QDQ (explicit quantization)",
        "chosen_for": runtime,
        "reason": choice.reason,
        "measured": choice.scores,
        "measured_on": chk_desc,
        "cpu": cpu["cpu"],
        "vnni": cpu["vnni"],
        "tensorrt_ready": q.VARIANTS[choice.variant]["symmetric"] and q.VARIANTS[choice.variant]["activation"] == "int8",
    }


def _build_engine_on_device(src: SourceModel, output, steps, messages, cmd) -> ExportResult:
    """``edgefer export TRT_READY_ARTIFACT --target trt`` on the device: build its engine."""
    from .trt_export import build_into, readiness, tensorrt_here

    here, why = tensorrt_here()
    if not here:
        raise EdgeferError(
            f"{src.artifact.describe()} is TensorRT-ready; building its engine needs TensorRT and a GPU, and this machine has none ({why})"
        )
    art = src.artifact
    man = Manifest.from_dict(art.manifest.to_dict())
    out_dir = Path(output) if output else art.root
    onnx_rel = man.files.get("onnx") or man.files["model"]
    if out_dir.resolve() != art.root.resolve():
        out_dir.mkdir(parents=True, exist_ok=True)
        for role, rel in man.files.items():
            if role != "model" or rel.endswith(".onnx"):
                shutil.copy(art.root / rel, out_dir / rel)
    steps("readiness check")
    findings, summ = readiness(out_dir / onnx_rel)
    steps("build engine")
    eng, meta = build_into(out_dir, onnx_rel, man.precision, man.files.get("onnx_fp32"))
    man.files["model"] = eng
    man.files["onnx"] = onnx_rel
    man.extra = {**(man.extra or {}), "trt": meta, "trt_readiness": findings}
    man.extra.pop("trt_build", None)
    man.provenance = {**man.provenance, "engine_command": cmd, "tools": {**man.provenance.get("tools", {}), **tool_versions({"tensorrt"})}}
    write_artifact(man, out_dir)
    messages.append(f"engine built for {meta.get('gpu')} (sm {meta.get('compute_capability')}), TensorRT {meta['tensorrt']}")
    return ExportResult(out_dir, man, _artifact_size(out_dir, man), None, messages, None)
