"""The job's inputs: videos named by files, folders, globs and list files; their ids, resume keys
and frame counts; and their cut into frame-range tasks (see :mod:`edgefer.analyze`, "Long
videos are split").
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EdgeferError
from .settings import LIST_SUFFIXES, SCHEMA_VERSION, Settings, is_url


def _videos_in(folder: Path) -> list[str]:
    from ..sources import VIDEO_SUFFIXES

    return sorted(str(p.resolve()) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def collect_inputs(items: Sequence[str]) -> list[str]:
    """Videos named by files, folders (searched recursively for video suffixes), globs and list
    files (``.txt``/``.lst``/``.list``: one path or URL per line, ``#`` comments, relative paths
    against the list's folder). URLs are kept as they are. Duplicates are dropped, order kept.

    An argument that names nothing is bad input (exit 2); a missing path inside a list file is
    kept and becomes that video's error row, so one stale line does not stop an archive job.
    """
    out: list[str] = []

    def add(s: str, from_list: bool) -> None:
        if is_url(s):
            out.append(s)
            return
        p = Path(s).expanduser()
        if p.is_dir():
            found = _videos_in(p)
            if not found and not from_list:
                raise EdgeferError(f"folder {s} has no videos")
            out.extend(found)
        elif p.is_file():
            out.append(str(p.resolve()))
        elif any(c in s for c in "*?["):
            hits = sorted(glob.glob(str(p), recursive=True))
            if not hits and not from_list:
                raise EdgeferError(f"no file matches {s}")
            for h in hits:
                add(h, True)
        elif from_list:
            out.append(str(p.absolute()))  # an error row for this one video
        else:
            raise EdgeferError(f"no such file or folder: {s}")

    for item in items:
        s = str(item)
        p = Path(s).expanduser()
        if not is_url(s) and p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise EdgeferError(f"cannot read the list {s}: {getattr(e, 'strerror', None) or e}") from None
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not is_url(line) and not Path(line).expanduser().is_absolute():
                    line = str(p.parent / line)
                add(line, True)
        else:
            add(s, False)
    out = list(dict.fromkeys(out))
    if not out:
        raise EdgeferError("no videos to analyze")
    return out


def video_id(video: str) -> str:
    """A short stable id of a video's path or URL: names its files in the output."""
    return hashlib.sha256(video.encode("utf-8")).hexdigest()[:16]


def file_stamp(video: str) -> dict[str, Any]:
    """Size and mtime of a local file (None for a URL or a file that cannot be stat'ed)."""
    if is_url(video):
        return {"size": None, "mtime_ns": None}
    try:
        st = os.stat(video)
    except OSError:
        return {"size": None, "mtime_ns": None}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def done_key(video: str, stamp: dict[str, Any], settings: Settings, digests: dict[str, str]) -> str:
    """The resume key: same key, same rows. Video identity, result settings, model digests."""
    blob = json.dumps({"schema": SCHEMA_VERSION, "video": video, **stamp, "settings": settings.result_keys(),
                       "models": digests}, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def probe_frames(video: str) -> int | None:
    """The container's frame count (None for URLs and unreadable files: one task, read to the end)."""
    if is_url(video):
        return None
    import cv2

    from .. import sources  # noqa: F401  (quiets FFmpeg's own log lines before the first capture)

    cap = cv2.VideoCapture(video)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


@dataclass(frozen=True)
class Task:
    """One frame range of one video: frames [start, end) are written (end None: to the end)."""

    video: str
    vid: str
    start: int
    end: int | None
    index: int  # range number within the video
    ranges: int  # how many ranges the video was cut into
    warmup: int = 0  # frames before ``start`` read to warm the tracker, not written

    @property
    def name(self) -> str:
        return f"part-{self.vid}-{self.start:09d}"


def plan_ranges(video: str, frames: int | None, settings: Settings) -> list[Task]:
    """Cut a video into tasks of about ``split_frames`` frames (the last one reads to the end).

    The container's frame count may be off by a few frames, so the last range never stops at
    it: it reads until the file ends (or ``max_frames``).
    """
    vid = video_id(video)
    n = frames
    if n is not None and settings.max_frames is not None:
        n = min(n, settings.max_frames)
    step = settings.split_frames
    if not step or n is None or n < 1.5 * step:
        return [Task(video, vid, 0, settings.max_frames, 0, 1)]
    starts = list(range(0, n, step))
    if n - starts[-1] < step // 2:  # no short tail range: the last one takes it
        starts.pop()
    tasks = []
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else settings.max_frames
        tasks.append(Task(video, vid, s, end, i, len(starts), warmup=min(settings.split_warmup, s)))
    return tasks
