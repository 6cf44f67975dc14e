"""`edgefer run`: the fused detect -> classify loop on a camera, video, image, folder or URL."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import click

from ..artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR
from ..backends import MAX_THREADS
from ..errors import EdgeferError
from ..stats import LatencyHistogram
from ..sources import VIDEO_SUFFIXES
from .summary import TrackTally, stream_summary, write_summary

#: the detector's input long side: below 32 px RetinaFace's coarsest anchors see nothing;
#: above 4096 px one frame needs gigabytes of activations
MIN_DET_SIZE, MAX_DET_SIZE = 32, 4096
#: image/folder runs print one line per image; beyond this many only the last ones are kept
MAX_IMAGE_LINES = 1000


def _ran_on(info: dict) -> str:
    """'edgenet [onnx, fp32] on onnxruntime (CPU, 2 threads)' from a backend's info() + artifact."""
    bits = [str(info.get(k)) for k in ("device",) if info.get(k)]
    if isinstance(info.get("threads"), int):
        bits.append(f"{info['threads']} threads")
    auto = info.get("auto") or {}
    if auto:
        bits.append("chosen by measurement" if auto.get("measured_ms") else "first available")
    return f"{info.get('artifact', '?')} on {info.get('backend', '?')}" + (f" ({', '.join(bits)})" if bits else "")


def _fmt_ms(p: dict | None) -> str:
    return f"{p['p50']:.1f} / {p['p99']:.1f}" if p else "-"


