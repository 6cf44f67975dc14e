"""`edgefer bench`: FPS, latency and accuracy drop for every backend x precision."""

from __future__ import annotations


import click

from ..artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR
from ..errors import CheckFailed, EdgeferError


def _csv_list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    aliases = {"tensorrt": "trt", "ort": "onnx", "onnxruntime": "onnx", "ov": "openvino"}
    items = [aliases.get(v, v) for v in items]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise EdgeferError(f"{what} must be a comma list of {', '.join(allowed)}, not {value!r}")
    return list(dict.fromkeys(items))


def _batches(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise EdgeferError(f"--batch must be a comma list of integers, not {value!r}") from None
    if not out or min(out) < 1:
        raise EdgeferError(f"--batch sizes must be >= 1, not {value!r}")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", default=DEFAULT_CLASSIFIER, show_default=True,
              help="Classifier: bundled name, artifact, ONNX file or zoo checkpoint (exported as needed).")
@click.option("--arch", default=None, help="Zoo architecture of a checkpoint without a sidecar.")
@click.option("--detector", default=DEFAULT_DETECTOR, show_default=True, help="Detector for --video.")
@click.option("--targets", default="onnx,openvino,trt,coreml", show_default=True, help="Targets to try.")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True, help="Precisions to try.")
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(),
              help="An existing artifact (or ensemble manifest) to add as a row; repeatable.")
@click.option("--data", type=click.Path(), default=None, help="Labeled faces for accuracy: FER2013 csv, class folders, .npz.")
@click.option("--usage", "data_usage", default="PublicTest", show_default=True, help="FER2013 csv rows scored.")
@click.option("--data-size", type=click.IntRange(min=1), default=None, help="Score a random subset of N faces (seed 0).")
@click.option("--calib", type=click.Path(), default=None, help="Calibration faces for INT8 exports.")
@click.option("--calib-size", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--through-detector", "through", is_flag=True,
              help="With --data: also score each face pasted into a frame, found by the detector and cropped as `run` crops it.")
@click.option("--through-sizes", default="64,112,192", show_default=True, help="Pasted face sizes (px) for --through-detector.")
@click.option("--through-noise", type=click.FloatRange(min=0, max=64), default=0.0, show_default=True,
              help="Camera noise (gray levels, per pixel) over each pasted frame, face included, for --through-detector.")
@click.option("--video", type=click.Path(), default=None, help="Also time the full detect -> classify loop on this file.")
@click.option("--video-frames", type=click.IntRange(min=0), default=300, show_default=True, help="Frames of --video (0: all).")
@click.option("--explain", is_flag=True, help="With --video: run the loop with CAM heatmaps and report their cost per frame.")
@click.option("--batch", "batch", default="1,32", show_default=True, help="Batch sizes timed.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Threads per runtime (0: runtime default).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Timing per batch size, over all repeats.")
@click.option("--repeats", type=click.IntRange(min=1, max=100), default=3, show_default=True,
              help="Timing rounds per row, interleaved across rows; the table's spread is p90/p10 of their medians "
                   "and a note warns above 1.2x (a busy machine).")
@click.option("--workdir", type=click.Path(), default=None, help="Keep exported artifacts here (default: temporary).")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Write results as JSON (schema 1).")
@click.option("--csv", "csv_path", type=click.Path(), default=None, help="Write results as CSV.")
@click.option("--plot", "plot_path", type=click.Path(), default=None, help="Write an accuracy-vs-latency PNG.")
@click.option("--max-drop", type=click.FloatRange(min=0), default=None,
              help="Exit 1 when an FP16 or INT8 row loses more than P top-1 points against FP32.")
@click.pass_context
def bench(ctx, model, arch, detector, targets, precisions, artifacts, data, data_usage, data_size, calib, calib_size,
          calib_method, through, through_sizes, through_noise, video, video_frames, explain, batch, threads, min_seconds, repeats, workdir, json_path, csv_path, plot_path, max_drop):
    """Measure latency, FPS and the accuracy lost to FP16/INT8 on every installed runtime.

    \b
    Examples:
      edgefer bench
      edgefer bench --data fer2013.csv --calib fer2013.csv --json bench.json --plot bench.png
      edgefer bench --targets onnx,openvino --precisions fp32,int8 --calib train.npz --data test.npz --max-drop 1
      edgefer bench --video clip.mp4 --targets onnx --precisions fp32
    """
    from pathlib import Path

    from .. import bench as B

    quiet = bool((ctx.obj or {}).get("quiet"))
    if explain and not video:
        raise EdgeferError("--explain measures the cost of heatmaps in the video loop: pass --video too")
    if through and not data:
        raise EdgeferError("--through-detector scores labelled faces through the detector: pass --data too")
    try:
        sizes = [int(v) for v in through_sizes.split(",") if v.strip()] if through else []
    except ValueError:
        sizes = [0]
    if through and (not sizes or any(not 32 <= v <= 320 for v in sizes)):
        raise EdgeferError(f"--through-sizes must be a comma list of 32-320 px (a 640x480 frame with its margin), "
                           f"not {through_sizes!r}")
    if max_drop is not None and not data:
        raise EdgeferError("--max-drop needs --data (labeled faces) to measure the drop")
    for p, what in ((data, "--data"), (calib, "--calib"), (video, "--video")):
        if p and not Path(p).exists():
            raise EdgeferError(f"{what} {p}: no such file or folder")
    cfg = B.BenchConfig(
        model=model, detector=detector, targets=_csv_list(targets, B.TARGETS, "--targets"),
        precisions=_csv_list(precisions, B.PRECISIONS, "--precisions"), artifacts=list(artifacts), data=data,
        data_usage=data_usage, data_size=data_size, calib=calib, calib_size=calib_size, calib_method=calib_method,
        arch=arch, video=video, video_frames=video_frames or None, explain=explain, batches=_batches(batch), threads=threads or None,
        min_seconds=min_seconds, repeats=repeats, workdir=workdir, through_sizes=sizes, through_noise=through_noise,
        progress=not quiet,  # a bar on a terminal, plain lines in a log (edgefer.progress)
    )

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    b = B.Bench(cfg, say=say)
    try:
        result = b.run()
    finally:
        b.close()
    click.echo(B.table(result))
    if json_path:
        say(f"wrote {B.write_json(result, json_path)}")
    if csv_path:
        say(f"wrote {B.write_csv(result, csv_path)}")
    if plot_path:
        say(f"wrote {B.plot(result, plot_path)}")
    if max_drop is not None:
        bad = B.gate(result, max_drop)
        if bad:
            raise CheckFailed("accuracy gate failed: " + "; ".join(bad))
        say(f"accuracy gate passed: no FP16/INT8 row loses more than {max_drop:g} points")
    if not any(r["status"] == "ok" for r in result["rows"]):
        raise EdgeferError("no row ran: " + "; ".join(f"{r['target']}/{r['precision']} {r['reason']}" for r in result["rows"])[:400])
