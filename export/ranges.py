"""Activation ranges for INT8 calibration in bounded memory.

Why this module exists: ONNX Runtime's histogram calibrators (entropy, percentile) keep every
intermediate output of every calibration sample until the data reader is exhausted, then stack
them per tensor. On RetinaFace at a 640 px long side that is about 75 MB per frame, so the
README's 300-frame detector export peaked at 23 GB of RAM. Here the statistics are accumulated
batch by batch and the activations are dropped as soon as they are counted:

* ``minmax``: ONNX Runtime's own :class:`MinMaxCalibrater` (its augmented graph reduces each
  tensor to two numbers in the graph), fed by a lazy reader, so only the batch being run is in
  memory.
* ``percentile`` / ``entropy``: two passes over the samples with ONNX Runtime's augmented graph
  (every calibrated tensor as an output). Pass 1 keeps per tensor the min, max and the min/max of
  the absolute value; pass 2 adds each batch into a fixed-size histogram per tensor whose edges
  come from pass 1. Those are exactly the edges ONNX Runtime's collector derives when it sees all
  the data at once (``num_bins`` bins over the data's range, or over ``[-t, t]``), and histogram
  counts add, so the histograms - and the ranges that ONNX Runtime's own percentile / entropy
  rule then picks from them - equal the all-in-memory result, whatever the batch size. One pass
  with growing histograms (ONNX Runtime merging successive ``collect_data`` calls) would depend on
  the order and size of the chunks; a second inference pass is the price of not depending on it.

Batches are sized from the first sample's actual output volume (``budget_mb`` of activations per
batch), so a 48x48 classifier runs in large batches and a 640 px detector in small ones.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

#: activations held at once while collecting histogram statistics (one batch of outputs)
BUDGET_MB = 128
MAX_BATCH = 64


class Samples(Protocol):
    """Model-ready calibration samples, first axis = samples, sliced lazily (an ``np.ndarray``
    qualifies; :class:`edgefer.export.frames.FrameBatches` builds batches on demand)."""

    def __len__(self) -> int: ...

    def __getitem__(self, s: slice) -> np.ndarray: ...


def batch_slices(n: int, batch: int) -> Iterator[slice]:
    for i in range(0, n, batch):
        yield slice(i, min(i + batch, n))


class _LazyReader:
    """``CalibrationDataReader`` that builds each batch only when ONNX Runtime asks for it."""

    def __init__(self, input_name: str, samples: Samples, batch: int):
        self.input_name, self.samples, self.batch = input_name, samples, batch
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        s = next(self._it, None)
        return None if s is None else {self.input_name: self.samples[s]}

    def rewind(self) -> None:
        self._it = batch_slices(len(self.samples), self.batch)


def _reader(input_name: str, samples: Samples, batch: int):
    from onnxruntime.quantization import CalibrationDataReader

    cls = type("EdgeferLazyCalibrationReader", (_LazyReader, CalibrationDataReader), {})
    return cls(input_name, samples, batch)


class HistogramStats:
    """Per-tensor range statistics (pass 1) and fixed-edge histograms (pass 2).

    ``absolute`` selects ONNX Runtime's symmetric-percentile collection (histogram of ``|x|``
    over ``[min |x|, max |x|]``); otherwise its value collection (histogram of ``x`` over
    ``[-t, t]`` with ``t = max(|min|, |max|)``), which entropy and asymmetric percentile use.
    """

    def __init__(self, num_bins: int, absolute: bool):
        self.num_bins = num_bins
        self.absolute = absolute
        self.lo: dict[str, np.ndarray] = {}
        self.hi: dict[str, np.ndarray] = {}
        self.alo: dict[str, np.ndarray] = {}
        self.ahi: dict[str, np.ndarray] = {}
        self.hist: dict[str, np.ndarray] = {}
        self.edges: dict[str, np.ndarray] = {}
        self._range: dict[str, tuple[Any, Any]] = {}

    def observe(self, name: str, arr: np.ndarray) -> None:
        """Pass 1: fold one batch of ``name`` into its min / max (and |x| min / max)."""
        a = arr.reshape(-1)
        if a.size == 0:
            return
        mn, mx = np.nanmin(a), np.nanmax(a)
        self.lo[name] = mn if name not in self.lo else min(self.lo[name], mn)
        self.hi[name] = mx if name not in self.hi else max(self.hi[name], mx)
        if self.absolute:
            ab = np.abs(a)
            amn, amx = np.nanmin(ab), np.nanmax(ab)
            self.alo[name] = amn if name not in self.alo else min(self.alo[name], amn)
            self.ahi[name] = amx if name not in self.ahi else max(self.ahi[name], amx)

    def _bins_range(self, name: str) -> tuple[Any, Any]:
        r = self._range.get(name)
        if r is None:
            if self.absolute:
                # what np.histogram(|x|, bins=N) takes itself: (min, max) as numpy scalars of x's dtype
                # (same types -> same float arithmetic for the edges -> the same bins)
                r = (self.alo[name], self.ahi[name])
            else:
                dt = self.lo[name].dtype
                t = np.array(max(abs(self.lo[name]), abs(self.hi[name])), dtype=dt)
                r = (-t, t)
            if not (np.isfinite(r[0]) and np.isfinite(r[1])):
                raise ValueError(f"calibration: tensor {name!r} has non-finite activations (range {r[0]}..{r[1]})")
            self._range[name] = r
        return r

    def count(self, name: str, arr: np.ndarray) -> None:
        """Pass 2: add one batch of ``name`` into its histogram (edges fixed by pass 1)."""
        a = arr.reshape(-1)
        if a.size == 0 or name not in self.lo:
            return
        if self.absolute:
            a = np.abs(a)
        h, e = np.histogram(a, bins=self.num_bins, range=self._bins_range(name))
        if name in self.hist:
            self.hist[name] += h
        else:
            self.hist[name] = h
            self.edges[name] = e.astype(a.dtype) if self.absolute else e

    def histogram_dict(self, names: list[str]) -> dict[str, tuple]:
        """The per-tensor tuples ONNX Runtime's ``HistogramCollector`` computes ranges from."""
        out: dict[str, tuple] = {}
        for n in names:
            if n not in self.hist:
                continue
            if self.absolute:
                out[n] = (self.hist[n], self.edges[n], self.lo[n], self.hi[n])
            else:
                out[n] = (self.hist[n], self.edges[n], self.lo[n], self.hi[n], self._bins_range(n)[1])
        return out


