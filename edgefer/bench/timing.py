"""Latency timing: warm-up, then runs until enough of them and enough seconds, in rounds.

A bench times every row in ``repeats`` rounds interleaved across rows (see :mod:`edgefer.bench`);
this module times one round of one classifier and summarises the rounds of a batch size into
pooled percentiles and the spread of the rounds' medians, which says how far a number can be
trusted on a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .config import BenchConfig


def batch_inputs(faces: np.ndarray, batches: list[int]) -> dict[int, np.ndarray]:
    """One contiguous input per batch size, cycling through ``faces``."""
    out = {}
    for b in batches:
        reps = int(np.ceil(b / len(faces)))
        out[b] = np.ascontiguousarray(np.concatenate([faces] * reps)[:b])
    return out


def time_round(run: Callable[[np.ndarray], Any], inputs: dict[int, np.ndarray], cfg: BenchConfig,
               warmup: int) -> dict[int, list[float]]:
    """One timing round: per batch size ``warmup`` untimed runs, then runs until this round's
    share of ``min_runs`` and ``min_seconds`` is reached (or its share of ``max_seconds``)."""
    r = max(1, int(cfg.repeats))
    min_runs = max(1, int(np.ceil(cfg.min_runs / r)))
    min_s, max_s = cfg.min_seconds / r, max(cfg.max_seconds / r, cfg.min_seconds / r)
    out: dict[int, list[float]] = {}
    for b, x in inputs.items():
        for _ in range(warmup):
            run(x)
        ms: list[float] = []
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            run(x)
            ms.append((time.perf_counter() - t0) * 1e3)
            spent = time.perf_counter() - t_start
            if (len(ms) >= min_runs and spent >= min_s) or spent >= max_s:
                break
        out[b] = ms
    return out


def latency_summary(rounds: list[list[float]]) -> dict[str, Any]:
    """Latency of one batch size from its timing rounds: percentiles over every run pooled, and
    the spread of the rounds' medians (p10 and p90 over rounds, and their ratio)."""
    a = np.concatenate([np.asarray(r, np.float64) for r in rounds])
    meds = [float(np.median(r)) for r in rounds]
    p10, p90 = float(np.percentile(meds, 10)), float(np.percentile(meds, 90))
    return {
        "p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
        "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4), "runs": int(len(a)),
        "repeats": len(rounds), "p50_repeats": [round(m, 4) for m in meds],
        "spread": {"p10": round(p10, 4), "p90": round(p90, 4), "ratio": round(p90 / p10, 4) if p10 > 0 else None},
    }


def time_batches(run: Callable[[np.ndarray], Any], faces: np.ndarray, batches: list[int], cfg: BenchConfig) -> dict:
    """Every round of one classifier back to back (the bench itself interleaves rounds across rows)."""
    inputs = batch_inputs(faces, batches)
    rounds: dict[int, list[list[float]]] = {b: [] for b in batches}
    for i in range(max(1, int(cfg.repeats))):
        for b, ms in time_round(run, inputs, cfg, cfg.warmup if i == 0 else REWARM).items():
            rounds[b].append(ms)
    return {f"b{b}": latency_summary(v) for b, v in rounds.items()}


#: untimed runs before each later round (caches went cold while other rows ran)
REWARM = 3


def spread_ratio(row: dict[str, Any]) -> float | None:
    """The widest p90/p10 of a row's per-round medians over its batch sizes (None: one round)."""
    ratios = [v["spread"]["ratio"] for v in (row.get("latency_ms") or {}).values()
              if isinstance(v.get("spread"), dict) and v["spread"].get("ratio") and v.get("repeats", 1) > 1]
    return max(ratios) if ratios else None
