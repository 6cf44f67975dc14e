"""`edgefer analyze`: many videos in, Parquet tables out, on a local process pool or on Ray.

Archives (thousands of hours of interviews, therapy or classroom video) need per-face, per-frame
tables, not annotated videos. This module runs the same :class:`~edgefer.pipeline.Pipeline` as
``edgefer run`` over a list of videos and writes three tables that pandas, polars and DuckDB read
as they are::

    OUT/faces/part-<video id>-<range start>.parquet   one row per face per frame
    OUT/tracks/part-<video id>-<range start>.parquet  one row per track
    OUT/videos/<video id>.parquet                     one row per video (status, counts, cost, settings)
    OUT/_done/<video id>.json                         done-markers (resume); ignored by readers

Why this shape:

* **One file per writer.** A worker writes the faces and tracks of the frame range it processed
  into files named by video and range, so no two workers ever write the same file and nothing
  has to be merged. Files are written under a dot-name and renamed into place, so a reader (or a
  killed job) never sees half a file: pyarrow, and so pandas, ignores names starting with ``.``
  or ``_``, and ``*.parquet`` globs do not match them.
* **Resumable.** A video's done-marker holds a key: the video's path, size and mtime, the
  settings that change results and the digests of the detector and classifier manifests (a
  manifest pins the sha256 of every model file, and the pipeline verifies them on load). A video
  whose marker matches is skipped; any other is (re)done from scratch, its old files removed
  first, so after a finished job every table holds exactly one settings set.
* **Fault-isolated.** Each task runs in a worker process; an exception becomes the video's error
  row (status ``error``) and the other videos finish. A worker process that dies (a decoder
  crash, the OOM killer) is replaced and its task retried once. Error rows get no done-marker, so
  the next run tries them again; a video that ended before its frame count (a truncated file)
  gets status ``partial`` and is done. Exit code: 0 every video ``ok``, 1 done with failures
  (an ``error`` or ``partial`` video), 2 bad input before any work (no videos, a bad model).
* **Long videos are split** into frame ranges (``split_frames``, 9000 by default: 5 minutes at
  30 fps), each its own task, so one long file does not serialise the job. A range starts
  ``split_warmup`` frames early (seeking with ``CAP_PROP_POS_FRAMES``) so the tracker and the
  emotion smoothing are warm at its first written frame, but **track ids restart per range**:
  a track is identified by ``(video, range_start, track)``, and the ``range_start`` column says
  which range a row came from. Splitting is part of the settings (it changes tracks), and the same
  split is used locally and on Ray, so both give the same rows.

Local runs use a process pool (``spawn``: no ONNX Runtime state is forked), one worker per core,
each pipeline with ``cores // workers`` runtime threads (1 on a full pool; measured best in
``benchmarks/analyze_scaling.py``). ``ray=...`` runs the same tasks on Ray actors (one pipeline
per actor, loaded once): an embedded local Ray, or an existing cluster by address. Ray tasks
rather than Ray Data: the unit of work is a whole frame range with a stateful pipeline behind it
(models loaded once per actor, tracks carried frame to frame), and the outputs are files written
by the workers; moving decoded frames through Ray's object store would cost more than it buys.

Needs ``pyarrow`` (and ``ray`` for Ray): ``pip install 'edgefer[analyze]'`` / ``'edgefer[ray]'``.
The local pool starts its workers with ``spawn``, which imports the caller's main module in each
worker: a script calling :func:`analyze` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import re
import socket
import time
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import EdgeferError

log = logging.getLogger(__name__)

#: bumped when a table's columns change meaning: part of every done-marker key
SCHEMA_VERSION = 1
TABLES = ("faces", "tracks", "videos")
DONE_DIR = "_done"
LIST_SUFFIXES = {".txt", ".lst", ".list"}
DEFAULT_SPLIT_FRAMES = 9000
DEFAULT_SPLIT_WARMUP = 30
#: a task whose worker process died this many times becomes an error row
MAX_ATTEMPTS = 2
#: a worker reports frame progress every this many frames
PROGRESS_EVERY = 16
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_RAY_ADDRESS_RE = re.compile(r"^(auto|local|ray://.+|[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5})$")


def _install_hint(extra: str) -> str:
    return f"pip install 'edgefer[{extra}]' (from a clone of the repository: pip install '.[{extra}]')"


def require_pyarrow() -> None:
    """Fail with one line naming the extra when pyarrow is absent (before any work)."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ModuleNotFoundError:
        raise EdgeferError(f"`edgefer analyze` writes Parquet with pyarrow, not installed here: {_install_hint('analyze')}") from None


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise EdgeferError(f"`edgefer analyze --ray` needs ray, not installed here: {_install_hint('ray')}") from None