def _consume(names: list[str], wanted: set[str], outs: list, fold) -> None:
    """Fold each calibrated output into the statistics and drop it at once (one tensor alive)."""
    for k, name in enumerate(names):
        if name in wanted:
            fold(name, outs[k])
        outs[k] = None
    outs.clear()


def _batch_for(outputs_bytes: int, budget_mb: int) -> int:
    return int(max(1, min(MAX_BATCH, (budget_mb << 20) // max(outputs_bytes, 1))))


def compute_ranges(
    src: str | Path,
    input_name: str,
    samples: Samples,
    method: str,
    symmetric: bool,
    num_bins: int = 2048,
    num_quantized_bins: int = 128,
    percentile: float = 99.999,
    batch_size: int = 16,
    budget_mb: int = BUDGET_MB,
    progress: Any = None,
):
    """Activation ranges of ``src`` over ``samples`` as ONNX Runtime ``TensorsData``.

    ``method`` is ``minmax``, ``percentile`` or ``entropy``; ``batch_size`` is used by minmax
    (its per-batch outputs are two numbers per tensor); the histogram methods size batches from
    ``budget_mb``. ``progress(done, total)`` is called after each batch of each pass.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import HistogramCollector, TensorsData, create_calibrator

    n = len(samples)
    if n == 0:
        raise ValueError("calibration needs at least one sample")
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    opts: dict[str, Any] = {"symmetric": bool(symmetric) if method != "minmax" else False}
    if method == "entropy":
        opts.update(num_bins=num_bins, num_quantized_bins=num_quantized_bins)
    elif method == "percentile":
        opts.update(num_bins=num_bins, percentile=percentile)
    with tempfile.TemporaryDirectory(prefix="edgefer-calib-") as tmp:
        cal = create_calibrator(Path(src), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=cm, extra_options=opts)
        if method == "minmax":
            # the reader yields one batch at a time and the calibrator keeps 2 numbers per tensor per batch
            with contextlib.redirect_stdout(io.StringIO()):
                cal.collect_data(_reader(input_name, samples, max(1, batch_size)))
                data = cal.compute_data()
            if progress:
                progress(n, n)
            return data
        sess = cal.infer_session
        names = [o.name for o in sess.get_outputs()]
        wanted = set(cal.tensors_to_calibrate)
        stats = HistogramStats(num_bins, absolute=(method == "percentile" and bool(symmetric)))
        # pass 2 replays pass 1's exact slices: a batch of another size can round the activations
        # differently, and a value past pass 1's max would fall outside the histogram
        slices: list[slice] = []
        batch, i = 1, 0
        while i < n:
            s = slice(i, min(i + batch, n))
            slices.append(s)
            outs = sess.run(None, {input_name: samples[s]})
            if i == 0:  # size later batches from what one sample actually produces
                batch = _batch_for(sum(o.nbytes for o in outs), budget_mb)
            _consume(names, wanted, outs, stats.observe)
            i = s.stop
            if progress:
                progress(i, 2 * n)
        for s in slices:
            _consume(names, wanted, sess.run(None, {input_name: samples[s]}), stats.count)
            if progress:
                progress(n + s.stop, 2 * n)
        col = HistogramCollector(method=method, symmetric=bool(symmetric), num_bins=num_bins,
                                 num_quantized_bins=num_quantized_bins, percentile=percentile, scenario="same")
        col.histogram_dict = stats.histogram_dict(sorted(wanted))
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints per-method statistics
            result = col.compute_collection_result()
        del cal, sess
        return TensorsData(cm, result)


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children, in MB (``getrusage``)."""
    import resource
    import sys

    scale = 1.0 / (1 << 20) if sys.platform == "darwin" else 1.0 / 1024  # bytes on macOS, KB elsewhere
    return {"self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 1),
            "children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale, 1)}
