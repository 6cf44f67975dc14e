"""`edgefer analyze`: many videos -> Parquet tables, on a local process pool or on Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ..artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR
from ..backends import MAX_THREADS
from ..errors import EdgeferError

MIN_DET_SIZE, MAX_DET_SIZE = 32, 4096


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=False)  # checked below: `--ray DIR` may have taken the only one
@click.option("-o", "--out", required=True, help="Output folder (or a URI pyarrow can write: s3://bucket/prefix).")
@click.option("--workers", type=click.IntRange(1, 4096), default=None, help="Worker processes (Ray: actors). Default: one per core.")
@click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=0, show_default=True,
              help="Runtime threads per worker's pipeline (0: cores // workers, 1 on a full pool).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run on Ray: an embedded local Ray, or with ADDRESS (auto, HOST:PORT, ray://HOST:PORT) an existing cluster.")
@click.option("--split-frames", type=click.IntRange(0, 10**9), default=9000, show_default=True,
              help="Cut videos longer than 1.5x this into frame ranges processed in parallel (0: never). Track ids restart per range.")
@click.option("--split-warmup", type=click.IntRange(0, 10**6), default=30, show_default=True,
              help="Frames read before each range (not written) to warm the tracker and smoothing.")
@click.option("--max-frames", type=click.IntRange(1, 10**12), default=None, help="Only the first N frames of each video.")
@click.option("--force", is_flag=True, help="Redo videos already done with the same settings.")
@click.option("--detector", default=DEFAULT_DETECTOR, show_default=True, help="Detector: bundled name or artifact path.")
@click.option("--classifier", default=DEFAULT_CLASSIFIER, show_default=True, help="Classifier: bundled name or artifact path.")
@click.option("--backend", default="auto", show_default=True, help="auto, onnxruntime, openvino, tensorrt, coreml.")
@click.option("--providers", default=None, help="ONNX Runtime execution providers, comma separated.")
@click.option("--device", default=None, help="Device for OpenVINO (CPU, GPU, NPU, AUTO) or TensorRT (GPU index).")
@click.option("--det-size", type=click.IntRange(0, MAX_DET_SIZE), default=640, show_default=True,
              help=f"Long side the frame is resized to for detection, {MIN_DET_SIZE}-{MAX_DET_SIZE} (0: native).")
@click.option("--conf", "conf_thresh", type=click.FloatRange(0, 1), default=None, help="Face detection threshold.")
@click.option("--smoothing", type=click.FloatRange(0, 0.99), default=0.5, show_default=True,
              help="Weight of the past in each track's emotion average (0: none).")
@click.option("--detect-every", type=click.IntRange(1, 1000), default=None, help="Detect on every N-th frame (default: adaptive).")
@click.option("--overlap/--no-overlap", default=True, show_default=True, help="Detect frame N on a thread while frame N-1 is classified.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None, help="Write the job's summary as JSON.")
@click.option("-q", "--quiet", "quiet_flag", is_flag=True, help="No progress bars (same as `edgefer -q analyze`).")
@click.pass_context
def analyze(ctx, inputs, out, workers, threads, ray_address, split_frames, split_warmup, max_frames, force, detector,
            classifier, backend, providers, device, det_size, conf_thresh, smoothing, detect_every, overlap,
            summary_path, quiet_flag):
    """Analyze many videos into Parquet tables: faces (one row per face per frame), tracks, videos.

    \b
    INPUTS: video files, folders (searched recursively), globs, or .txt lists (one path or URL a line).
    A video done before with the same settings and models is skipped, so an interrupted job resumes
    where it stopped; a video that cannot be read becomes an error row and the others finish.
    Exit code: 0 all done, 1 done with failures (error or partial videos, listed), 2 bad input.
    Examples:
      edgefer analyze interviews/ --out tables/
      edgefer analyze 'archive/**/*.mp4' --out tables/ --workers 8
      edgefer analyze list.txt --out tables/ --ray              # embedded local Ray
      edgefer analyze list.txt --out s3://bucket/fer --ray=auto  # an existing Ray cluster
    """
    from .. import analyze as an

    quiet = (ctx.obj or {}).get("quiet", False) or quiet_flag
    inputs = list(inputs)
    if ray_address is not None and ray_address != "local" and not an.is_ray_address(ray_address):
        if Path(ray_address).exists() or any(c in ray_address for c in "*?["):
            # `--ray videos/ ...`: click gave the first input to --ray as its address
            inputs.insert(0, ray_address)
            ray_address = "local"
        else:
            raise EdgeferError(f"--ray: {ray_address!r} is not a Ray address (auto, HOST:PORT, ray://HOST:PORT)")
    if not inputs:
        raise click.UsageError("Missing argument 'INPUTS...'.", ctx)
    for flag, v in (("--conf", conf_thresh), ("--smoothing", smoothing)):
        if v is not None and not math.isfinite(v):
            raise EdgeferError(f"{flag} must be a finite number, not {v}")
    if det_size and not MIN_DET_SIZE <= det_size <= MAX_DET_SIZE:
        raise EdgeferError(f"--det-size must be 0 (native) or between {MIN_DET_SIZE} and {MAX_DET_SIZE}, not {det_size}")
    settings = an.Settings(detector=detector, classifier=classifier, backend=backend, providers=providers, device=device,
                           det_size=det_size or None, conf_thresh=conf_thresh, smoothing=smoothing,
                           detect_every=detect_every, overlap=overlap, max_frames=max_frames, split_frames=split_frames,
                           split_warmup=split_warmup, threads=threads or None)
    if summary_path and Path(summary_path).parent and not Path(summary_path).parent.exists():
        raise EdgeferError(f"cannot write the summary to {summary_path}: folder {Path(summary_path).parent} does not exist")
    rep = an.analyze(inputs, out, settings, workers=workers, ray=ray_address, force=force, progress=not quiet)
    fps = f", {rep.frames / rep.wall_s:.1f} frames/s" if rep.wall_s > 0 and rep.frames else ""
    click.echo(f"{rep.videos} video{'s' if rep.videos != 1 else ''}: {rep.done} done, {rep.skipped} skipped (done before), "
               f"{rep.failed} failed; {rep.frames} frames, {rep.faces} faces in {rep.wall_s:.1f} s{fps} "
               f"({rep.workers} {'Ray actors' if rep.engine == 'ray' else 'workers'})")
    for video, why in rep.failures:
        click.echo(f"failed: {video}: {why}", err=True)
    if not quiet:
        click.echo(f"tables: {out.rstrip('/')}/faces  {out.rstrip('/')}/tracks  {out.rstrip('/')}/videos")
    if summary_path:
        from ..outputs import write_text_atomic

        write_text_atomic(summary_path, json.dumps(rep.to_dict(), indent=2) + "\n", "--summary")
    ctx.exit(rep.exit_code)