# ----------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """What a worker needs to build its pipeline and cut its ranges (picklable, hashable)."""

    detector: str = "retinaface-mnet025"
    classifier: str = "edgenet"
    backend: str = "auto"
    providers: str | None = None
    device: str | None = None
    det_size: int | None = 640
    conf_thresh: float | None = None
    smoothing: float = 0.5
    detect_every: int | None = None
    overlap: bool = True
    adaptive: bool = True
    max_frames: int | None = None
    split_frames: int = DEFAULT_SPLIT_FRAMES  # 0: never split
    split_warmup: int = DEFAULT_SPLIT_WARMUP
    threads: int | None = None  # runtime threads per pipeline (None: cores // workers; does not change results)

    def result_keys(self) -> dict[str, Any]:
        """The settings that change the rows (threads do not): part of every done-marker key."""
        d = asdict(self)
        d.pop("threads")
        return d

    def pipeline_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "backend": self.backend, "det_size": self.det_size, "conf_thresh": self.conf_thresh,
            "smoothing": self.smoothing, "threads": self.threads, "detect_every": self.detect_every,
            "overlap": self.overlap, "adaptive": self.adaptive,
        }
        if self.providers:
            kw["providers"] = self.providers
        if self.device:
            kw["device"] = self.device
        return kw


