"""The work of one task, and the local process pool that runs tasks.

:func:`run_task` processes one frame range with a pipeline built once per process and writes its
faces and tracks files; it never raises (a failure is the result's ``error``). :func:`pool_results`
runs tasks on ``spawn`` worker processes and retries those a dying worker took with it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import EdgeferError
from .inputs import Task
from .settings import MAX_ATTEMPTS, PROGRESS_EVERY, Settings
from .store import open_out, write_parquet
from .tables import TaskRows


def _range_source(video: str, first: int, end: int | None):
    """A :class:`~edgefer.sources.Source` reading frames [first, end) of a file after one seek.

    Built on the public Source protocol (``Pipeline.run`` takes any Source). The file is first
    opened with :func:`~edgefer.sources.open_source`, so the same checks apply (readable,
    decodable container, pixel cap). A frame that does not decode inside the range is stepped
    over by seeking one frame on (counted in ``decode_errors``), at most 64 in a row; the range
    then ends (``ended_early``). Frame times are index / fps, as for a whole file.
    """
    import cv2

    from ..capture import open_video_file
    from ..sources import Frame, Source, open_source

    probe = open_source(video)
    fps, count = probe.fps, probe.total
    probe.close()

    class RangeSource(Source):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.fps, self.total = fps, (None if count is None else (min(end, count) if end else count) - first)
            # the decoder `edgefer run` uses (PyAV by default: the same pixels on every CPU)
            self.cap = open_video_file(video)
            if self.cap is None:
                raise EdgeferError(f"cannot open {video} as a video")

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


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = msg if isinstance(e, EdgeferError) else f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text[:500]


_PIPE: tuple[Settings, Any] | None = None


def _pipeline(settings: Settings):
    """The worker's pipeline, built once per process (loading the models takes seconds)."""
    global _PIPE
    if _PIPE is None or _PIPE[0] != settings:
        from ..pipeline import Pipeline

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
        rows = TaskRows(pipe.classes, task)
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
        write_parquet(filesystem, f"{root}/faces/{task.name}.parquet", rows.faces_table())
        write_parquet(filesystem, f"{root}/tracks/{task.name}.parquet", rows.tracks_table())
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
        res["error"] = one_line(e)
    res["wall_s"] = time.perf_counter() - t0
    return res


_PROGRESS_Q = None
_SETTINGS: Settings | None = None


def init_worker(settings: Settings, q) -> None:
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


def error_result(task: Task, error: str) -> dict[str, Any]:
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
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(settings, q))
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
                            yield error_result(t, f"the worker process died {deaths[t]} times on this video "
                                                   "(a decoder crash or out of memory)")
                        else:
                            todo.appendleft(t)
                if broken and not inflight:
                    break
        finally:
            ex.shutdown(wait=not broken, cancel_futures=True)
            drain()
    q.close()