def _explain_cost(explain_ms: LatencyHistogram, stats, pipe) -> dict:
    """What --explain costs per frame: picking/placing the maps plus drawing them, vs the frame time.

    The maps come out of the classify inference itself (one more output of the same graph); that
    part is inside the classify stage and measured separately by the bench (`edgefer bench`).
    """
    maps_ms = stats.mean("explain")
    n = explain_ms.count
    per = explain_ms.mean
    frame_ms = 1e3 / stats.fps() if stats.fps() > 0 else float("nan")
    entry = (pipe.classifier.manifest.extra or {}).get("cam", {})
    return {
        "frames": n,
        "ms_per_frame": round(per, 3),
        "maps_ms": round(maps_ms, 3),
        "draw_ms": round(per - maps_ms, 3) if n else 0.0,
        "frame_ms": round(frame_ms, 3),
        "pct_of_frame": round(100.0 * per / frame_ms, 2) if frame_ms == frame_ms and frame_ms > 0 else None,
        "source": f"{pipe.classifier.backend.artifact.describe()} output {entry.get('output', 'cam')!r} ({entry.get('method', '?')})",
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", nargs=-1)
@click.option("--camera", type=int, default=None, metavar="N", help="Camera index (same as SOURCE=N).")
@click.option("--demo", is_flag=True, help="Run on a built-in clip made from scikit-image's astronaut photo.")
@click.option("-o", "--output", type=click.Path(dir_okay=True), default=None, help="Annotated output: video (.mp4/.avi), image (.jpg/.png) or, for a folder source, a folder.")
@click.option("--events", type=click.Path(), default=None, help="JSON Lines file, one line per frame ('-' for stdout).")
@click.option("--display/--no-display", default=None, help="Show a window (default: only where a screen exists).")
@click.option("--max-frames", type=click.IntRange(1, 10**12), default=None, help="Stop after N frames.")
@click.option("--detector", default=DEFAULT_DETECTOR, show_default=True, help="Detector: bundled name or artifact path.")
@click.option("--classifier", default=DEFAULT_CLASSIFIER, show_default=True, help="Classifier: bundled name or artifact path.")
@click.option("--backend", default="auto", show_default=True, help="auto, onnxruntime, openvino, tensorrt, coreml.")
@click.option("--providers", default=None, help="ONNX Runtime execution providers, comma separated (default: best available).")
@click.option("--device", default=None, help="Device for OpenVINO (CPU, GPU, NPU, AUTO) or TensorRT (GPU index).")
@click.option("--det-size", type=click.IntRange(0, MAX_DET_SIZE), default=640, show_default=True, help=f"Long side the frame is resized to for detection, {MIN_DET_SIZE}-{MAX_DET_SIZE} (0: native).")
@click.option("--conf", "conf_thresh", type=click.FloatRange(0, 1), default=None, help="Face detection threshold.")
@click.option("--smoothing", type=click.FloatRange(0, 0.99), default=0.5, show_default=True, help="Weight of the past in each track's emotion average (0: none).")
@click.option("--threads", type=click.IntRange(0, MAX_THREADS), default=0, help=f"Threads per runtime, at most {MAX_THREADS} (0: runtime default).")
@click.option("--adaptive/--every-frame", default=True, show_default=True,
              help="Adaptive loop (default): detect when the picture needs it and at the size the faces need, move faces "
                   "with the picture between detections, classify only faces that changed. --every-frame: detect and "
                   "classify every frame at --det-size (the reference mode).")
@click.option("--detect-every", type=click.IntRange(1, 1000), default=None, help="Force a fixed detection cadence of N frames (default: every frame, or chosen by the adaptive loop).")
@click.option("--overlap/--no-overlap", default=True, show_default=True, help="Detect frame N on a worker thread while frame N-1 is classified.")
@click.option("--ceiling", is_flag=True, help="For a video file, also measure its decode-only fps and report the ratio.")
@click.option("--realtime", is_flag=True,
              help="Replay a video file as a live camera at its own frame rate: frames are dropped (and counted), "
                   "never queued, when processing falls behind; latency is capture to result.")
@click.option("--realtime-fps", type=click.FloatRange(min=0, max=1000, min_open=True), default=None, metavar="FPS",
              help="With --realtime: replay at FPS frames/s instead of the file's own rate (implies --realtime).")
@click.option("--show-fps/--no-show-fps", default=None,
              help="Burn the processing fps into the frames (default: for live sources only, not for files).")
@click.option("-q", "--quiet", "quiet_flag", is_flag=True, help="No status line or latency lines (same as `edgefer -q run`).")
@click.option("--publish", default=None, metavar="URL",
              help="Publish events over MQTT: mqtt[s]://HOST[:PORT]/TOPIC ({device} and {stream} are filled in). "
                   "Never slows the loop: bounded buffer, reconnects, drops counted in the summary.")
@click.option("--publish-qos", type=click.IntRange(0, 2), default=0, show_default=True, help="MQTT quality of service.")
@click.option("--publish-on-change", is_flag=True, help="Publish a face only when its track's emotion changed.")
@click.option("--device-id", default=None, help="Device id in published events (default: the host name).")
@click.option("--publish-buffer", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="Messages buffered while the broker is away (the oldest is dropped and counted).")
@click.option("--mqtt-ca", type=click.Path(), default=None, help="CA certificate for mqtts:// (TLS).")
@click.option("--mqtt-cert", type=click.Path(), default=None, help="Client certificate for TLS.")
@click.option("--mqtt-key", type=click.Path(), default=None, help="Client key for TLS.")
@click.option("--mqtt-username", default=None, help="MQTT user name (the password only from $EDGEFER_MQTT_PASSWORD).")
@click.option("--summary", "summary_path", type=click.Path(), default=None, help="Write the run summary as JSON.")
@click.option("--explain", is_flag=True, help="Overlay each face's class activation heatmap (in-graph CAM, same inference); cost in the summary.")
@click.pass_context
def run(ctx, source, camera, demo, output, events, display, max_frames, detector, classifier, backend, providers, device,
        det_size, conf_thresh, smoothing, threads, adaptive, detect_every, overlap, ceiling, realtime, realtime_fps, show_fps, quiet_flag, summary_path, explain,
        publish, publish_qos, publish_on_change, device_id, publish_buffer, mqtt_ca, mqtt_cert, mqtt_key, mqtt_username):
    """Detect faces and classify their emotions.

    \b
    SOURCE: a video file, an image, a folder of images, a stream URL or a camera index; several
    videos, cameras or URLs run together on one detector and one classifier (-o is then a folder).
    Examples:
      edgefer run --demo -o demo.mp4
      edgefer run --camera 0
      edgefer run clip.mp4 --output annotated.mp4 --events faces.jsonl --no-display
      edgefer run photos/ --output annotated/ --classifier my_int8_artifact/
      edgefer run clip.mp4 --explain --output explained.mp4
      edgefer run 0 1 rtsp://cam3/stream --events all.jsonl -o annotated/
    """
    from ..explain import draw_heatmaps
    from ..outputs import OutputPath, check_outputs
    from ..pipeline import Pipeline
    from ..signals import Interrupted, StopOnSignal, signal_name
    from ..sinks import AnnotatedOutput, Display, EventWriter, annotate
    from ..sources import open_source
    from .writes import close_all, write_frame

    quiet = (ctx.obj or {}).get("quiet", False) or quiet_flag
    for flag, v in (("--conf", conf_thresh), ("--smoothing", smoothing), ("--realtime-fps", realtime_fps)):
        if v is not None and not math.isfinite(v):  # click's FloatRange lets nan through
            raise EdgeferError(f"{flag} must be a finite number, not {v}")
    if det_size and not MIN_DET_SIZE <= det_size <= MAX_DET_SIZE:
        raise EdgeferError(f"--det-size must be 0 (native) or between {MIN_DET_SIZE} and {MAX_DET_SIZE}, not {det_size}")
    # human output goes to stderr whenever the events go to stdout, so stdout stays pure JSON Lines
    to_err = events == "-"

    def say(msg: str = "", **kw) -> None:
        click.echo(msg, err=to_err or kw.pop("err", False), **kw)

    if len(source) > 1:
        from .run_many import run_many

        if camera is not None or demo:
            raise EdgeferError("with several sources give cameras as SOURCE indices (edgefer run 0 1 ...), not --camera/--demo")
        opts = {"providers": providers} if providers else {}
        if device:
            opts["device"] = device
        opts.update(detector=detector, classifier=classifier, backend=backend, det_size=det_size or None,
                    conf_thresh=conf_thresh, smoothing=smoothing, threads=threads or None, explain=explain,
                    detect_every=detect_every, adaptive=adaptive)
        code = run_many(list(source), output=output, events=events, summary_path=summary_path, display=display,
                        max_frames=max_frames, realtime=realtime_fps or realtime, quiet=quiet, show_fps=show_fps,
                        pipeline_options=opts, say=say)
        if code:
            ctx.exit(code)
        return
    source = source[0] if source else None

    with StopOnSignal() as stop:
        src = open_source(source, camera=camera, demo=demo, realtime=realtime_fps or realtime)
        try:
            outs = [OutputPath("output", Path(output), folder=src.kind == "folder" and Path(output).suffix.lower() not in VIDEO_SUFFIXES)] if output else []
            outs += [OutputPath("events", Path(events))] if events and events != "-" else []
            outs += [OutputPath("summary", Path(summary_path))] if summary_path else []
            srcs = [str(source)] if source is not None and not demo else []
            check_outputs(outs, srcs, {str(source): list(src.paths)} if src.kind == "folder" else None)
            opts = {}
            if providers:
                opts["providers"] = providers
            if device:
                opts["device"] = device
            pipe = Pipeline(detector, classifier, backend=backend, det_size=det_size or None, conf_thresh=conf_thresh,
                            smoothing=smoothing, threads=threads or None, detect_every=detect_every, overlap=overlap,
                            explain=explain, adaptive=adaptive, **opts)
        except BaseException:
            src.close()
            raise
        if display is None or display:
            from ..gui import cached_screen_status, no_window_notice

            screen = cached_screen_status()  # a child process opens a test window once (Qt aborts without X)
            if not screen.available:
                if display or not quiet:
                    click.echo(no_window_notice(screen), err=True)
                display = False
            else:
                display = True
        sink = ev = pub = None
        try:
            sink = AnnotatedOutput(output, src.kind, src.fps) if output else None
            ev = EventWriter(events) if events else None
            if publish:
                from ..publish import MqttPublisher

                pub = MqttPublisher.from_url(publish, qos=publish_qos, on_change=publish_on_change, device_id=device_id,
                                             ca_certs=mqtt_ca, certfile=mqtt_cert, keyfile=mqtt_key,
                                             username=mqtt_username, buffer=publish_buffer)
        except BaseException:
            src.close()
            if ev:
                ev.close()
            raise
        win = Display() if display else None
        if show_fps is None:
            show_fps = src.live
        show_fps = show_fps and src.kind not in ("image", "folder")
        live_status = not quiet and sys.stderr.isatty()
        tally = TrackTally()
        image_lines = []
        last_status = 0.0
        stopped = False
        write_errors: list[str] = []
        explain_ms = LatencyHistogram()  # per frame: picking the maps (pipeline) + drawing them

        def write(r) -> bool | None:
            """This frame to every sink; False when the window was closed."""
            nonlocal stopped
            if ev:
                ev.write(r)
            if pub:
                pub.publish_frame(r)
            tally.add(r)
            if src.kind in ("image", "folder"):
                faces = ", ".join(f"{f.emotion} {f.confidence:.2f} [{', '.join(str(int(v)) for v in f.box)}]" for f in r.faces)
                image_lines.append(f"{r.name}: {len(r.faces)} face{'s' if len(r.faces) != 1 else ''}" + (f": {faces}" if faces else ""))
                if len(image_lines) > MAX_IMAGE_LINES:
                    del image_lines[0]
            if sink or win:
                img = r.image.copy() if win and sink is None else r.image
                if explain:
                    t_draw = time.perf_counter()
                    img = draw_heatmaps(img, r)
                    explain_ms.add(r.timings_ms.get("explain", 0.0) + (time.perf_counter() - t_draw) * 1e3)
                img = annotate(img, r, pipe.stats.fps() if show_fps else None)
                if sink:
                    sink.write(img, r)
                if win and not win.show(img):
                    stopped = True
                    return False
            if explain and not (sink or win):
                explain_ms.add(r.timings_ms.get("explain", 0.0))
            return True

        try:
            for r in pipe.run(src, max_frames=max_frames):
                if not write_frame(stop, write_errors, write, r):
                    break
                now = time.perf_counter()
                if live_status and now - last_status > 0.5:
                    last_status = now
                    total = f"/{src.total}" if src.total else ""
                    click.echo(f"\rframe {pipe.stats.frames}{total}  {pipe.stats.fps():6.1f} fps  faces {len(r.faces):3d}  dropped {src.dropped}   ",
                               err=True, nl=False)
        except Interrupted:
            pass
        finally:
            stop.busy = True  # closing the sinks is not interrupted by a first signal
            if live_status:
                click.echo("", err=True)
            close_all((sink, ev, win, pub), write_errors)
        stopped = stopped or stop.requested
    stats = pipe.stats
    decode_fps = None
    if ceiling and src.kind == "video":
        from ..sources import decode_only_fps

        decode_fps, _ = decode_only_fps(source, max_frames)
    if stats.frames == 0 and not write_errors:
        if stop.requested:
            err = EdgeferError(f"stopped by {signal_name(stop.signum)} before the first frame")
            err.exit_code = stop.exit_code
            raise err
        why = f" ({src.skipped[0][1]})" if src.skipped else ""
        raise EdgeferError(f"no frame could be read from {src.describe()}{why}")
    cpu_ms = stats.cpu_ms_per_frame()
    summary = stream_summary(src, pipe, tally)
    summary.update({
        "decode_fps": None if decode_fps is None else round(decode_fps, 2),
        "ratio_to_decode": None if not decode_fps else round(stats.fps() / decode_fps, 4),
        "detect_every": detect_every,
        "overlap": overlap,
        "skipped": [{"file": n, "reason": why} for n, why in src.skipped],
        "detector": pipe.detector.backend.info() | {"artifact": pipe.detector.backend.artifact.describe()},
        "classifier": pipe.classifier.backend.info() | {"artifact": pipe.classifier.backend.artifact.describe()},
        "output": sink.describe() if sink else None,
        "events_lines": ev.lines if ev else None,
        "stopped_early": stopped,
        "stop_signal": signal_name(stop.signum),
        "write_errors": write_errors,
    })
    if pub:
        summary["publish"] = pub.report()
    if explain:
        summary["explain"] = _explain_cost(explain_ms, stats, pipe)
    write_summary(summary_path, summary, write_errors)
    for line in image_lines:
        say(line)
    if src.kind not in ("image", "folder"):
        for line in tally.lines():
            say(line)
    p = stats.percentiles()
    say(
        f"{stats.frames} frame{'s' if stats.frames != 1 else ''}, {stats.faces} faces"
        + (f", {stats.fps():.1f} fps end to end" if src.kind not in ("image", "folder") else "")
        + (f", {cpu_ms:.1f} ms CPU/frame" if cpu_ms is not None and stats.frames > 1 else "")
        + (f", {src.dropped} dropped" if src.live or src.dropped else "")
        + (f", {len(src.skipped)} skipped" if src.skipped else "")
        + (f", {summary['decode_errors']} undecodable frames skipped" if summary["decode_errors"] else "")
        + (f"; decode-only {decode_fps:.1f} fps, ratio {stats.fps() / decode_fps:.2f}" if decode_fps else "")
    )
    if not quiet:
        say("ran on: " + "; ".join(f"{role} {_ran_on(summary[role])}" for role in ("detector", "classifier")))
        ad = summary.get("adaptive") or {}
        if ad.get("mode", "").startswith(("adaptive", "fixed")) and ad.get("frames"):
            cls = ad.get("classifications", {})
            say(f"{ad['mode']}: detected {ad['detections']} of {ad['frames']} frames ({ad['detections_pct']:.0f}%, "
                f"at {', '.join(f'{k} px' if k != 'None' else 'native' for k in ad.get('detector_sizes', {}))}), "
                f"faces moved on the others; {cls.get('reused_pct', 0):.0f}% of face classifications reused")
        say("latency ms p50 / p99: " + "  ".join(f"{k} {_fmt_ms(p.get(k))}" for k in ("decode", "detect", "classify", "track", "total")))
        if "live" in summary:
            lv = summary["live"]
            say(f"live: capture to result p50 {lv['latency_p50_ms']:.1f} ms, p99 {lv['latency_p99_ms']:.1f} ms "
                f"= {lv['latency_p99_intervals']:.2f} frame intervals at {lv['source_fps']:.4g} fps; "
                f"{lv['dropped']} of {lv['frames_offered']} frames dropped ({lv['dropped_pct']:.1f}%)")
        if explain and summary["explain"]["frames"]:
            e = summary["explain"]
            say(f"explain: {e['ms_per_frame']:.2f} ms/frame ({e['pct_of_frame']:.1f}% of the {e['frame_ms']:.1f} ms frame time; "
                f"maps {e['maps_ms']:.2f} + drawing {e['draw_ms']:.2f} ms), heatmaps from {e['source']}")
        if sink and not write_errors:
            say(f"annotated output: {sink.describe()}")
        if ev and events != "-":
            say(f"events: {events} ({ev.lines} lines)")
        if pub:
            say(pub.summary_line())
    if summary["ended_early"]:
        click.echo(f"edgefer: warning: {src.describe()} ended before its last frame "
                   f"({summary['decode_errors']} undecodable frames skipped)", err=True)
    if getattr(src, "error", None):
        click.echo(f"edgefer: warning: the source stopped with an error after {stats.frames} frames: {src.error}", err=True)
    if write_errors:
        raise EdgeferError(write_errors[0] + (f" (and {len(write_errors) - 1} more write errors)" if len(write_errors) > 1 else ""))
    if stop.requested:
        say(f"stopped by {signal_name(stop.signum)}: outputs closed, summary written", err=True)
        ctx.exit(stop.exit_code)
