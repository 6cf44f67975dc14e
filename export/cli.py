"""`edgefer export`: a model -> an artifact for onnx / openvino / trt / coreml at fp32 / fp16 / int8."""

from __future__ import annotations

import click

from edgefer.artifact import bundled_names
from edgefer.errors import EdgeferError

from .api import CALIB_METHODS, INT8_VARIANTS, export_model
from .ranges import peak_rss_mb
from .targets import TARGETS


def needed_modules(model: str, target: str, precision: str, nncf: bool) -> list[str]:
    """Optional packages this export will import, checked before any work starts (an INT8
    OpenVINO export would otherwise calibrate for minutes and then fail on ``import openvino``)."""
    from pathlib import Path

    from .source import CHECKPOINT_SUFFIXES

    mods = ["onnx"]
    if Path(model).suffix.lower() in CHECKPOINT_SUFFIXES:
        mods.append("torch")
    if target in TARGETS:
        mods += TARGETS[target].modules(precision, nncf)
    return list(dict.fromkeys(mods))


def _classes(ctx, param, value):
    if value is None:
        return None
    names = [c.strip() for c in value.split(",") if c.strip()]
    if not names:
        raise click.BadParameter("give class names separated by commas")
    if len(set(names)) != len(names):
        raise click.BadParameter("class names must be unique")
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--target", default="onnx", show_default=True, metavar="[" + "|".join(TARGETS) + "]",
              help="Runtime the artifact is for.")
@click.option("--int8", is_flag=True, help="INT8 (explicit QDQ quantization; needs --calib).")
@click.option("--fp16", is_flag=True, help="FP16 weights and arithmetic, float32/uint8 I/O kept (default: FP32).")
@click.option("--calib", metavar="DATA", default=None,
              help="Calibration faces: fer2013.csv, .npz (edgefer calibrate), class folders, a video, photos or a folder of them.")
@click.option("--calib-size", type=click.IntRange(min=1), default=300, show_default=True, help="Calibration crops (class-balanced when labeled).")
@click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=None,
              help="Activation range estimation (default: minmax for classifiers, percentile for detectors).")
@click.option("--calib-usage", type=click.Choice(["Training", "PublicTest", "PrivateTest"]), default="Training", show_default=True,
              help="FER2013 CSV rows (or Kaggle train/test folders) to calibrate on.")
@click.option("--calib-detect", is_flag=True, default=None, help="Run the face detector on class-folder images too (full photos, not crops).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--arch", default=None, help="Zoo architecture of a checkpoint (.pth/.pt); guessed from its keys when omitted.")
@click.option("--classes", callback=_classes, default=None, metavar="A,B,C", help="Class names in output order (checkpoints).")
@click.option("--device", default=None, help="OpenVINO device to validate on (CPU, GPU, NPU, AUTO).")
@click.option("--nncf", is_flag=True, help="OpenVINO INT8 with NNCF post-training quantization instead of the QDQ graph.")
@click.option("--max-drop", type=float, default=None, metavar="P",
              help="Max top-1 drop in points on --val: NNCF accuracy control for OpenVINO INT8, a gate (exit 1) elsewhere.")
@click.option("--val", metavar="DATA", default=None, help="Labeled validation faces (fer2013.csv, class folders, .npz).")
@click.option("--val-usage", type=click.Choice(["Training", "PublicTest", "PrivateTest"]), default="PublicTest", show_default=True,
              help="FER2013 CSV rows used by --val.")
@click.option("--val-size", type=click.IntRange(min=1), default=None, help="Validate on a random subset of N faces.")
@click.option("--int8-variant", type=click.Choice(INT8_VARIANTS), default="auto", show_default=True,
              help="QDQ variant: auto measures which runs correctly on the target and this CPU.")
