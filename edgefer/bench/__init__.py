"""The bench: speed and accuracy of one classifier on every backend x precision, side by side.

Rows are (target, precision) pairs: ``onnx`` runs on ONNX Runtime, ``openvino`` on OpenVINO,
``trt`` on TensorRT, ``coreml`` on Core ML. The bench exports what it needs with
``edgefer.export`` (into ``--workdir``, a temporary folder by default) or takes artifacts the
user already built (``--artifact``, repeatable; an ensemble manifest is one more row).

Per row: status and reason, artifact size, load/compile seconds, latency p50/p90/p99 per batch
size (warm-up first, then at least ``min_runs`` runs and ``min_seconds`` of them, split over
``repeats`` rounds), throughput,
and with ``--data``: top-1, top-2, macro-F1, the drop against the FP32 reference (FP32 minus the
row, in points: positive means worse), per-class recall drop and the worst class, agreement
with the FP32 predictions and their mean KL divergence. With ``--video``: the end-to-end fps and
p99 frame latency of the full detect -> classify loop with this row's classifier, the
decode-only fps of the same frames and their ratio. Peak resident memory per row (Linux: the
high-water mark is reset before each row).

Timing is repeated (``repeats`` rounds, 3 by default) and the rounds are *interleaved across
rows*: every row is timed once as it is measured, then every row again, round after round, with
the classifiers kept loaded. On a shared machine one row's latency moved up to 60% between runs
of the bench; timed minutes apart, two rows differ by the machine's mood as much as by their
backends. Interleaving puts every row through the same moods, and the spread of a row's per-round
medians (p10-p90 over the rounds, ``latency_ms.bN.spread``) says how far its number can be
trusted; a note warns when p90/p10 exceeds ``SPREAD_WARN``.

Labels are matched to the model's classes by name (:func:`edgefer.classes.canonical`), so a
4-class EmoTorch model is scored on FER2013 data over the classes both share, and the output
says which. The JSON schema is versioned (``SCHEMA``) and documented in benchmarks/README.md.

The package, one module per concern: :mod:`.config` (the run's settings and the row vocabulary),
:mod:`.runner` (the :class:`Bench` that plans, exports and measures rows), :mod:`.timing`,
:mod:`.scoring`, :mod:`.video`, :mod:`.machine`, :mod:`.schema` (row skeleton and JSON Schema)
and :mod:`.report` (table, CSV, JSON, plot, gate). The names below are the public API.
"""

from __future__ import annotations

from .config import BACKEND_OF, PRECISIONS, SPREAD_WARN, STATUSES, TARGETS, BenchConfig
from .machine import machine_info, peak_mb
from .report import (
    CSV_FIXED,
    CSV_LATENCY,
    MIN_ACC_SPAN,
    PRECISION_MARKERS,
    gate,
    plot,
    row_colours,
    table,
    write_csv,
    write_json,
)
from .report import (
    _padded as _padded,  # the plot's axis padding, which the tests check by this name
)
from .runner import Bench, artifact_size_mb
from .schema import JSON_SCHEMA, SCHEMA, new_row
from .scoring import Scoring, accuracy, kl_div, load_scoring
from .timing import REWARM, latency_summary, spread_ratio, time_batches, time_round

#: the row skeleton under its name from before the split (the tests build rows with it)
_row = new_row

__all__ = [
    "BACKEND_OF", "CSV_FIXED", "CSV_LATENCY", "JSON_SCHEMA", "MIN_ACC_SPAN", "PRECISIONS", "PRECISION_MARKERS",
    "REWARM", "SCHEMA", "SPREAD_WARN", "STATUSES", "TARGETS", "Bench", "BenchConfig", "Scoring", "accuracy",
    "artifact_size_mb", "gate", "kl_div", "latency_summary", "load_scoring", "machine_info", "new_row", "peak_mb",
    "plot", "row_colours", "spread_ratio", "table", "time_batches", "time_round", "write_csv", "write_json",
]
