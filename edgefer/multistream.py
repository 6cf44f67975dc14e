"""Several sources in one process: one detector and one classifier for every stream.

``edgefer run SRC1 SRC2 ...`` (and :class:`MultiPipeline` from Python) serves cameras, files and
URLs together, the way DeepStream's muxer does at our scale:

* **one model of each kind**: every stream's :class:`~edgefer.pipeline.Pipeline` state (tracks,
  the adaptive loop's cadence, statistics) is its own, but they share the detector and classifier
  sessions (:meth:`Pipeline.fork`), so N cameras cost one set of weights and runtimes;
* **one classifier call per round**: each round takes the next frame of every stream that has one,
  runs detection (or the adaptive loop's motion) per frame, then classifies the face crops of all
  streams in one batch (:meth:`Pipeline.process_steps` yields its crops and waits for their
  probabilities), then tracks each stream;
* **capture never blocks**: each source decodes on its own thread into a small queue; a live
  source drops its oldest frame when the loop falls behind (counted per stream), a file waits;
  a round takes only the newest frame of a live stream and counts the ones it skipped;
* every result carries its stream index, so events, summaries and status are per stream.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .pipeline import Pipeline
from .results import FrameResult
from .sources import Frame, Source, hand_over, open_source
from .stats import Stats


class StreamFeed:
    """A source decoded on its own thread into a bounded queue; files wait, live sources drop the oldest."""

    def __init__(self, index: int, source: Source, arrived: threading.Condition, max_frames: int | None = None,
                 depth: int = 2):
        self.index = index
        self.source = source
        self.max_frames = max_frames
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._arrived = arrived
        self._stop = threading.Event()
        self.done = False
        self.dropped = 0  # frames this feed discarded because the loop was behind (live only)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"edgefer-stream{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: Frame | None) -> None:
        # the end marker (None) always waits for room: a stream's end is never dropped
        self.dropped += hand_over(self._q, item, self.source.live and item is not None, self._stop)
        with self._arrived:
            self._arrived.notify_all()

    def _run(self) -> None:
        n = 0
        try:
            for fr in self.source:
                if self._stop.is_set():
                    break
                self._put(fr)
                n += 1
                if self.max_frames is not None and n >= self.max_frames:
                    break
        except BaseException as e:  # surfaced in the summary; the other streams go on
            self.error = e
        finally:
            self._put(None)

    def take(self) -> tuple[list[Frame], bool]:
        """Frames ready now (at most one for a file, the newest for a live source) and whether the stream ended."""
        got: list[Frame] = []
        ended = False
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                ended = True
                break
            got.append(item)
            if not self.source.live:
                break
        if self.source.live and len(got) > 1:
            self.dropped += len(got) - 1
            got = got[-1:]
        return got, ended

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self.source.close()
        self._thread.join(timeout=2)


@dataclass
class StreamState:
    index: int
    source: Source
    pipe: Pipeline  # its own tracks, adaptive state and stats; the models are shared
    feed: StreamFeed
    ended: bool = False


class MultiPipeline:
    """Run several sources through one detector and one classifier; yields ``(stream, FrameResult)``.

    ``sources``: what :func:`~edgefer.sources.open_source` takes (paths, URLs, camera indices as
    ints or digit strings) or :class:`Source` objects. Other keyword arguments are
    :class:`Pipeline`'s. The streams' faces are classified together, one batch per round.
    """

    def __init__(self, sources: list[Any], realtime: bool | float = False, **pipeline_options: Any):
        if not sources:
            raise ValueError("MultiPipeline needs at least one source")
        pipeline_options.setdefault("overlap", False)  # rounds interleave streams instead
        self.sources: list[Source] = []
        try:
            for s in sources:
                self.sources.append(s if isinstance(s, Source) else open_source(s, realtime=realtime))
            first = Pipeline(**pipeline_options)
        except BaseException:
            for s in self.sources:
                s.close()
            raise
        self.pipes = [first] + [first.fork() for _ in self.sources[1:]]
        self.detector = first.detector
        self.classifier = first.classifier
        self.classes = first.classes
        self.streams: list[StreamState] = []
        self.rounds = 0
        self.batch_sizes = Stats()  # faces classified per round (one classifier call)

    @property
    def stats(self) -> list[Stats]:
        return [s.pipe.stats for s in self.streams]

    def run(self, max_frames: int | None = None) -> Iterator[tuple[int, FrameResult]]:
        arrived = threading.Condition()
        self.streams = []
        for i, (src, pipe) in enumerate(zip(self.sources, self.pipes)):
            pipe.stats = Stats()
            pipe.reset()
            pipe.source = src
            if pipe.adaptive is not None:
                pipe.adaptive.reset_counters()
            feed = StreamFeed(i, src, arrived, max_frames=max_frames)
            self.streams.append(StreamState(i, src, pipe, feed))
        for s in self.streams:
            s.feed.start()
        try:
            while not all(s.ended for s in self.streams):
                ready: list[tuple[StreamState, Frame]] = []
                with arrived:
                    while True:
                        for s in self.streams:
                            if s.ended:
                                continue
                            frames, ended = s.feed.take()
                            ready.extend((s, fr) for fr in frames)
                            if ended:
                                s.ended = True
                                s.pipe.stats.finish()
                        if ready or all(s.ended for s in self.streams):
                            break
                        arrived.wait(timeout=0.05)
                if ready:
                    yield from self._round(ready)
        finally:
            for s in self.streams:
                s.feed.close()
                if s.pipe.stats.end is None:
                    s.pipe.stats.finish()

    def _round(self, ready: list[tuple["StreamState", Frame]]) -> Iterator[tuple[int, FrameResult]]:
        """One round: per-stream detection/motion, one classifier call for all crops, per-stream tracking."""
        self.rounds += 1
        steps = []
        asks: list[tuple[int, np.ndarray]] = []
        for s, fr in ready:
            if s.source.kind in ("image", "folder"):
                s.pipe.reset()
            taken = time.perf_counter()
            gen = s.pipe.process_steps(fr.image, fr.index, fr.time_s, fr.decode_ms)
            try:
                crops = next(gen)
            except StopIteration as stop:  # nothing to classify: the result is ready
                steps.append((s, fr, taken, None, stop.value))
                continue
            asks.append((len(steps), crops))
            steps.append((s, fr, taken, gen, None))
        answers: dict[int, Any] = {}
        nf = {j: len(c) for j, c in asks}
        total_faces = max(1, sum(nf.values()))
        if asks:
            allcrops = np.concatenate([c for _, c in asks]) if len(asks) > 1 else asks[0][1]
            self.batch_sizes.hist["total"].add(float(len(allcrops)))
            t0 = time.perf_counter()
            if self.pipes[0].explain:
                p, c = self.classifier.predict_faces(allcrops, with_cam=True)
            else:
                p, c = self.classifier.predict_faces(allcrops), None
            shared_ms = (time.perf_counter() - t0) * 1e3
            at = 0
            for j, crops in asks:
                n = len(crops)
                answers[j] = (p[at:at + n], c[at:at + n]) if c is not None else p[at:at + n]
                at += n
        else:
            shared_ms = 0.0
        for j, (s, fr, taken, gen, result) in enumerate(steps):
            if gen is not None:
                try:
                    gen.send(answers[j])
                except StopIteration as stop:
                    result = stop.value
                else:  # pragma: no cover - process_steps yields once
                    raise RuntimeError("process_steps asked twice")
                # this frame's share of the one batched call, by its number of faces
                result.timings_ms["classify"] = result.timings_ms.get("classify", 0.0) + shared_ms * nf[j] / total_faces
            result.name = fr.name
            done = time.perf_counter()
            if s.source.live:
                result.timings_ms["total"] = (done - fr.captured) * 1e3
            else:
                result.timings_ms["total"] = (done - taken) * 1e3 + fr.decode_ms
            s.pipe.stats.add(result)
            yield s.index, result

    def dropped(self, stream: int) -> int:
        s = self.streams[stream]
        return s.source.dropped + s.feed.dropped
