"""What ``edgefer run`` reports per stream: per-track emotion counts and the summary entries.

Shared by the one-source loop (:mod:`edgefer.commands.run`, which re-exports both names) and the
several-source one (:mod:`edgefer.commands.run_many`).
"""

from __future__ import annotations

from collections import Counter


class TrackTally:
    """Per-track emotion counts for the summary, in bounded memory on a run that never ends.

    Tracks that ended (not seen for ``stale`` frames) are pruned when more than ``limit`` are
    kept, except the ``top`` longest, so a crowd camera running for weeks keeps a fixed-size table.
    """

    def __init__(self, limit: int = 512, top: int = 10, stale: int = 100):
        self.counts: dict[int, Counter] = {}
        self.last_seen: dict[int, int] = {}
        self.limit, self.top, self.stale = limit, top, stale
        self.n = 0  # frames
        self.tracks_seen = 0

    def add(self, r) -> None:
        self.n += 1
        for f in r.faces:
            c = self.counts.get(f.track)
            if c is None:
                c = self.counts[f.track] = Counter()
                self.tracks_seen += 1
            c[f.emotion] += 1
            self.last_seen[f.track] = self.n
        if len(self.counts) > self.limit:
            keep = set(sorted(self.counts, key=lambda t: -sum(self.counts[t].values()))[: self.top])
            for t in [t for t in self.counts if t not in keep and self.n - self.last_seen[t] > self.stale]:
                del self.counts[t], self.last_seen[t]

    def longest(self) -> list[int]:
        return sorted(self.counts, key=lambda t: -sum(self.counts[t].values()))[: self.top]

    def lines(self) -> list[str]:
        out = []
        for tid in self.longest():
            c = self.counts[tid]
            n = sum(c.values())
            top = ", ".join(f"{e} {100 * k / n:.0f}%" for e, k in c.most_common(3))
            out.append(f"track #{tid}: {n} frames: {top}")
        if self.tracks_seen > len(out) and out:
            out.append(f"({self.tracks_seen} tracks in all; the {len(out)} longest shown)")
        return out

    def summary(self) -> dict:
        return {"count": self.tracks_seen,
                "longest": [{"track": t, "frames": sum(self.counts[t].values()), "emotions": dict(self.counts[t])}
                            for t in self.longest()]}


def stream_summary(src, pipe, tally: TrackTally, dropped: int | None = None) -> dict:
    """The summary entries of one stream: counts, speed (fps and CPU ms per frame), decode errors,
    latency percentiles, live latency and drops, tracks, and what the adaptive loop decided."""
    stats = pipe.stats
    cpu_ms = stats.cpu_ms_per_frame()
    dropped = src.dropped if dropped is None else dropped
    pct = stats.percentiles()
    out = {
        "source": src.describe(),
        "frames": stats.frames,
        "faces": stats.faces,
        "fps": round(stats.fps(), 2),
        "cpu_ms_per_frame": None if cpu_ms is None else round(cpu_ms, 3),
        "dropped_frames": dropped,
        "decode_errors": int(getattr(src, "decode_errors", 0) or 0),
        "ended_early": bool(getattr(src, "ended_early", False)),
        "latency_ms": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in pct.items()},
        "tracks": tally.summary(),
        "source_error": getattr(src, "error", None),
    }
    if hasattr(pipe, "adaptive_report"):
        out["adaptive"] = pipe.adaptive_report()
    if src.live and "total" in pct and src.fps:
        interval = 1e3 / src.fps
        offered = stats.frames + dropped
        out["live"] = {
            "source_fps": round(src.fps, 3),
            "frame_interval_ms": round(interval, 3),
            "latency_p50_ms": round(pct["total"]["p50"], 3),  # capture (or due time) to result
            "latency_p99_ms": round(pct["total"]["p99"], 3),
            "latency_p99_intervals": round(pct["total"]["p99"] / interval, 3),
            "frames_offered": offered,
            "dropped": dropped,
            "dropped_pct": round(100.0 * dropped / offered, 2) if offered else 0.0,
            "replayed_file": bool(getattr(src, "paced", False)),
        }
    return out


def write_summary(path, summary: dict, write_errors: list[str]) -> None:
    """``--summary``: the run's summary as standard JSON, written atomically; a failure to write
    it is one more write error of the run (reported, exit 1), never a traceback."""
    from ..errors import EdgeferError
    from ..outputs import write_text_atomic
    from ..sinks import dumps

    if not path:
        return
    try:
        write_text_atomic(path, dumps(summary, indent=2) + "\n", "--summary")
    except EdgeferError as e:
        write_errors.append(str(e))
