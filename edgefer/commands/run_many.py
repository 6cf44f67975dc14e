"""`edgefer run SRC1 SRC2 ...`: several cameras, files or URLs in one process (edgefer.multistream).

Called by :func:`edgefer.commands.run.run` when it is given more than one source. The same
promises as one source: outputs checked before the first frame and never over an input, signals
end the run cleanly, write errors are one line and exit 2 with what was written kept. Per stream:
an annotated video ``DIR/stream<N>.<suffix>`` when ``-o DIR`` is given, a status, a summary entry;
one events file whose lines carry ``"stream": N``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import EdgeferError
from ..sources import VIDEO_SUFFIXES
from .summary import TrackTally, stream_summary, write_summary
from .writes import close_all, write_frame


def run_many(sources: list[str], *, output: str | None, events: str | None, summary_path: str | None,
             display: bool | None, max_frames: int | None, realtime: bool | float, quiet: bool, show_fps: bool | None,
             pipeline_options: dict[str, Any], say) -> int:
    """Run every source through one :class:`~edgefer.multistream.MultiPipeline`; returns the exit code."""
    from ..multistream import MultiPipeline
    from ..outputs import OutputPath, check_outputs
    from ..signals import Interrupted, StopOnSignal, signal_name
    from ..sinks import AnnotatedOutput, EventWriter, annotate
    from ..sources import open_source

    out_dir = Path(output) if output else None
    if out_dir is not None and out_dir.suffix.lower() in VIDEO_SUFFIXES:
        raise EdgeferError(f"with several sources, --output is a folder (one video per stream), not {output}")
    with StopOnSignal() as stop:
        opened = []
        try:
            for s in sources:
                src = open_source(s, realtime=realtime)
                opened.append(src)
                if src.kind in ("image", "folder"):
                    raise EdgeferError(f"several sources must be videos, cameras or URLs; {s} is {src.kind == 'image' and 'an image' or 'a folder'}")
            outs = [OutputPath("output", out_dir, folder=True)] if out_dir else []
            outs += [OutputPath("events", Path(events))] if events and events != "-" else []
            outs += [OutputPath("summary", Path(summary_path))] if summary_path else []
            check_outputs(outs, list(sources))
            multi = MultiPipeline(opened, **pipeline_options)
        except BaseException:
            for src in opened:
                src.close()
            raise
        if display:
            click.echo("edgefer: several sources run without a window (use -o DIR for annotated videos)", err=True)
        sinks: list[AnnotatedOutput | None] = []
        ev = None
        try:
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                sinks = [AnnotatedOutput(out_dir / f"stream{i}.mp4", src.kind, src.fps) for i, src in enumerate(opened)]
            ev = EventWriter(events) if events else None
        except BaseException:
            for src in opened:
                src.close()
            raise
        show = [(show_fps if show_fps is not None else src.live) for src in opened]
        tallies = [TrackTally() for _ in opened]
        write_errors: list[str] = []
        live_status = not quiet and sys.stderr.isatty()
        last_status = 0.0
        def write(i: int, r) -> None:
            """Stream ``i``'s frame to the events file, its tally and its video."""
            if ev:
                ev.write(r, stream=i)
            tallies[i].add(r)
            if sinks:
                st = multi.streams[i].pipe.stats
                sinks[i].write(annotate(r.image, r, st.fps() if show[i] else None), r)

        try:
            for i, r in multi.run(max_frames=max_frames):
                if not write_frame(stop, write_errors, write, i, r):
                    break
                now = time.perf_counter()
                if live_status and now - last_status > 0.5:
                    last_status = now
                    parts = [f"#{s.index} {s.pipe.stats.frames}f {s.pipe.stats.fps():.0f}fps {multi.dropped(s.index)}drop"
                             for s in multi.streams]
                    click.echo("\r" + "  ".join(parts) + "   ", err=True, nl=False)
        except Interrupted:
            pass
        finally:
            stop.busy = True
            if live_status:
                click.echo("", err=True)
            close_all([*sinks, ev], write_errors)
    per_stream = []
    for s, tally in zip(multi.streams, tallies):
        entry = stream_summary(s.source, s.pipe, tally, dropped=multi.dropped(s.index))
        entry["stream"] = s.index
        entry["output"] = sinks[s.index].describe() if sinks else None
        err = s.feed.error
        if err is not None and not isinstance(err, Interrupted):
            entry["source_error"] = f"{type(err).__name__}: {err}"
        per_stream.append(entry)
    frames = sum(e["frames"] for e in per_stream)
    bs = multi.batch_sizes.hist["total"]
    summary = {
        "streams": per_stream,
        "frames": frames,
        "faces": sum(e["faces"] for e in per_stream),
        "classifier_calls": multi.rounds,
        "faces_per_classifier_call": {"mean": round(bs.mean, 2), "max": round(bs.max, 1) if bs.count else 0},
        "detector": multi.detector.backend.info() | {"artifact": multi.detector.backend.artifact.describe()},
        "classifier": multi.classifier.backend.info() | {"artifact": multi.classifier.backend.artifact.describe()},
        "events_lines": ev.lines if ev else None,
        "stop_signal": signal_name(stop.signum),
        "write_errors": write_errors,
    }
    write_summary(summary_path, summary, write_errors)
    for e in per_stream:
        live = e.get("live") or {}
        lat = f", p99 capture to result {live['latency_p99_intervals']:.2f} frame intervals" if live else ""
        say(f"stream {e['stream']}: {e['source']}: {e['frames']} frames, {e['faces']} faces, {e['fps']:.1f} fps, "
            f"{e['dropped_frames']} dropped{lat}")
    say(f"{len(per_stream)} streams, {frames} frames, {summary['faces']} faces; one classifier call per round "
        f"({summary['faces_per_classifier_call']['mean']:.1f} faces on average)")
    if write_errors:
        raise EdgeferError(write_errors[0])
    if frames == 0 and not stop.requested:
        raise EdgeferError("no frame could be read from any source")
    return stop.exit_code
