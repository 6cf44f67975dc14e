"""Accuracy of a row: labels matched to the model's classes by name, top-1/top-2/macro-F1,
per-class recall, and the drop against the FP32 reference.

Labels are matched by name (:func:`edgefer.classes.canonical`), so a 4-class model is scored on
7-class FER2013 data over the classes both share, and the row says which. A row is compared with
the FP32 row of its own target when there is one (the drop then isolates the precision), else
with the ONNX FP32 row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classes import canonical
from ..errors import EdgeferError


@dataclass
class Scoring:
    """Labels matched to a model's classes by name."""

    images: Any
    labels: np.ndarray  # indices into data_classes
    data_classes: list[str]
    source: str

    def for_model(self, classes: list[str]) -> dict[str, Any]:
        """Indices of the scored samples, their labels as model-class indices, and the shared classes."""
        mc = [canonical(c) for c in classes]
        dc = [canonical(c) for c in self.data_classes]
        shared = [c for c in mc if c in dc]
        if not shared:
            raise EdgeferError(
                f"the data's classes ({', '.join(self.data_classes)}) share none with the model's ({', '.join(classes)})"
            )
        to_model = np.array([mc.index(c) if c in mc else -1 for c in dc])
        mapped = to_model[self.labels]
        keep = np.flatnonzero(mapped >= 0)
        return {
            "keep": keep, "y": mapped[keep], "shared": [classes[mc.index(c)] for c in shared],
            "mask": np.array([c in dc for c in mc]), "partial": len(shared) < len(mc) or len(shared) < len(dc),
            "dropped_classes": [self.data_classes[i] for i, c in enumerate(dc) if c not in mc],
            "unscored_classes": [classes[i] for i, c in enumerate(mc) if c not in dc],
        }


def load_scoring(path: str, usage: str | None, size: int | None, seed: int = 0) -> Scoring:
    """Labeled faces for accuracy, read and validated by :mod:`edgefer.datasets` (labels are
    indices inside the data's classes, so none is scored as another class by negative indexing)."""
    from ..datasets import open_labeled

    if size is not None and size < 1:
        raise EdgeferError(f"--data-size must be at least 1, not {size}")
    t = open_labeled(path, usage=usage)
    idx = np.arange(len(t))
    if size is not None and size < len(t):
        idx = np.sort(np.random.default_rng(seed).choice(len(t), size, replace=False))
    images = t.fetch(idx)
    return Scoring(images, np.asarray(t.labels)[idx], list(t.classes),
                   f"{path}" + (f" [{usage}]" if t.kind == "fer2013-csv" else ""))


def accuracy(probs: np.ndarray, sc: dict[str, Any]) -> dict[str, Any]:
    """top-1/top-2/macro-F1/per-class recall over the shared classes (others masked out)."""
    p = probs[sc["keep"]].copy()
    p[:, ~sc["mask"]] = -np.inf
    y = sc["y"]
    order = np.argsort(-p, axis=1)
    pred = order[:, 0]
    top1 = float((pred == y).mean() * 100) if len(y) else float("nan")
    top2 = float((order[:, :2] == y[:, None]).any(1).mean() * 100) if len(y) else float("nan")
    recall, f1s = {}, []
    k = probs.shape[1]
    for c in range(k):
        if not sc["mask"][c]:
            continue
        tp = int(((pred == c) & (y == c)).sum())
        support = int((y == c).sum())
        predicted = int((pred == c).sum())
        r = tp / support if support else float("nan")
        prec = tp / predicted if predicted else 0.0
        f1s.append(2 * prec * r / (prec + r) if support and (prec + r) > 0 else 0.0)
        recall[c] = r * 100
    return {"top1": top1, "top2": top2, "macro_f1": float(np.mean(f1s) * 100) if f1s else float("nan"),
            "recall": recall, "pred": pred}


def kl_div(p_ref: np.ndarray, p: np.ndarray) -> float:
    eps = 1e-7
    a = np.clip(p_ref, eps, 1.0)
    b = np.clip(p, eps, 1.0)
    return float(np.mean(np.sum(a * (np.log(a) - np.log(b)), axis=1)))


def score_row(row: dict[str, Any], clf: Any, scoring: Scoring, notes: list[str]) -> None:
    """Score ``clf`` on the labeled faces into ``row`` (its probabilities kept for the comparison),
    and add a note, once, when only some classes are shared."""
    target, precision = row["target"], row["precision"]
    probs = clf.predict_images(scoring.images)
    sc = scoring.for_model(clf.classes)
    acc = accuracy(probs, sc)
    row.update(top1=round(acc["top1"], 3), top2=round(acc["top2"], 3), macro_f1=round(acc["macro_f1"], 3))
    row["recall"] = {clf.classes[c]: round(v, 3) for c, v in acc["recall"].items()}
    row["scored_on"] = {"faces": int(len(sc["y"])), "classes": sc["shared"],
                        "dropped_data_classes": sc["dropped_classes"],
                        "unscored_model_classes": sc["unscored_classes"]}
    if sc["partial"]:
        note = (f"{target}/{precision}: scored on the shared classes {', '.join(sc['shared'])}"
                + (f" (data classes {', '.join(sc['dropped_classes'])} left out)" if sc["dropped_classes"] else "")
                + (f" (model classes {', '.join(sc['unscored_classes'])} masked)" if sc["unscored_classes"] else ""))
        if note not in notes:
            notes.append(note)
    row["_probs"] = probs


def reference_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The default FP32 reference: the ONNX FP32 row that was scored, else any FP32 row."""
    ok = [r for r in rows if r["status"] == "ok" and r["precision"] == "fp32" and "_probs" in r]
    onnx = [r for r in ok if r["target"] == "onnx" and not r.get("label")]
    return (onnx or ok or [None])[0]


def compare_to_reference(rows: list[dict[str, Any]]) -> None:
    """Fill each scored row's drop, per-class drop, worst class, agreement and KL against FP32."""
    ref_default = reference_row(rows)
    for r in rows:
        if r["status"] != "ok" or "_probs" not in r:
            continue
        same_target = [x for x in rows if x["status"] == "ok" and x["precision"] == "fp32" and "_probs" in x
                       and x["target"] == r["target"] and not x.get("label")]
        ref = same_target[0] if same_target and not r.get("label") else ref_default
        if ref is None or ref.get("classes") != r.get("classes"):
            continue
        r["reference"] = f"{ref['target']}/fp32"
        r["top1_drop"] = round(ref["top1"] - r["top1"], 3)
        drops = {c: round(ref["recall"][c] - v, 3) for c, v in r["recall"].items()
                 if c in ref["recall"] and not np.isnan(v) and not np.isnan(ref["recall"][c])}
        r["per_class_drop"] = drops
        if drops and max(drops.values()) > 0:
            r["worst_class"] = max(drops, key=drops.get)
        pr, pp = ref["_probs"], r["_probs"]
        r["agreement"] = round(float((pr.argmax(1) == pp.argmax(1)).mean() * 100), 3)
        r["kl"] = round(kl_div(pr, pp), 6)