@click.option("--cam", is_flag=True,
              help="Add the class activation map output (heatmaps for run --explain / explain); see export/cam_cli.py.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Artifact folder (default ./NAME-TARGET-PRECISION).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def export(ctx, model, target, int8, fp16, calib, calib_size, calib_method, calib_usage, calib_detect, seed, arch, classes,
           device, nncf, max_drop, val, val_usage, val_size, int8_variant, cam, output, as_json):
    """Export MODEL to an artifact folder (model files + manifest.json).

    MODEL: a bundled name (BUNDLED_NAMES), an artifact (folder, manifest,
    or .onnx with a manifest), or a PyTorch checkpoint of a zoo architecture (--arch).

    \b
    Examples:
      edgefer export mini-xception --target openvino --int8 --calib fer2013.csv
      edgefer export mini-xception --target onnx --fp16 -o out/mx-fp16
      edgefer export mini-xception --target openvino --int8 --nncf --calib train.npz --val fer2013.csv --max-drop 1
      edgefer export mini-xception --target trt --int8 --calib clip.mp4
      edgefer export my_model.pth --arch mini-xception --classes a,b,c --target coreml --fp16
      edgefer export edgenet --target openvino --int8 --calib train.npz --cam   # + heatmaps (run --explain)
    """
    quiet = (ctx.obj or {}).get("quiet", False)
    if int8 and fp16:
        raise EdgeferError("--int8 and --fp16 exclude each other: pick one precision")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    from edgefer.extras import require

    require(needed_modules(model, target, precision, nncf), "export",
            what=f"`edgefer export --target {target}{'' if precision == 'fp32' else ' --' + precision}`")
    run_export = export_model
    if cam:  # the same export from the model's CAM twin or CAM graph (edgefer.export.cam_cli)
        from .cam_cli import export_with_cam as run_export
    res = run_export(
        model, target, precision, calib=calib, calib_size=calib_size, calib_method=calib_method,
        calib_usage=calib_usage, calib_detect=calib_detect, seed=seed, arch=arch, classes=classes, device=device,
        nncf=nncf, max_drop=max_drop, val=val, val_usage=val_usage, val_size=val_size, int8_variant=int8_variant,
        output=output, progress=not quiet,
    )
    peak = peak_rss_mb()  # the whole export, calibration included (issue: 23 GB before streaming ranges)
    if as_json:
        import json

        click.echo(json.dumps({"path": str(res.path), "size_mb": round(res.size_mb, 3), "next_command": res.next_command,
                               "peak_rss_mb": peak, "manifest": res.manifest.to_dict()}, indent=2))
        return
    m = res.manifest
    click.echo(f"wrote {res.path}  ({m.name}, {m.target}, {m.precision}, {res.size_mb:.2f} MB)")
    if m.calibration and "count" in m.calibration:
        c = m.calibration
        if c.get("kind") == "frames":
            click.echo(f"  calibration  {c['count']} frames from {c.get('source')} at {c['input_hw'][1]}x{c['input_hw'][0]} "
                       f"(method {c.get('method')})")
        else:
            click.echo(f"  calibration  {c['count']} crops from {c.get('source_name', c.get('source'))} "
                       f"({c.get('kind')}, method {c.get('method')}, seed {c.get('seed')})")
    i8 = (m.extra or {}).get("int8")
    if i8:
        if "variant" in i8:
            click.echo(f"  int8         {i8['variant']}: activations {i8['activations']}; weights {i8['weights']}")
        else:
            click.echo(f"  int8         {i8.get('algorithm')}: overflow fix {i8.get('overflow_fix')}, {i8.get('fake_quantize_ops')} FakeQuantize ops")
        if i8.get("reason"):
            click.echo(f"               {i8['reason']}")
    v = res.validation
    if v and "recall_vs_fp32" in v:  # a detector: detections compared with the FP32 detector's
        iou = "-" if v.get("mean_iou") is None else f"{v['mean_iou']:.3f}"
        click.echo(f"  check        {v['matched']} of the FP32 detector's {v['fp32_faces']} faces found again "
                   f"(recall {v['recall_vs_fp32']:.1%}; {v['recall_confident_vs_fp32']:.1%} of the "
                   f"{v['fp32_confident_faces']} scoring >= {v['confident_score']}; precision {v['precision_vs_fp32']:.1%}, "
                   f"mean IoU {iou}) on {v['on']}")
    elif v:
        line = f"  check        agreement with FP32 {v['agreement']:.2%}"
        if "top1" in v:
            line += f", top-1 {v['top1']:.2%} (FP32 {v['fp32_top1']:.2%}, drop {v['drop_points']:+.2f} points)"
        click.echo(line + f" on {v['on']}")
        b = v.get("backend")
        if isinstance(b, dict) and b.get("compute_layers"):
            click.echo(f"  executes     {b.get('executes')} on {b.get('device')} (compute layers: {b['compute_layers']}, "
                       f"inference precision {b.get('inference_precision')})")
    cm = (m.extra or {}).get("coreml")
    if cm:
        val_ = cm.get("validated", {})
        click.echo(f"  coreml       {val_.get('model_type')} spec {val_.get('specification_version')}, compute {val_.get('compute')}, "
                   f"int8 weight ops {val_.get('int8_weight_ops')}; activations {cm.get('activations', cm.get('compute_precision'))}")
    kids = f", child processes {peak['children'] / 1024:.2f} GB" if peak["children"] >= 1 else ""
    click.echo(f"  memory       peak RSS {peak['self'] / 1024:.2f} GB{kids}")
    for msg in res.messages:
        click.echo(f"  note         {msg}")
    if res.next_command:
        click.echo("  TensorRT is not installed here; on the device, build the engine with:")
        click.echo(f"    {res.next_command}")


# the bundled names come from edgefer.artifact.BUNDLED, the one list of them
export.help = (export.help or "").replace("BUNDLED_NAMES", bundled_names())

__all__ = ["export", "EdgeferError"]
