"""What each training lever of issue 15 buys, measured on the carved validation split only.

Runs one short schedule per lever next to a baseline, all with the same seed, the same data
subset and the same class-stratified carve of the training data (``edgefer train``'s default
selection: ``--val-split`` of each class, ``--split-seed``). Every run is selected (best epoch)
and scored on that carve; no test set is read, so the table can steer training without
touching FER2013 PublicTest. A lever's row gives its best carve top-1 / macro-F1, the recall of
the rare classes (disgust, fear) and the difference to the baseline.

    python benchmarks/train_levers.py --data ../shared/data/fer2013/train.npz --epochs 3 --limit 6000
    python benchmarks/train_levers.py --data train.npz --levers baseline,focal,swa --init runs/x/best.pth
    python benchmarks/train_levers.py --data train.npz --teacher a/best.pth --teacher b/best.pth   # + distill

Short schedules rank levers that act early (loss, weighting, augmentation) fairly; SWA and
distillation usually need longer runs to show their worth, so read their rows as a lower bound.
A teacher (or ``--init``) trained on the whole training file has seen the carved faces; the
engine records that as a warning and the table marks the row (``seen val``).

Writes ``OUT.json`` (every run's config, history, best and split) and ``OUT.md`` (the table).
Sequential and in-process; on a shared 2-core box a 3-epoch run on 6,000 faces takes minutes
per lever: the lead sizes a full run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RARE = ("disgust", "fear")


def levers(epochs: int, teachers: list[str]) -> dict[str, dict[str, Any]]:
    """Lever name -> TrainConfig overrides (the baseline is the recipe's defaults)."""
    from edgefer.train.engine import AUG_PRESETS

    swa_start = max(1, math.ceil(epochs * 0.6))
    out: dict[str, dict[str, Any]] = {
        "baseline": {},
        "focal": {"loss": "focal", "focal_gamma": 2.0},
        "cb-effective": {"class_weights": "effective", "cb_beta": 0.999},
        "cb-balanced": {"class_weights": "balanced"},
        "balanced-sampling": {"balanced": True},
        "aug-real": {"aug": "real", **AUG_PRESETS["real"]},
        "swa": {"swa_start": swa_start},
        "ema": {"ema": True},
        "mixup": {"mixup": 0.2},
        "soft-fer2013": {"soft_labels": "ferplus", "soft_classes": "fer2013"},
    }
    if teachers:
        out["distill"] = {"teacher": teachers[0] if len(teachers) == 1 else list(teachers), "distill": 0.7,
                          "distill_temp": 2.0}
    return out


def run_lever(name: str, overrides: dict[str, Any], a: argparse.Namespace, runs: Path) -> dict[str, Any]:
    from edgefer.train.engine import TrainConfig, train

    cfg = TrainConfig(arch=a.arch, data=str(a.data), epochs=a.epochs, batch=a.batch, limit=a.limit, seed=a.seed,
                      val_split=a.val_split, split_seed=a.split_seed, threads=a.threads, quiet=True,
                      init=a.init, out=str(runs / name), steps_per_epoch=a.steps_per_epoch,
                      warmup=min(3.0, a.epochs / 3), command=f"benchmarks/train_levers.py lever {name}", **overrides)
    t0 = time.time()
    doc = train(cfg)
    best = doc["best"]
    classes = doc["classes"]
    return {
        "lever": name, "overrides": overrides, "seconds": round(time.time() - t0, 1),
        "best_epoch": best.get("epoch"), "val_top1": best.get("val_top1"), "val_macro_f1": best.get("val_macro_f1"),
        "val_recall": best.get("val_recall"), "weights": best.get("weights"),
        "rare_recall": {c: best.get("val_recall", {}).get(c) for c in RARE if c in classes},
        "selected_on": doc["selected_on"], "history": doc["history"], "config": doc["config"],
        "seen_val": bool(doc["selected_on"].get("warnings")),
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r for r in rows if r["lever"] == "baseline"), None)
    lines = ["| lever | carve top-1 | Δ top-1 | macro-F1 | Δ macro-F1 | disgust recall | fear recall | best epoch | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d1 = "" if base is None or r is base else f"{100 * (r['val_top1'] - base['val_top1']):+.2f}"
        df = "" if base is None or r is base else f"{100 * (r['val_macro_f1'] - base['val_macro_f1']):+.2f}"
        rare = [r["rare_recall"].get(c) for c in RARE]
        rs = [("-" if v is None else f"{100 * v:.1f}%") for v in rare]
        mark = " (seen val)" if r["seen_val"] else ""
        lines.append(f"| {r['lever']}{mark} | {100 * r['val_top1']:.2f}% | {d1} | {100 * r['val_macro_f1']:.2f}% | {df} | "
                     f"{rs[0]} | {rs[1]} | {r['best_epoch']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="training data (train.npz, fer2013.csv, ...)")
    ap.add_argument("--arch", default="edgenet")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="the data's first N images (before the carve)")
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="cap batches per epoch (smoke runs)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-split", type=float, default=0.1)
    ap.add_argument("--split-seed", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", default=None, help="start every run from these weights (fine-tuning levers)")
    ap.add_argument("--teacher", action="append", default=[], help="adds the distill lever (repeatable: ensemble)")
    ap.add_argument("--levers", default=None, help="comma-separated subset (default: all; baseline always runs)")
    ap.add_argument("--runs", type=Path, default=None, help="keep each run's folder here (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_levers"), help="OUT.json and OUT.md")
    a = ap.parse_args(argv)

    import torch

    table_levers = levers(a.epochs, a.teacher)
    chosen = list(table_levers) if not a.levers else ["baseline", *[n for n in a.levers.split(",") if n != "baseline"]]
    unknown = [n for n in chosen if n not in table_levers]
    if unknown:
        ap.error(f"unknown lever(s) {', '.join(unknown)}; known: {', '.join(table_levers)}")
    rows = []
    with tempfile.TemporaryDirectory() as td:
        runs = a.runs or Path(td)
        for name in chosen:
            print(f"== {name}: {table_levers[name] or 'defaults'}", flush=True)
            r = run_lever(name, table_levers[name], a, runs)
            rows.append(r)
            print(f"   carve top-1 {100 * r['val_top1']:.2f}% macro-F1 {100 * r['val_macro_f1']:.2f}% "
                  f"({r['seconds']:.0f}s)", flush=True)
    split = rows[0]["selected_on"]
    assert all(r["selected_on"]["rows_sha256"] == split["rows_sha256"] for r in rows), "levers saw different carves"
    command = "python " + " ".join(shlex.quote(x) for x in (sys.argv if argv is None else ["benchmarks/train_levers.py", *argv]))
    doc = {"command": command, "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
           "split": {k: split[k] for k in ("fraction", "seed", "size", "train_size", "rows_sha256", "class_counts")},
           "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": a.threads,
                       "cpu": platform.processor() or platform.machine()},
           "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    md = [f"# Training levers on the carved split ({a.arch}, {a.epochs} epochs"
          + (f", first {a.limit} faces" if a.limit else "") + ")", "",
          f"`{command}`", "",
          f"Selected and scored on a class-stratified carve of the training data ({split['size']} faces, "
          f"{100 * split['fraction']:.0f}% of each class, split seed {split['seed']}, rows {split['rows_sha256'][:23]}...); "
          "no test set was read. Same seed for every run.", "",
          *(["**Smoke setting** (batches capped per epoch): proves the script runs; the numbers mean nothing.", ""]
            if a.steps_per_epoch else []),
          table(rows), ""]
    a.out.with_suffix(".md").write_text("\n".join(md))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
