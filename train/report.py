"""Final numbers of a trained checkpoint on labelled sets: ``edgefer train report CKPT --data X``.

Why a separate step: the model is *selected* on a validation split carved from the training data
(:func:`edgefer.train.data.carve`); test sets such as FER2013 PublicTest are touched once, here,
to report. ``edgefer train --report X`` calls the same code on the best weights after training.

For each set: top-1, macro-F1, per-class recall and the confusion matrix, of one pass and, when
the checkpoint's sidecar says ``"tta": "flip"``, of the mean of each face and its mirror image
too (what the exported graph computes).

Classes are matched by name (:func:`edgefer.classes.canonical`: ``happiness`` is ``happy``,
``anger`` is ``angry``...). A set may hold only some of the model's classes (a posed dataset with
6 emotions and no neutral): its images are scored on the classes both share, the prediction
being the argmax of the model's outputs over those shared classes only (a face the model would
call "neutral" counts as its next best shared class). Images of classes the model lacks are left
out and counted. The numbers therefore answer "which of these emotions is it", the question the
set can ask; they are not comparable with a 7-class top-1, and each result says which classes it
covers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.classes import canonical
from edgefer.errors import EdgeferError


def shared_classes(model_classes: Sequence[str], data_classes: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """(model output indices, data label indices, names) of the classes both have, in model order."""
    mc = [canonical(c) for c in model_classes]
    dc = [canonical(c) for c in data_classes]
    m_idx, d_idx, names = [], [], []
    for i, c in enumerate(mc):
        if c in dc:
            m_idx.append(i)
            d_idx.append(dc.index(c))
            names.append(model_classes[i])
    return m_idx, d_idx, names


def score(probs: np.ndarray, labels: np.ndarray, m_idx: Sequence[int], names: Sequence[str]) -> dict[str, Any]:
    """Metrics of ``probs`` (N, model classes) against ``labels`` already indexed into ``m_idx``."""
    from .engine import metrics_from

    pred = probs[:, list(m_idx)].argmax(1)
    k = len(m_idx)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels, pred), 1)
    m = metrics_from(cm)
    return {"top1": m["top1"], "macro_f1": m["macro_f1"], "recall": dict(zip(names, m["recall"])),
            "confusion": cm.tolist(), "count": len(labels)}


def predict(model, x_u8, mean, std, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities of the faces, probabilities of their mirror images), float64."""
    import torch
    import torch.nn.functional as F

    plain, mirror = [], []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            xb = ((x_u8[i : i + batch].float() - mean) / std).contiguous(memory_format=torch.channels_last)
            plain.append(F.softmax(model(xb), 1).double().numpy())
            mirror.append(F.softmax(model(torch.flip(xb, [3])), 1).double().numpy())
    k = len(plain[0][0]) if plain else 0
    return (np.concatenate(plain) if plain else np.zeros((0, k)), np.concatenate(mirror) if mirror else np.zeros((0, k)))


def report_checkpoint(ckpt: str | os.PathLike, datasets: Sequence[str], threads: int | None = None,
                      usage: str = "PublicTest") -> list[dict[str, Any]]:
    """One result per set: provenance, shared classes, and scores ("single", and "flip" when the sidecar's tta is flip).

    ``usage``: which rows of a FER2013 CSV (or split of a Kaggle / RAF-DB folder) to read;
    ignored for .npz and plain class folders.
    """
    import torch

    from .data import load_dataset, to_tensor
    from .engine import load_trained

    if not Path(ckpt).is_file():
        raise EdgeferError(f"{ckpt}: no such checkpoint")
    if threads:
        torch.set_num_threads(threads)
    model, side = load_trained(ckpt)
    model = model.to(memory_format=torch.channels_last)
    inp = side["input"]
    mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
    tta = side.get("tta")
    out = []
    for path in datasets:
        ds = load_dataset(path, usage=usage)
        m_idx, d_idx, names = shared_classes(side["classes"], ds.classes)
        if not m_idx:
            raise EdgeferError(f"{path}: none of its classes ({', '.join(ds.classes)}) is one of the model's "
                               f"({', '.join(side['classes'])})")
        keep = np.flatnonzero(np.isin(ds.labels, d_idx))
        part = ds.subset(keep)
        to_shared = np.full(len(ds.classes), -1, np.int64)
        to_shared[d_idx] = np.arange(len(d_idx))
        labels = to_shared[part.labels]
        x = to_tensor(part, inp["size"], inp["color"])
        p, pm = predict(model, x, mean, std)
        scores = {"single": score(p, labels, m_idx, names)}
        if tta == "flip":
            scores["flip"] = score((p + pm) / 2, labels, m_idx, names)
        dropped = {c: int((ds.labels == i).sum()) for i, c in enumerate(ds.classes) if i not in d_idx}
        out.append({
            "data": str(path), "kind": ds.provenance.get("kind"), "usage": ds.provenance.get("usage"),
            "sha256": ds.provenance.get("sha256"), "images": len(keep), "classes": names,
            "all_model_classes": len(names) == len(side["classes"]),
            "left_out": {c: n for c, n in dropped.items() if n},
            "tta": tta, "scores": scores,
        })
    return out


def format_report(ckpt: str, results: list[dict[str, Any]]) -> str:
    """A human summary: one block per set, one line per scoring mode, recall per class."""
    lines = [f"{ckpt}"]
    for r in results:
        cov = "all model classes" if r["all_model_classes"] else f"shared classes only: {', '.join(r['classes'])}"
        lines.append(f"  {r['data']} ({r['images']} images; {cov})"
                     + (f"; left out: {r['left_out']}" if r["left_out"] else ""))
        for mode, s in r["scores"].items():
            rec = " ".join(f"{c} {100 * v:.1f}" for c, v in s["recall"].items())
            lines.append(f"    {mode:6s} top-1 {100 * s['top1']:.2f}%  macro-F1 {100 * s['macro_f1']:.2f}%  recall: {rec}")
    return "\n".join(lines)


def write_report(path: str | os.PathLike, ckpt: str, results: list[dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps({"checkpoint": str(ckpt), "results": results}, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgefer.train.report CKPT --data X ...``: the same as ``edgefer train report``."""
    import sys

    from edgefer.cli import main as cli_main

    return cli_main(["train", "report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
