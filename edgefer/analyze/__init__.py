"""`edgefer analyze`: many videos in, Parquet tables out, on a local process pool or on Ray.

Archives (thousands of hours of interviews, therapy or classroom video) need per-face, per-frame
tables, not annotated videos. This package runs the same :class:`~edgefer.pipeline.Pipeline` as
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

The package, one module per concern: :mod:`.settings` (settings, layout constants, model digests),
:mod:`.inputs` (videos, ids, resume keys, frame-range tasks), :mod:`.tables` (columns and rows),
:mod:`.store` (atomic writes to a folder or object store), :mod:`.workers` (one task, the local
pool), :mod:`.on_ray` (Ray actors) and :mod:`.driver` (the job, :func:`analyze`).
"""

from __future__ import annotations

from .driver import Report, analyze, read_table
from .inputs import Task, collect_inputs, done_key, plan_ranges, probe_frames, video_id
from .on_ray import RayWorker, is_ray_address, ray_results
from .settings import (
                       DEFAULT_SPLIT_FRAMES,
                       DEFAULT_SPLIT_WARMUP,
                       DONE_DIR,
                       LIST_SUFFIXES,
                       MAX_ATTEMPTS,
                       PROGRESS_EVERY,
                       SCHEMA_VERSION,
                       TABLES,
                       Settings,
                       model_digest,
                       require_pyarrow,
                       require_ray,
)
from .store import open_out, remove_video_files
from .tables import faces_schema, tracks_schema, videos_schema
from .workers import (
                       _range_source as _range_source,  # the tests read frame ranges through it directly
)
from .workers import pool_results, run_task

__all__ = [
    "DEFAULT_SPLIT_FRAMES", "DEFAULT_SPLIT_WARMUP", "DONE_DIR", "LIST_SUFFIXES", "MAX_ATTEMPTS", "PROGRESS_EVERY",
    "SCHEMA_VERSION", "TABLES", "RayWorker", "Report", "Settings", "Task", "analyze", "collect_inputs", "done_key",
    "faces_schema", "is_ray_address", "model_digest", "open_out", "plan_ranges", "pool_results", "probe_frames",
    "ray_results", "read_table", "remove_video_files", "require_pyarrow", "require_ray", "run_task",
    "tracks_schema", "video_id", "videos_schema",
]
