"""`edgefer run`: the fused detect -> classify loop on a camera, video, image, folder or URL."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict

import click
import numpy as np

from ..artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR
from ..errors import EdgeferError


def _fmt_ms(p: dict | None) -> str:
    return f"{p['p50']:.1f} / {p['p99']:.1f}" if p else "-"


def _explain_cost(explain_ms: list[float], stats, pipe) -> dict:
    """What --explain costs per frame: picking/placing the maps plus drawing them, vs the frame time.

    The maps come out of the classify inference itself (one more output of the same graph); that
    part is inside the classify stage and measured separately by the bench (`edgefer bench`).
    """
    maps = stats.ms.get("explain") or [0.0]
    n = len(explain_ms)
    per = float(np.mean(explain_ms)) if n else 0.0
    frame_ms = 1e3 / stats.fps() if stats.fps() > 0 else float("nan")
    entry = (pipe.classifier.manifest.extra or {}).get("cam", {})
    return {
        "frames": n,
        "ms_per_frame": round(per, 3),
        "maps_ms": round(float(np.mean(maps)), 3),
        "draw_ms": round(per - float(np.mean(maps)), 3) if n else 0.0,
        "frame_ms": round(frame_ms, 3),
        "pct_of_frame": round(100.0 * per / frame_ms, 2) if frame_ms == frame_ms and frame_ms > 0 else None,
        "source": f"{pipe.classifier.backend.artifact.describe()} output {entry.get('output', 'cam')!r} ({entry.get('method', '?')})",
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", required=False)
@click.option("--camera", type=int, default=None, metavar="N", help="Camera index (same as SOURCE=N).")
@click.option("--demo", is_flag=True, help="Run on a built-in clip made from scikit-image's astronaut photo.")
@click.option("-o", "--output", type=click.Path(dir_okay=True), default=None, help="Annotated output: video (.mp4/.avi), image (.jpg/.png) or, for a folder source, a folder.")
@click.option("--events", type=click.Path(), default=None, help="JSON Lines file, one line per frame ('-' for stdout).")
@click.option("--display/--no-display", default=None, help="Show a window (default: only where a screen exists).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--detector", default=DEFAULT_DETECTOR, show_default=True, help="Detector: bundled name or artifact path.")
@click.option("--classifier", default=DEFAULT_CLASSIFIER, show_default=True, help="Classifier: bundled name or artifact path.")
@click.option("--backend", default="auto", show_default=True, help="auto, onnxruntime, openvino, tensorrt, coreml.")
@click.option("--providers", default=None, help="ONNX Runtime execution providers, comma separated (default: best available).")
@click.option("--device", default=None, help="Device for OpenVINO (CPU, GPU, NPU, AUTO) or TensorRT (GPU index).")
@click.option("--det-size", type=click.IntRange(min=0), default=640, show_default=True, help="Long side the frame is resized to for detection (0: native).")
@click.option("--conf", "conf_thresh", type=click.FloatRange(0, 1), default=None, help="Face detection threshold.")
@click.option("--smoothing", type=click.FloatRange(0, 0.99), default=0.5, show_default=True, help="Weight of the past in each track's emotion average (0: none).")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Threads per runtime (0: runtime default).")
@click.option("--detect-every", type=click.IntRange(min=1), default=1, show_default=True, help="Detect on every N-th frame; tracks carry faces between (every frame is still classified).")
@click.option("--overlap/--no-overlap", default=True, show_default=True, help="Detect frame N on a worker thread while frame N-1 is classified.")
@click.option("--ceiling", is_flag=True, help="For a video file, also measure its decode-only fps and report the ratio.")
@click.option("--realtime", is_flag=True,
              help="Replay a video file as a live camera at its own frame rate: frames are dropped (and counted), "
                   "never queued, when processing falls behind; latency is capture to result.")
@click.option("--realtime-fps", type=click.FloatRange(min=0, min_open=True), default=None, metavar="FPS",
              help="With --realtime: replay at FPS frames/s instead of the file's own rate (implies --realtime).")
@click.option("--summary", "summary_path", type=click.Path(), default=None, help="Write the run summary as JSON.")
@click.option("--explain", is_flag=True, help="Overlay each face's class activation heatmap (in-graph CAM, same inference); cost in the summary.")
@click.pass_context
def run(ctx, source, camera, demo, output, events, display, max_frames, detector, classifier, backend, providers, device,
        det_size, conf_thresh, smoothing, threads, detect_every, overlap, ceiling, realtime, realtime_fps, summary_path, explain):
    """Detect faces and classify their emotions.

    \b
    SOURCE: a video file, an image, a folder of images, a stream URL or a camera index.
    Examples:
      edgefer run --demo -o demo.mp4
      edgefer run --camera 0
      edgefer run clip.mp4 --output annotated.mp4 --events faces.jsonl --no-display
      edgefer run photos/ --output annotated/ --classifier my_int8_artifact/
      edgefer run clip.mp4 --explain --output explained.mp4
    """
    from ..pipeline import Pipeline
    from ..sinks import AnnotatedOutput, Display, EventWriter, annotate, screen_available
    from ..sources import open_source

    quiet = (ctx.obj or {}).get("quiet", False)
    src = open_source(source, camera=camera, demo=demo, realtime=realtime_fps or realtime)
    opts = {}
    if providers:
        opts["providers"] = providers
    if device:
        opts["device"] = device
    try:
        pipe = Pipeline(detector, classifier, backend=backend, det_size=det_size or None, conf_thresh=conf_thresh,
                        smoothing=smoothing, threads=threads or None, detect_every=detect_every, overlap=overlap,
                        explain=explain, **opts)
    except BaseException:
        src.close()
        raise
    if display is None:
        display = screen_available()
    elif display and not screen_available():
        click.echo("edgefer: no screen (or OpenCV without GUI): running without a window", err=True)
        display = False
    sink = AnnotatedOutput(output, src.kind, src.fps) if output else None
    ev = EventWriter(events) if events else None
    win = Display() if display else None
    live_status = not quiet and sys.stderr.isatty()
    per_track: dict[int, Counter] = defaultdict(Counter)
    image_lines = []
    last_status = 0.0
    stopped = False
    explain_ms: list[float] = []  # per frame: picking the maps (pipeline) + drawing them
    try:
        for r in pipe.run(src, max_frames=max_frames):
            if ev:
                ev.write(r)
            for f in r.faces:
                per_track[f.track][f.emotion] += 1
            if src.kind in ("image", "folder"):
                faces = ", ".join(f"{f.emotion} {f.confidence:.2f} [{', '.join(str(int(v)) for v in f.box)}]" for f in r.faces)
                image_lines.append(f"{r.name}: {len(r.faces)} face{'s' if len(r.faces) != 1 else ''}" + (f": {faces}" if faces else ""))
            if sink or win:
                img = r.image.copy() if win and sink is None else r.image
                if explain:
                    from ..explain import draw_heatmaps

                    t_draw = time.perf_counter()
                    img = draw_heatmaps(img, r)
                    explain_ms.append(r.timings_ms.get("explain", 0.0) + (time.perf_counter() - t_draw) * 1e3)
                img = annotate(img, r, pipe.stats.fps() if src.kind not in ("image", "folder") else None)
                if sink:
                    sink.write(img, r)
                if win and not win.show(img):
                    stopped = True
                    break
            now = time.perf_counter()
            if explain and not (sink or win):
                explain_ms.append(r.timings_ms.get("explain", 0.0))
            if live_status and now - last_status > 0.5:
                last_status = now
                total = f"/{src.total}" if src.total else ""
                click.echo(f"\rframe {pipe.stats.frames}{total}  {pipe.stats.fps():6.1f} fps  faces {len(r.faces):3d}  dropped {src.dropped}   ",
                           err=True, nl=False)
    except KeyboardInterrupt:
        stopped = True
    finally:
        if live_status:
            click.echo("", err=True)
        if sink:
            sink.close()
        if ev:
            ev.close()
        if win:
            win.close()
    stats = pipe.stats
    decode_fps = None
    if ceiling and src.kind == "video":
        from ..sources import decode_only_fps

        decode_fps, _ = decode_only_fps(source, max_frames)
    if stats.frames == 0:
        why = f" ({src.skipped[0][1]})" if src.skipped else ""
        raise EdgeferError(f"no frame could be read from {src.describe()}{why}")
    summary = {
        "source": src.describe(),
        "frames": stats.frames,
        "faces": stats.faces,
        "fps": round(stats.fps(), 2),
        "dropped_frames": src.dropped,
        "decode_fps": None if decode_fps is None else round(decode_fps, 2),
        "ratio_to_decode": None if not decode_fps else round(stats.fps() / decode_fps, 4),
        "detect_every": detect_every,
        "overlap": overlap,
        "skipped": [{"file": n, "reason": why} for n, why in src.skipped],
        "latency_ms": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in stats.percentiles().items()},
        "detector": pipe.detector.backend.info() | {"artifact": pipe.detector.backend.artifact.describe()},
        "classifier": pipe.classifier.backend.info() | {"artifact": pipe.classifier.backend.artifact.describe()},
        "stopped_early": stopped,
        "source_error": getattr(src, "error", None),
    }
    if explain:
        summary["explain"] = _explain_cost(explain_ms, stats, pipe)
    pct = stats.percentiles()
    if src.live and "total" in pct:
        interval = 1e3 / src.fps
        offered = stats.frames + src.dropped
        summary["live"] = {
            "source_fps": round(src.fps, 3),
            "frame_interval_ms": round(interval, 3),
            "latency_p50_ms": round(pct["total"]["p50"], 3),  # capture (or due time) to result
            "latency_p99_ms": round(pct["total"]["p99"], 3),
            "latency_p99_intervals": round(pct["total"]["p99"] / interval, 3),
            "frames_offered": offered,
            "dropped": src.dropped,
            "dropped_pct": round(100.0 * src.dropped / offered, 2) if offered else 0.0,
            "replayed_file": bool(getattr(src, "paced", False)),
        }
    if summary_path:
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=2)
    for line in image_lines:
        click.echo(line)
    if src.kind not in ("image", "folder"):
        for tid in sorted(per_track, key=lambda t: -sum(per_track[t].values()))[:10]:
            c = per_track[tid]
            n = sum(c.values())
            top = ", ".join(f"{e} {100 * k / n:.0f}%" for e, k in c.most_common(3))
            click.echo(f"track #{tid}: {n} frames: {top}")
    p = stats.percentiles()
    click.echo(
        f"{stats.frames} frames, {stats.faces} faces, {stats.fps():.1f} fps end to end"
        + (f", {src.dropped} dropped" if src.live or src.dropped else "")
        + (f", {len(src.skipped)} skipped" if src.skipped else "")
        + (f"; decode-only {decode_fps:.1f} fps, ratio {stats.fps() / decode_fps:.2f}" if decode_fps else "")
    )
    if not quiet:
        click.echo("latency ms p50 / p99: " + "  ".join(f"{k} {_fmt_ms(p.get(k))}" for k in ("decode", "detect", "classify", "track", "total")))
        if "live" in summary:
            lv = summary["live"]
            click.echo(f"live: capture to result p50 {lv['latency_p50_ms']:.1f} ms, p99 {lv['latency_p99_ms']:.1f} ms "
                       f"= {lv['latency_p99_intervals']:.2f} frame intervals at {lv['source_fps']:.4g} fps; "
                       f"{lv['dropped']} of {lv['frames_offered']} frames dropped ({lv['dropped_pct']:.1f}%)")
        if explain and summary["explain"]["frames"]:
            e = summary["explain"]
            click.echo(f"explain: {e['ms_per_frame']:.2f} ms/frame ({e['pct_of_frame']:.1f}% of the {e['frame_ms']:.1f} ms frame time; "
                       f"maps {e['maps_ms']:.2f} + drawing {e['draw_ms']:.2f} ms), heatmaps from {e['source']}")
        if output:
            click.echo(f"annotated output: {output}")
        if events:
            click.echo(f"events: {events} ({ev.lines} lines)")
    if getattr(src, "error", None):
        click.echo(f"edgefer: warning: the source stopped with an error after {stats.frames} frames: {src.error}", err=True)
