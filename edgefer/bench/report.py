"""What a bench result looks like to people and tools: the terminal table, CSV, JSON, the
accuracy-vs-latency plot, and the ``--max-drop`` gate.

Renderers read only the result dict (the JSON schema), never a live bench, so a saved
``bench.json`` can be re-rendered or gated later.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EdgeferError
from .config import SPREAD_WARN
from .timing import spread_ratio


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    batches = [f"b{b}" for b in result["settings"]["batches"]]
    head = ["target", "prec", "status", "MB", "load s"] + [f"{b} p50 ms" for b in batches] + [f"{batches[0]} p99", "spread", "faces/s",
                                                                                           "top1", "drop", "agree", "worst class", "e2e fps", "ratio", "CPU ms/f", "peak MB"]
    lines = [head]
    for r in rows:
        name = r["target"] + (f"[{Path(r['artifact']).name}]" if r.get("label") else "")
        lat = r.get("latency_ms") or {}
        worst = None
        if r.get("worst_class"):
            worst = f"{r['worst_class']} {r['per_class_drop'][r['worst_class']]:+.1f}"
        lines.append([
            name, r["precision"], r["status"], _fmt(r["size_mb"], 2), _fmt(r["load_s"], 2),
            *[_fmt(lat.get(b, {}).get("p50"), 3) for b in batches], _fmt(lat.get(batches[0], {}).get("p99"), 3),
            _fmt_spread(r), _fmt(r["throughput"], 0), _fmt(r["top1"], 2), _fmt(r["top1_drop"], 2), _fmt(r["agreement"], 1), worst or "-",
            _fmt(r["e2e_fps"], 1), _fmt(r["e2e_ratio"], 3), _fmt(r.get("cpu_ms_per_frame"), 2), _fmt(r["peak_mb"], 0),
        ])
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(head))]
    out = ["  ".join(str(c).rjust(w) if i > 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(l, widths))) for l in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['target']}/{r['precision']} {r['status']}: {r['reason']}")
    out.extend(through_lines(rows))
    reps = result["settings"].get("repeats")
    if reps and reps > 1 and any(r.get("latency_ms") for r in rows):
        out.append(f"latency: {reps} timing rounds per row, interleaved across rows; spread = p90/p10 of the "
                   f"rounds' medians, widest batch size ('!' above {SPREAD_WARN:g}x)")
    for n in result.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out)


def through_lines(rows: list[dict[str, Any]]) -> list[str]:
    """--through-detector: top-1 through the loop beside the direct crop, per pasted face size."""
    out = []
    for r in rows:
        t = r.get("through")
        if not t:
            continue
        cells = ", ".join(f"{side} px: {v['top1_found']:.2f} vs {v['direct_top1_found']:.2f} direct "
                          f"(gap {v['gap']:+.2f}, found {v['found_pct']:.1f}%)" for side, v in t["sizes"].items())
        out.append(f"through the detector, {r['target']}/{r['precision']}: {cells}")
    return out


def _fmt_spread(r: dict[str, Any]) -> str:
    ratio = spread_ratio(r)
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" + ("!" if ratio > SPREAD_WARN else "")


CSV_FIXED = ["target", "precision", "status", "reason", "backend", "artifact", "size_mb", "load_s", "throughput", "top1",
             "top2", "macro_f1", "top1_drop", "worst_class", "agreement", "kl", "e2e_fps", "e2e_p99_ms", "decode_fps",
             "e2e_ratio", "cpu_ms_per_frame", "explain_ms", "explain_pct", "peak_mb", "executes", "threads"]
#: per batch size: percentiles over every run, then the rounds and the spread of their medians
CSV_LATENCY = ("p50", "p90", "p99", "repeats", "p50_p10", "p50_p90")


def _latency_cell(entry: dict[str, Any], q: str) -> Any:
    if q.startswith("p50_p"):
        return (entry.get("spread") or {}).get(q[4:])
    return entry.get(q)


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> Path:
    batches = [f"b{b}" for b in result["settings"]["batches"]]
    classes: list[str] = []
    for r in result["rows"]:
        for c in r.get("per_class_drop") or {}:
            if c not in classes:
                classes.append(c)
    cols = CSV_FIXED + [f"latency_{b}_{q}" for b in batches for q in CSV_LATENCY] + [f"drop_{c}" for c in classes]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in result["rows"]:
            vals = [r.get(c) for c in CSV_FIXED]
            lat = r.get("latency_ms") or {}
            vals += [_latency_cell(lat.get(b, {}), q) for b in batches for q in CSV_LATENCY]
            vals += [(r.get("per_class_drop") or {}).get(c) for c in classes]
            w.writerow(["" if v is None else v for v in vals])
    return p


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return p


#: the accuracy axis spans at least this many points: differences of hundredths of a point
#: (FP32 vs FP16, one face in 3,589) must not fill the panel and look like a collapse
MIN_ACC_SPAN = 2.0
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "mixed": "D"}


def _row_name(r: dict[str, Any]) -> str:
    return f"{r['target']}/{r['precision']}" + (f" {Path(r['artifact']).name}" if r.get("label") else "")


def row_colours(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One colour per row (target/precision, or artifact), the same in every panel of the plot."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"]
    names = list(dict.fromkeys(_row_name(r) for r in rows))
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _padded(lo: float, hi: float, min_span: float) -> tuple[float, float]:
    """Limits around [lo, hi] spanning at least ``min_span``, with a little room at both ends."""
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    pad = 0.08 * span
    return mid - span / 2 - pad, mid + span / 2 + pad


def plot(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Accuracy vs latency per row (latency only without --data), and per-class drop bars.

    Each row has one colour in both panels; the marker says the precision (legend), the
    horizontal bar the latency spread over timing rounds (p10-p90 of the rounds' medians), and
    the accuracy axis spans at least MIN_ACC_SPAN points.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        raise EdgeferError("--plot needs matplotlib: pip install matplotlib") from None
    ok = [r for r in result["rows"] if r["status"] == "ok" and r.get("latency_ms")]
    if not ok:
        raise EdgeferError("--plot: no row ran, nothing to plot")
    b0 = f"b{result['settings']['batches'][0]}"
    has_acc = any(r.get("top1") is not None for r in ok)
    drows = [r for r in ok if r.get("per_class_drop") and (r["precision"] != "fp32" or r.get("label"))]
    ncols = 2 if drows else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.8 * ncols, 4.8), squeeze=False)
    ax = axes[0][0]
    colours = row_colours(ok)
    ys: list[float] = []
    handles = []
    for r in ok:
        name = _row_name(r)
        lat = r["latency_ms"].get(b0) or next(iter(r["latency_ms"].values()))
        x = lat["p50"]
        y = r["top1"] if has_acc else r["throughput"]
        if y is None:
            continue
        ys.append(y)
        marker = "*" if r.get("label") else PRECISION_MARKERS.get(r["precision"], "D")
        sp = lat.get("spread") or {}
        if lat.get("repeats", 1) > 1 and sp.get("p10") is not None:
            ax.errorbar([x], [y], xerr=[[max(0.0, x - sp["p10"])], [max(0.0, sp["p90"] - x)]], fmt="none",
                        ecolor=colours[name], elinewidth=1.2, capsize=3, alpha=0.8)
        ax.scatter([x], [y], marker=marker, s=70, color=colours[name], edgecolors="black", linewidths=0.5, zorder=3)
        handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=8, markerfacecolor=colours[name],
                              markeredgecolor="black", markeredgewidth=0.5, label=name))
    if has_acc and ys:
        ax.set_ylim(*_padded(min(ys), max(ys), MIN_ACC_SPAN))
    ax.set_xlabel(f"latency p50 at batch {b0[1:]} (ms, lower is better; bars: p10-p90 over timing rounds)")
    ax.set_ylabel("top-1 (%)" if has_acc else "throughput (faces/s)")
    model = result["model"].get("name") or result["model"]["ref"]
    ax.set_title(f"{model}: {'accuracy' if has_acc else 'throughput'} vs latency")
    ax.grid(alpha=0.3)
    # the legend names every row (its colour, used in both panels) and says what the markers mean
    shapes = [Line2D([], [], linestyle="none", marker=m, markersize=7, color="0.35", label=p_)
              for p_, m in PRECISION_MARKERS.items() if any(r["precision"] == p_ and not r.get("label") for r in ok)]
    if any(r.get("label") for r in ok):
        shapes.append(Line2D([], [], linestyle="none", marker="*", markersize=9, color="0.35", label="--artifact row"))
    ax.legend(handles=handles + shapes, fontsize=7, loc="best", title="row / marker = precision", title_fontsize=7)
    if drows:
        ax2 = axes[0][1]
        classes = list(dict.fromkeys(c for r in drows for c in r["per_class_drop"]))
        width = 0.8 / len(drows)
        for i, r in enumerate(drows):
            vals = [r["per_class_drop"].get(c, 0.0) for c in classes]
            ax2.bar(np.arange(len(classes)) + i * width, vals, width, label=_row_name(r), color=colours[_row_name(r)],
                    edgecolor="black", linewidth=0.4)
        ax2.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
        ax2.set_xticklabels(classes, rotation=30)
        ax2.axhline(0, color="k", lw=0.8)
        lo, hi = ax2.get_ylim()
        ax2.set_ylim(*_padded(min(lo, 0.0), max(hi, 0.0), MIN_ACC_SPAN))
        ax2.set_ylabel("recall drop vs FP32 (points, positive = worse)")
        ax2.set_title("per-class recall drop")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def gate(result: dict[str, Any], max_drop: float) -> list[str]:
    """FP16/INT8 rows that lose more than ``max_drop`` points of top-1 against FP32."""
    bad = []
    for r in result["rows"]:
        if r["status"] == "ok" and r["precision"] in ("fp16", "int8") and r.get("top1_drop") is not None:
            if r["top1_drop"] > max_drop:
                bad.append(f"{r['target']}/{r['precision']} loses {r['top1_drop']:.2f} points (> {max_drop:g})")
    return bad
