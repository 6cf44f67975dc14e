"""Detection ahead of the rest of the loop, on a worker thread (``Pipeline(overlap=True)``).

Frame N is detected while frame N-1 is classified, tracked and written: ONNX Runtime and
OpenVINO release the GIL, so the two stages share the cores. Two shapes, both in frame order:
the every-frame loop hands whole frames to a worker that detects them (:func:`detect_ahead`); the
adaptive loop decides on the caller's thread and sends only the detector call to a worker
(:func:`adaptive_ahead`), so its decisions stay deterministic. Split from :mod:`edgefer.pipeline`,
which passes its own decision and detector calls in.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np

from .detect import Detections
from .sources import Frame


def adaptive_ahead(frames: Iterator[Frame], decide: Callable[[Frame], Any],
                   detect_timed: Callable[[np.ndarray, int | None], tuple[Detections, float]]
                   ) -> Iterator[tuple[Frame, Detections | None, float]]:
    """Adaptive decisions in frame order on the caller's thread; only the detector runs on a worker.

    Frame N is decided (and its detection started) before frame N-1 is yielded for
    classification and tracking, so detection of N overlaps the rest of N-1 and the decision
    sees the tracks as of N-2: a fixed lag, the same on every run whatever the threads' timing.
    ``decide(frame)`` is the adaptive loop's decision for it (``.detect``, ``.size``);
    ``detect_timed(image, size)`` the detector call, returning the detections and its milliseconds.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgefer-detect")
    pending = None

    def resolve(item):
        fr, fut = item
        if fut is None:
            return fr, None, 0.0
        det, ms = fut.result()
        return fr, det, ms

    try:
        for fr in frames:
            dec = decide(fr)
            fut = pool.submit(detect_timed, fr.image, dec.size) if dec.detect else None
            if pending is not None:
                yield resolve(pending)
            pending = (fr, fut)
        if pending is not None:
            item, pending = pending, None
            yield resolve(item)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def detect_ahead(frames: Iterator[Frame], detect: Callable[[np.ndarray, int], tuple[Detections | None, float]],
                 depth: int = 2) -> Iterator[tuple[Frame, Detections | None, float]]:
    """Run detection on a worker thread, one frame ahead of classification, in order.

    ``detect(image, index)`` is the pipeline's own decision and detector call (None when it skips).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    failure: list[BaseException] = []

    def worker():
        try:
            for fr in frames:
                if stop.is_set():
                    break
                det, ms = detect(fr.image, fr.index)
                while not stop.is_set():
                    try:
                        q.put((fr, det, ms), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # surfaced on the consumer's thread
            failure.append(e)
        finally:
            q.put(None)

    th = threading.Thread(target=worker, name="edgefer-detect", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        try:
            while True:
                q.get_nowait()
        except queue.Empty:
            pass
        th.join(timeout=5)
