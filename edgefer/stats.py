"""Run statistics in bounded memory: per-stage latency percentiles that never grow with the run.

A loop that runs for weeks on a 30 fps camera cannot keep one float per frame and stage (that
was ~190 bytes a frame, about half a gigabyte a day). Latencies go into a log-bucketed histogram
instead: a fixed array of counts whose bucket edges grow by 1% each, so any percentile read from
it is within 1% of the exact value, the mean and maximum are exact, and memory is the same after
ten frames or ten million.
"""

from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np

STAGES = ("decode", "detect", "classify", "track", "total")


class LatencyHistogram:
    """Streaming distribution of non-negative values (milliseconds) with ~1% relative error.

    Buckets are geometric between ``lo`` and ``hi`` (ratio ``1 + rel``); values below ``lo``
    share the first bucket, values above ``hi`` the last. A percentile is reported as the
    geometric middle of its bucket, clipped to the exact minimum and maximum seen.
    """

    def __init__(self, lo: float = 1e-3, hi: float = 1e7, rel: float = 0.01):
        self.lo = lo
        self._log_ratio = math.log1p(rel)
        self._n_buckets = int(math.ceil(math.log(hi / lo) / self._log_ratio)) + 2
        self.counts = np.zeros(self._n_buckets, np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        v = float(value)
        if not math.isfinite(v):
            return
        v = max(v, 0.0)
        i = 0 if v <= self.lo else min(self._n_buckets - 1, 1 + int(math.log(v / self.lo) / self._log_ratio))
        self.counts[i] += 1
        self.count += 1
        self.total += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)

    def extend(self, values: Iterable[float]) -> None:
        for v in values:
            self.add(v)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1) of the values added, within the bucket width (1%)."""
        if not self.count:
            return 0.0
        rank = q * (self.count - 1)  # same convention as numpy's linear percentile, to the bucket
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, math.floor(rank) + 1))
        if i == 0:
            mid = self.lo
        else:
            lower = self.lo * math.exp((i - 1) * self._log_ratio)
            mid = lower * math.exp(0.5 * self._log_ratio)
        return float(min(max(mid, self.min), self.max))

    def summary(self) -> dict[str, float]:
        return {"p50": self.quantile(0.5), "p99": self.quantile(0.99), "mean": self.mean}


class Stats:
    """Per-stage latencies (ms) and counters of a run, in constant memory."""

    def __init__(self) -> None:
        self.hist: dict[str, LatencyHistogram] = {s: LatencyHistogram() for s in STAGES}
        self.frames = 0
        self.faces = 0
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.first_result: float | None = None
        self.cpu_first: float | None = None
        self.end: float | None = None
        self.cpu_end: float | None = None

    def add(self, r) -> None:
        """Count a :class:`~edgefer.pipeline.FrameResult` and its per-stage timings."""
        if self.first_result is None:
            self.first_result = time.perf_counter()
            self.cpu_first = time.process_time()
        self.frames += 1
        self.faces += len(r.faces)
        for k, v in r.timings_ms.items():
            h = self.hist.get(k)
            if h is None:
                h = self.hist[k] = LatencyHistogram()
            h.add(v)

    def finish(self) -> None:
        self.end = time.perf_counter()
        self.cpu_end = time.process_time()

    def fps(self) -> float:
        """End-to-end frames per second, from the first result to the last (start-up excluded)."""
        end = self.end or time.perf_counter()
        if self.first_result is None or self.frames < 2:
            total = end - self.start
            return self.frames / total if total > 0 else 0.0
        span = end - self.first_result
        return (self.frames - 1) / span if span > 0 else 0.0

    def cpu_ms_per_frame(self) -> float | None:
        """Process CPU time (user + system, every thread) per frame, start-up excluded.

        Measured over the same span as :meth:`fps` (first result to last); what decides battery,
        heat and how many cameras one box serves.
        """
        end = self.cpu_end if self.cpu_end is not None else time.process_time()
        if self.cpu_first is None or self.frames < 2:
            return (end - self.cpu_start) * 1e3 / self.frames if self.frames else None
        return (end - self.cpu_first) * 1e3 / (self.frames - 1)

    def mean(self, stage: str) -> float:
        h = self.hist.get(stage)
        return h.mean if h is not None else 0.0

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {k: h.summary() for k, h in self.hist.items() if h.count}
