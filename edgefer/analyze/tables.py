"""The three tables' columns (faces, tracks, videos) and the builder of one task's faces and
tracks, frame by frame. Class names become column suffixes (``prob_happy``, ``share_happy``).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from .inputs import Task


def _col(name: str) -> str:
    """A class name as a column suffix: lower case, letters, digits and underscores."""
    return re.sub(r"[^0-9a-z_]+", "_", name.lower()).strip("_") or "class"


def faces_schema(classes: Sequence[str]):
    import pyarrow as pa

    return pa.schema(
        [("video", pa.string()), ("frame", pa.int64()), ("time_s", pa.float64()), ("range_start", pa.int64()),
         ("track", pa.int64()), ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32()),
         ("score", pa.float32()), ("emotion", pa.string()), ("confidence", pa.float32())]
        + [(f"prob_{_col(c)}", pa.float32()) for c in classes])


def tracks_schema(classes: Sequence[str]):
    import pyarrow as pa

    return pa.schema(
        [("video", pa.string()), ("range_start", pa.int64()), ("track", pa.int64()), ("first_frame", pa.int64()),
         ("last_frame", pa.int64()), ("first_s", pa.float64()), ("last_s", pa.float64()), ("frames", pa.int64()),
         ("dominant", pa.string()), ("dominant_share", pa.float32()), ("mean_confidence", pa.float32())]
        + [(f"share_{_col(c)}", pa.float32()) for c in classes])


def videos_schema():
    import pyarrow as pa

    return pa.schema([
        ("video", pa.string()), ("video_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("size_bytes", pa.int64()), ("mtime_ns", pa.int64()), ("frames", pa.int64()), ("faces", pa.int64()),
        ("tracks", pa.int64()), ("ranges", pa.int64()), ("source_fps", pa.float64()), ("duration_s", pa.float64()),
        ("fps", pa.float64()), ("cpu_ms_per_frame", pa.float64()), ("wall_s", pa.float64()),
        ("decode_errors", pa.int64()), ("ended_early", pa.bool_()), ("frames_missing", pa.int64()),
        ("settings", pa.string()), ("detector_sha256", pa.string()), ("classifier_sha256", pa.string()),
        ("edgefer_version", pa.string()), ("hosts", pa.string()), ("finished_at", pa.string()), ("key", pa.string()),
    ])


class TaskRows:
    """Columns of one task's faces and its per-track tallies, built frame by frame."""

    def __init__(self, classes: Sequence[str], task: Task):
        self.classes = list(classes)
        self.task = task
        self.cols: dict[str, list] = {k: [] for k in ("frame", "time_s", "track", "x1", "y1", "x2", "y2", "score",
                                                      "emotion", "confidence")}
        self.probs: list[list[float]] = [[] for _ in self.classes]
        self.tracks: dict[int, dict[str, Any]] = {}
        self.frames = 0
        self.faces = 0

    def add(self, r) -> None:
        self.frames += 1
        c = self.cols
        for f in r.faces:
            self.faces += 1
            c["frame"].append(r.frame)
            c["time_s"].append(r.time_s)
            c["track"].append(f.track)
            x1, y1, x2, y2 = f.box
            c["x1"].append(x1), c["y1"].append(y1), c["x2"].append(x2), c["y2"].append(y2)
            c["score"].append(f.score)
            c["emotion"].append(f.emotion)
            c["confidence"].append(f.confidence)
            for i, k in enumerate(self.classes):
                self.probs[i].append(f.probs.get(k, math.nan))
            t = self.tracks.get(f.track)
            if t is None:
                t = self.tracks[f.track] = {"first_frame": r.frame, "first_s": r.time_s, "frames": 0,
                                            "conf": 0.0, "emotions": Counter()}
            t["last_frame"], t["last_s"] = r.frame, r.time_s
            t["frames"] += 1
            t["conf"] += f.confidence
            t["emotions"][f.emotion] += 1

    def faces_table(self):
        import pyarrow as pa

        n = self.faces
        data = {"video": [self.task.video] * n, "range_start": [self.task.start] * n, **self.cols}
        for k, v in zip(self.classes, self.probs):
            data[f"prob_{_col(k)}"] = v
        return pa.Table.from_pydict(data, schema=faces_schema(self.classes))

    def tracks_table(self):
        import pyarrow as pa

        rows: dict[str, list] = defaultdict(list)
        for tid in sorted(self.tracks):
            t = self.tracks[tid]
            n = t["frames"]
            dom, k = t["emotions"].most_common(1)[0]
            rows["video"].append(self.task.video)
            rows["range_start"].append(self.task.start)
            rows["track"].append(tid)
            for key in ("first_frame", "last_frame", "first_s", "last_s", "frames"):
                rows[key].append(t[key])
            rows["dominant"].append(dom)
            rows["dominant_share"].append(k / n)
            rows["mean_confidence"].append(t["conf"] / n)
            for c in self.classes:
                rows[f"share_{_col(c)}"].append(t["emotions"].get(c, 0) / n)
        schema = tracks_schema(self.classes)
        return pa.Table.from_pydict({f.name: rows.get(f.name, []) for f in schema}, schema=schema)