def model_digest(ref: str, kind: str) -> str:
    """``sha256:<hex>`` of the artifact's manifest, after verifying its model files.

    The manifest carries the sha256 of every file it names and the pipeline refuses files that
    do not match, so the manifest's own digest identifies the model exactly; checking the files
    here makes a corrupt model one line (exit 2) before any worker starts.
    """
    from .artifact import load, resolve

    load(ref, kind=kind, verify=True)
    return "sha256:" + hashlib.sha256(Path(resolve(ref)).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- inputs


def _is_url(s: str) -> bool:
    return bool(_URL_RE.match(s))


def _videos_in(folder: Path) -> list[str]:
    from .sources import VIDEO_SUFFIXES

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
        if _is_url(s):
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
        if not _is_url(s) and p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise EdgeferError(f"cannot read the list {s}: {getattr(e, 'strerror', None) or e}") from None
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not _is_url(line) and not Path(line).expanduser().is_absolute():
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


def _file_stamp(video: str) -> dict[str, Any]:
    """Size and mtime of a local file (None for a URL or a file that cannot be stat'ed)."""
    if _is_url(video):
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
    if _is_url(video):
        return None
    import cv2

    from . import sources  # noqa: F401  (quiets FFmpeg's own log lines before the first capture)

    cap = cv2.VideoCapture(video)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


# -------------------------------------------------------------------------------------- tasks


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


# ----------------------------------------------------------------------------- frame ranges


def _range_source(video: str, first: int, end: int | None):
    """A :class:`~edgefer.sources.Source` reading frames [first, end) of a file after one seek.

    Built on the public Source protocol (``Pipeline.run`` takes any Source). The file is first
    opened with :func:`~edgefer.sources.open_source`, so the same checks apply (readable,
    decodable container, pixel cap). A frame that does not decode inside the range is stepped
    over by seeking one frame on (counted in ``decode_errors``), at most 64 in a row; the range
    then ends (``ended_early``). Frame times are index / fps, as for a whole file.
    """
    import cv2

    from .sources import Frame, Source, open_source

    probe = open_source(video)
    fps, count = probe.fps, probe.total
    probe.close()

    class RangeSource(Source):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.fps, self.total = fps, (None if count is None else (min(end, count) if end else count) - first)
            self.cap = cv2.VideoCapture(video)

        def __iter__(self) -> Iterator[Frame]:
            cap = self.cap
            if first and (not cap.set(cv2.CAP_PROP_POS_FRAMES, first) or int(cap.get(cv2.CAP_PROP_POS_FRAMES)) != first):
                raise EdgeferError(f"cannot seek {video} to frame {first}")
            idx, misses = first, 0
            while end is None or idx < end:
                t0 = time.perf_counter()
                ok, img = cap.read()
                if not ok or img is None:
                    if count is None or idx >= count or misses >= 64:
                        break
                    misses += 1
                    self.decode_errors += 1
                    idx += 1
                    cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                    continue
                misses = 0
                yield Frame(idx, idx / self.fps, img, decode_ms=(time.perf_counter() - t0) * 1e3)
                idx += 1
            last = count if end is None else (min(end, count) if count else end)
            if last is not None and idx < last:
                self.ended_early = True
                self.frames_missing = last - idx

        def close(self) -> None:
            self.cap.release()

        def describe(self) -> str:
            return f"video {video} frames {first}..{'end' if end is None else end}"

    return RangeSource()


# ------------------------------------------------------------------------------------- tables


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


class _Rows:
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


# --------------------------------------------------------------------------------- filesystem


def open_out(out: str):
    """(pyarrow filesystem, root path) for a local folder or any URI pyarrow supports (s3://...)."""
    from pyarrow import fs as pafs

    if _is_url(out) and not out.startswith("file://"):
        try:
            filesystem, root = pafs.FileSystem.from_uri(out)
        except Exception as e:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
            raise EdgeferError(f"cannot open the output {out}: {str(e).splitlines()[0]}") from None
        return filesystem, root.rstrip("/")
    p = Path(out[len("file://"):] if out.startswith("file://") else out).expanduser().absolute()
    return pafs.LocalFileSystem(), str(p)


def _write_atomic(filesystem, path: str, write: Callable[[str], None]) -> None:
    """Write through a dot-named temporary beside ``path``, then rename it into place."""
    d, name = path.rsplit("/", 1)
    tmp = f"{d}/.{name}.{os.getpid()}.tmp"
    write(tmp)
    filesystem.move(tmp, path)


def _write_parquet(filesystem, path: str, table) -> None:
    import pyarrow.parquet as pq

    _write_atomic(filesystem, path, lambda p: pq.write_table(table, p, filesystem=filesystem, compression="zstd"))


def _write_json(filesystem, path: str, obj: dict) -> None:
    data = (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode("utf-8")

    def w(p: str) -> None:
        with filesystem.open_output_stream(p) as f:
            f.write(data)

    _write_atomic(filesystem, path, w)


def _read_json(filesystem, path: str) -> dict | None:
    try:
        with filesystem.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, OSError, ValueError):
        return None


def _listdir(filesystem, d: str) -> list[str]:
    from pyarrow import fs as pafs

    try:
        return [i.path for i in filesystem.get_file_info(pafs.FileSelector(d, allow_not_found=True))]
    except (FileNotFoundError, OSError):
        return []


def _delete(filesystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def _parts_by_video(filesystem, root: str) -> dict[str, list[str]]:
    """video id -> its part files (faces and tracks), from one listing of each folder."""
    out: dict[str, list[str]] = defaultdict(list)
    for table in ("faces", "tracks"):
        for p in _listdir(filesystem, f"{root}/{table}"):
            name = p.rsplit("/", 1)[-1]
            if name.startswith("part-"):
                out[name.split("-")[1]].append(p)
    return out


def remove_video_files(filesystem, root: str, vid: str, parts: dict[str, list[str]] | None = None) -> None:
    """Every file of one video (all its ranges, its row and its marker), before it is redone."""
    for p in (parts if parts is not None else _parts_by_video(filesystem, root)).get(vid, []):
        _delete(filesystem, p)
    _delete(filesystem, f"{root}/videos/{vid}.parquet")
    _delete(filesystem, f"{root}/{DONE_DIR}/{vid}.json")


# ------------------------------------------------------------------------------------ workers


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = msg if isinstance(e, EdgeferError) else f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text[:500]


_PIPE: tuple[Settings, Any] | None = None


def _pipeline(settings: Settings):
    """The worker's pipeline, built once per process (loading the models takes seconds)."""
    global _PIPE
    if _PIPE is None or _PIPE[0] != settings:
        from .pipeline import Pipeline

        _PIPE = (settings, Pipeline(settings.detector, settings.classifier, **settings.pipeline_kwargs()))
    return _PIPE[1]


def run_task(task: Task, settings: Settings, out: str, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Process one frame range and write its faces and tracks files; never raises.

    Returns what the driver needs for the video's row: counts, decode problems, cost, or the error.
    """
    t0 = time.perf_counter()
    res: dict[str, Any] = {"vid": task.vid, "video": task.video, "start": task.start, "index": task.index,
                           "frames": 0, "faces": 0, "tracks": 0, "decode_errors": 0, "ended_early": False,
                           "frames_missing": 0, "source_fps": None, "fps": None, "cpu_ms_per_frame": None,
                           "wall_s": 0.0, "error": None, "host": socket.gethostname()}
    try:
        pipe = _pipeline(settings)
        if task.start == 0:
            src: Any = task.video
            stop = task.end
        else:
            src = _range_source(task.video, task.start - task.warmup, task.end)
            stop = None
        rows = _Rows(pipe.classes, task)
        pending = 0
        for r in pipe.run(src, max_frames=stop):
            if r.frame < task.start:
                continue  # warm-up before the range: tracker and smoothing only
            rows.add(r)
            pending += 1
            if progress is not None and pending >= PROGRESS_EVERY:
                progress(pending)
                pending = 0
        if progress is not None and pending:
            progress(pending)
        source = pipe.source
        filesystem, root = open_out(out)
        _write_parquet(filesystem, f"{root}/faces/{task.name}.parquet", rows.faces_table())
        _write_parquet(filesystem, f"{root}/tracks/{task.name}.parquet", rows.tracks_table())
        cpu = pipe.stats.cpu_ms_per_frame()
        res.update(frames=rows.frames, faces=rows.faces, tracks=len(rows.tracks),
                   decode_errors=int(getattr(source, "decode_errors", 0) or 0),
                   ended_early=bool(getattr(source, "ended_early", False)),
                   frames_missing=int(getattr(source, "frames_missing", 0) or 0),
                   source_fps=float(getattr(source, "fps", 0.0) or 0.0) or None,
                   fps=pipe.stats.fps(), cpu_ms_per_frame=None if cpu is None else float(cpu))
        if rows.frames == 0 and not res["ended_early"]:
            res["error"] = f"no frame could be read from {task.video}" + (f" after frame {task.start}" if task.start else "")
    except Exception as e:  # one video's failure is its error row, never the job's end
        res["error"] = _one_line(e)
    res["wall_s"] = time.perf_counter() - t0
    return res


# local process pool ---------------------------------------------------------------------------

_PROGRESS_Q = None
_SETTINGS: Settings | None = None


def _init_worker(settings: Settings, q) -> None:
    global _PROGRESS_Q, _SETTINGS
    _PROGRESS_Q, _SETTINGS = q, settings
    logging.getLogger("edgefer").setLevel(logging.ERROR)  # decode warnings land in the rows
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except Exception:  # pragma: no cover - builds without cv2.utils.logging
        pass


def _pool_task(task: Task, out: str) -> dict[str, Any]:
    q = _PROGRESS_Q
    assert _SETTINGS is not None
    return run_task(task, _SETTINGS, out, (lambda n: q.put(n)) if q is not None else None)


def _error_result(task: Task, error: str) -> dict[str, Any]:
    return {"vid": task.vid, "video": task.video, "start": task.start, "index": task.index, "frames": 0, "faces": 0,
            "tracks": 0, "decode_errors": 0, "ended_early": False, "frames_missing": 0, "source_fps": None,
            "fps": None, "cpu_ms_per_frame": None, "wall_s": 0.0, "error": error, "host": None}


def pool_results(tasks: Sequence[Task], settings: Settings, out: str, workers: int,
                 on_frames: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run tasks on a local process pool, yielding each result as it finishes.

    At most ``workers`` tasks are in flight, so when a worker process dies (BrokenProcessPool)
    the tasks that were running are exactly those in flight: the pool is rebuilt and they are
    retried; a task in flight at ``MAX_ATTEMPTS`` deaths becomes an error row.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from queue import Empty

    ctx = mp.get_context("spawn")  # no forked ONNX Runtime / decoder threads
    q = ctx.Queue()
    todo = deque(tasks)
    deaths: Counter = Counter()

    def drain() -> None:
        n = 0
        try:
            while True:
                n += q.get_nowait()
        except Empty:
            pass
        if n and on_frames is not None:
            on_frames(n)

    while todo:
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(settings, q))
        inflight: dict[Any, Task] = {}
        broken = False
        try:
            while todo or inflight:
                while todo and len(inflight) < workers and not broken:
                    t = todo.popleft()
                    try:
                        inflight[ex.submit(_pool_task, t, out)] = t
                    except BrokenProcessPool:
                        todo.appendleft(t)
                        broken = True
                if not inflight:
                    break
                done, _ = wait(list(inflight), timeout=0.25, return_when=FIRST_COMPLETED)
                drain()
                for f in done:
                    t = inflight.pop(f)
                    try:
                        yield f.result()
                    except BrokenProcessPool:
                        broken = True
                        deaths[t] += 1
                        if deaths[t] >= MAX_ATTEMPTS:
                            yield _error_result(t, f"the worker process died {deaths[t]} times on this video "
                                                   "(a decoder crash or out of memory)")
                        else:
                            todo.appendleft(t)
                if broken and not inflight:
                    break
        finally:
            ex.shutdown(wait=not broken, cancel_futures=True)
            drain()
    q.close()


# Ray -----------------------------------------------------------------------------------------


class RayWorker:
    """A Ray actor's state: one pipeline, loaded on the first task, reused for the next ones."""

    def __init__(self, settings: Settings, out: str):
        _init_worker(settings, None)
        self.settings, self.out = settings, out

    def run(self, task: Task) -> dict[str, Any]:
        return run_task(task, self.settings, self.out)


def is_ray_address(value: str) -> bool:
    return bool(_RAY_ADDRESS_RE.match(value))


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` / ``ray://HOST:PORT`` nobody answers on, before ``ray.init``:
    Ray itself retries an unreachable head for minutes (and ignores SIGTERM meanwhile)."""
    hostport = address.split("://", 1)[-1]
    if address in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise EdgeferError(f"cannot reach Ray at {address}: {getattr(e, 'strerror', None) or e}") from None


def ray_results(tasks: Sequence[Task], settings: Settings, out: str, address: str | None, workers: int | None,
                on_frames: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Run tasks on Ray actors (one pipeline each), yielding each result as it finishes.

    ``address`` None or ``"local"``: an embedded local Ray with ``workers`` CPUs (started here and
    shut down at the end; a Ray already initialised in this process is used as it is). Otherwise
    an existing cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``): one actor per CPU it has.
    Outputs are written by the actors, so ``out`` must be reachable from every node (a shared
    folder or an object store URI); so must the videos.
    """
    import ray
    from ray.exceptions import RayError

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address in (None, "local"):
                ray.init(num_cpus=workers or _cores(), object_store_memory=256 * 1024**2, **kw)
            else:
                _check_reachable(address)
                ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EdgeferError(f"cannot start or reach Ray at {address or 'local'}: {_one_line(e)}") from None
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or cpus, len(tasks)))
        Actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=MAX_ATTEMPTS - 1)(RayWorker)
        actors = [Actor.remote(settings, out) for _ in range(n)]
        todo = deque(tasks)
        inflight: dict[Any, tuple[Task, Any]] = {}
        for a in actors:
            if todo:
                t = todo.popleft()
                inflight[a.run.remote(t)] = (t, a)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                t, a = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except RayError as e:
                    res = _error_result(t, f"the Ray worker died on this video: {_one_line(e)}")
                if on_frames is not None and res.get("frames"):
                    on_frames(res["frames"])
                yield res
                if todo:
                    nt = todo.popleft()
                    inflight[a.run.remote(nt)] = (nt, a)
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------- driver


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


@dataclass
class Report:
    """What a job did: counts per status, totals, the failures, and where the tables are."""

    out: str
    videos: int = 0
    done: int = 0
    skipped: int = 0
    partial: int = 0
    failed: int = 0
    frames: int = 0
    faces: int = 0
    wall_s: float = 0.0
    workers: int = 0
    engine: str = "local"
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.partial else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [{"video": v, "error": e} for v, e in self.failures]
        d["fps"] = round(self.frames / self.wall_s, 3) if self.wall_s > 0 else None
        d["exit_code"] = self.exit_code
        return d


def _video_row(video: str, vid: str, stamp: dict[str, Any], results: list[dict[str, Any]], settings: Settings,
               digests: dict[str, str], key: str) -> dict[str, Any]:
    from . import __version__

    results = sorted(results, key=lambda r: r["start"])
    errors = [r["error"] for r in results if r["error"]]
    frames = sum(r["frames"] for r in results)
    wall = sum(r["wall_s"] for r in results)
    cpu_frames = [(r["cpu_ms_per_frame"], r["frames"]) for r in results if r["cpu_ms_per_frame"] is not None and r["frames"]]
    ended = any(r["ended_early"] for r in results)
    status = "error" if errors else "partial" if ended else "ok"
    src_fps = next((r["source_fps"] for r in results if r["source_fps"]), None)
    last = max((r for r in results if r["frames"]), key=lambda r: r["start"], default=None)
    return {
        "video": video, "video_id": vid, "status": status, "error": "; ".join(dict.fromkeys(errors)) or None,
        "size_bytes": stamp["size"], "mtime_ns": stamp["mtime_ns"],
        "frames": frames, "faces": sum(r["faces"] for r in results), "tracks": sum(r["tracks"] for r in results),
        "ranges": len(results), "source_fps": src_fps,
        "duration_s": (frames / src_fps) if src_fps and last is not None else None,
        # the pipelines' own rate (model loading excluded): frames over the seconds they took
        "fps": (frames / proc) if (proc := sum(r["frames"] / r["fps"] for r in results if r["frames"] and r["fps"])) > 0 else None,
        "cpu_ms_per_frame": (sum(c * n for c, n in cpu_frames) / sum(n for _, n in cpu_frames)) if cpu_frames else None,
        "wall_s": wall, "decode_errors": sum(r["decode_errors"] for r in results), "ended_early": ended,
        "frames_missing": sum(r["frames_missing"] for r in results),
        "settings": json.dumps(settings.result_keys() | {"threads": settings.threads}, sort_keys=True),
        "detector_sha256": digests["detector"], "classifier_sha256": digests["classifier"],
        "edgefer_version": __version__, "hosts": ",".join(sorted({r["host"] for r in results if r["host"]})),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": key,
    }


def analyze(inputs: Sequence[str], out: str, settings: Settings = Settings(), *, workers: int | None = None,
            ray: str | None = None, force: bool = False, progress: bool = False) -> Report:
    """Analyze videos into Parquet tables under ``out``; the Python API behind ``edgefer analyze``.

    ``workers``: processes (local) or actors (Ray); default one per core (local / embedded Ray)
    or one per CPU of the cluster. ``ray``: None for the local pool, ``"local"`` for an embedded
    Ray, or a cluster address. ``force``: redo videos that are already done. Bad input (no videos,
    a bad model, an output that cannot be created) raises :class:`EdgeferError` before any work;
    a video's own failure is its error row (``Report.failed``).
    """
    require_pyarrow()
    if ray is not None:
        require_ray()
    videos = collect_inputs(inputs)
    digests = {"detector": model_digest(settings.detector, "detector"),
               "classifier": model_digest(settings.classifier, "classifier")}
    cores = _cores()
    cluster = ray is not None and ray != "local"
    if cluster:
        _check_reachable(ray)
    if workers is None and not cluster:
        workers = cores  # a cluster: one actor per CPU it has (ray_results)
    if workers is not None and workers < 1:
        raise EdgeferError(f"workers must be at least 1, not {workers}")
    if settings.threads is None or settings.threads < 1:
        settings = replace(settings, threads=1 if cluster else max(1, cores // (workers or cores)))
    filesystem, root = open_out(out)
    try:
        for d in (*TABLES, DONE_DIR):
            filesystem.create_dir(f"{root}/{d}", recursive=True)
    except (OSError, FileExistsError) as e:
        raise EdgeferError(f"cannot create the output folder {out}: {str(e).splitlines()[0]}") from None
    for t in (*TABLES, DONE_DIR):  # temporaries of a killed job
        for p in _listdir(filesystem, f"{root}/{t}"):
            if p.rsplit("/", 1)[-1].startswith(".") and p.endswith(".tmp"):
                _delete(filesystem, p)
    parts = _parts_by_video(filesystem, root)

    report = Report(out=out, videos=len(videos), workers=workers or 0, engine="ray" if ray is not None else "local")
    t_start = time.perf_counter()
    plans: dict[str, dict[str, Any]] = {}
    tasks: list[Task] = []
    todo: list[tuple[str, str, dict[str, Any], str]] = []
    for video in videos:
        vid = video_id(video)
        stamp = _file_stamp(video)
        key = done_key(video, stamp, settings, digests)
        marker = _read_json(filesystem, f"{root}/{DONE_DIR}/{vid}.json")
        if not force and marker is not None and marker.get("key") == key:
            report.skipped += 1
            continue
        remove_video_files(filesystem, root, vid, parts)
        todo.append((video, vid, stamp, key))
    # frame counts (for ranges and the progress bar): opening a container is I/O-bound, and
    # OpenCV releases the GIL, so an archive of thousands of files is probed on threads
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(probe_frames, [t[0] for t in todo]))
    for (video, vid, stamp, key), count in zip(todo, counts):
        vt = plan_ranges(video, count, settings)
        expect = count if settings.max_frames is None or count is None else min(count, settings.max_frames)
        plans[vid] = {"video": video, "stamp": stamp, "key": key, "left": len(vt), "results": [], "frames": expect or 0}
        tasks.extend(vt)
    # long ranges first: the job ends when its longest task does
    tasks.sort(key=lambda t: -((t.end or 10**12) - t.start))

    bars = _Bars(progress, len(plans), sum(p["frames"] for p in plans.values()))
    try:
        if tasks:
            results = (ray_results(tasks, settings, out, ray, workers, bars.frames) if ray is not None
                       else pool_results(tasks, settings, out, min(workers or cores, len(tasks)), bars.frames))
            for res in results:
                plan = plans[res["vid"]]
                plan["results"].append(res)
                plan["left"] -= 1
                if plan["left"]:
                    continue
                row = _video_row(plan["video"], res["vid"], plan["stamp"], plan["results"], settings, digests, plan["key"])
                _finish_video(filesystem, root, row, [r["start"] for r in plan["results"]])
                report.frames += row["frames"]
                report.faces += row["faces"]
                if row["status"] == "error":
                    report.failed += 1
                    report.failures.append((row["video"], row["error"]))
                else:
                    report.done += 1
                    if row["status"] == "partial":
                        report.partial += 1
                        report.failures.append((row["video"], f"ended early: {row['frames_missing']} frames missing, "
                                                              f"{row['decode_errors']} undecodable"))
                bars.video_done()
    finally:
        bars.close()
    report.wall_s = time.perf_counter() - t_start
    return report


def _finish_video(filesystem, root: str, row: dict[str, Any], starts: list[int]) -> None:
    """The video's row, then (unless it failed) its done-marker; a failed video keeps no part files."""
    import pyarrow as pa

    vid = row["video_id"]
    if row["status"] == "error":  # the ranges that did succeed: their files go too
        remove_video_files(filesystem, root, vid, {vid: [f"{root}/{t}/part-{vid}-{s:09d}.parquet"
                                                         for t in ("faces", "tracks") for s in starts]})
    _write_parquet(filesystem, f"{root}/videos/{vid}.parquet", pa.Table.from_pylist([row], schema=videos_schema()))
    if row["status"] != "error":
        _write_json(filesystem, f"{root}/{DONE_DIR}/{vid}.json",
                    {"key": row["key"], "video": row["video"], "status": row["status"], "frames": row["frames"],
                     "finished_at": row["finished_at"]})


class _Bars:
    """Two tqdm bars (videos, frames) on stderr; nothing when progress is off or not a terminal."""

    def __init__(self, enabled: bool, videos: int, frames: int):
        self.v = self.f = None
        if enabled and videos:
            from tqdm import tqdm

            self.v = tqdm(total=videos, unit="video", desc="videos", position=0, disable=None, dynamic_ncols=True)
            self.f = tqdm(total=frames or None, unit="frame", desc="frames", position=1, disable=None,
                          dynamic_ncols=True, smoothing=0.1)

    def frames(self, n: int) -> None:
        if self.f is not None:
            self.f.update(n)

    def video_done(self) -> None:
        if self.v is not None:
            self.v.update(1)

    def close(self) -> None:
        for b in (self.f, self.v):
            if b is not None:
                b.close()


def read_table(out: str, table: str):
    """One of the tables as a pyarrow Table (``faces``, ``tracks`` or ``videos``): what the tests
    and the benchmark read; users read the folders with pandas, polars or DuckDB directly."""
    import pyarrow.dataset as ds

    filesystem, root = open_out(out)
    return ds.dataset(f"{root}/{table}", filesystem=filesystem, format="parquet").to_table()

