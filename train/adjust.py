"""Logit adjustment chosen on the carve: the rare classes' recall for a little top-1, folded into the weights.

A network trained on FER2013's skewed classes (disgust is 1.5% of the faces, happy 25%) learns
their prior: its logits carry ``log p(class)``, and rare classes lose their borderline faces.
Menon et al. (ICLR 2021, "Long-tail learning via logit adjustment") subtract ``tau * log prior``
from the logits after training; ``tau = 1`` targets balanced error. ``edgefer train adjust`` sweeps
``tau`` on the **carved validation faces of the run** (the same carve that selected its epoch,
rebuilt from the sidecar and checked against its recorded row digest), picks the ``tau`` with the
best macro-F1 there (or the one given), and writes a checkpoint whose classifier bias includes the
adjustment. The change is exact (``bias - tau * log prior`` on the last linear layer, checked on
real faces), so export, the in-graph flip and every backend apply it with no runtime code.
PublicTest is never read here; score the result once with ``edgefer train report``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgefer.classifier import softmax
from edgefer.errors import EdgeferError

DEFAULT_TAUS = tuple(round(0.05 * i, 2) for i in range(0, 31))  # 0 .. 1.5


def decide(plain: np.ndarray, mirror: np.ndarray | None, bias: np.ndarray) -> np.ndarray:
    """Predicted classes of logits with ``bias`` added, as the exported graph decides them (the mean
    of the two probabilities with ``tta: flip``)."""
    if mirror is None:
        return np.argmax(plain + bias, 1)
    return np.argmax(softmax(plain + bias) + softmax(mirror + bias), 1)


def scores(pred: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    from .engine import metrics_from

    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels, pred), 1)
    m = metrics_from(cm)
    return {"top1": m["top1"], "macro_f1": m["macro_f1"], "recall": dict(zip(classes, m["recall"])), "confusion": cm.tolist()}


def sweep(plain: np.ndarray, mirror: np.ndarray | None, labels: np.ndarray, prior: np.ndarray,
          classes: Sequence[str], taus: Sequence[float] = DEFAULT_TAUS) -> list[dict[str, Any]]:
    """Scores on the validation faces for each ``tau`` (bias ``-tau * log prior``)."""
    logp = np.log(prior)
    return [{"tau": float(t), **scores(decide(plain, mirror, -t * logp), labels, classes)} for t in taus]


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best macro-F1 (the smallest tau among equals)."""
    return max(rows, key=lambda r: (round(r["macro_f1"], 6), -r["tau"]))


def last_linear(model, k: int):
    """The model's output layer: its last ``nn.Linear`` with ``k`` outputs and a bias."""
    import torch.nn as nn

    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == k and m.bias is not None]
    if not found:
        raise EdgeferError(f"no output layer (a Linear with {k} outputs and a bias) to fold the adjustment into")
    return found[-1]


def logits_of(model, x_u8, mean, std, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(logits of the faces, logits of their mirror images), float64."""
    import torch

    plain, mirror = [], []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            xb = ((x_u8[i : i + batch].float() - mean) / std).contiguous(memory_format=torch.channels_last)
            plain.append(model(xb).double().numpy())
            mirror.append(model(torch.flip(xb, [3])).double().numpy())
    return np.concatenate(plain), np.concatenate(mirror)


def carve_of(side: dict[str, Any]):
    """(train part, carved validation part) of the run that wrote ``side``, checked against its record."""
    from .engine import TrainConfig, prepare_data

    sel = side.get("selected_on") or {}
    if sel.get("kind") != "carved":
        raise EdgeferError("the checkpoint was not selected on a carve of its training data (it used "
                           f"{sel.get('kind') or 'no recorded'} validation); adjust needs that carve")
    cfg = TrainConfig.from_dict(side.get("training") or {})
    if not cfg.data or not Path(cfg.data).exists():
        raise EdgeferError(f"the run's training data {cfg.data!r} is not here (paths are relative to where it ran)")
    train, val, record = prepare_data(cfg)
    if record.get("rows_sha256") != sel.get("rows_sha256"):
        raise EdgeferError("the carve rebuilt from the sidecar differs from the one that selected the model "
                           "(other data or settings)")
    return train, val


def adjust(ckpt: str | os.PathLike, out: str | os.PathLike, tau: float | None = None,
           taus: Sequence[float] = DEFAULT_TAUS, threads: int | None = None) -> dict[str, Any]:
    """Write the adjusted checkpoint ``out`` (+ sidecar); returns the record stored in it."""
    import torch

    from .checkpoint import read_sidecar, save_state_dict, write_sidecar
    from .data import to_tensor
    from .engine import load_trained

    if not Path(ckpt).is_file():
        raise EdgeferError(f"{ckpt}: no such checkpoint")
    if Path(out).resolve() == Path(ckpt).resolve():
        raise EdgeferError("-o must not overwrite the checkpoint it adjusts")
    if threads:
        torch.set_num_threads(threads)
    model, side = load_trained(ckpt)
    classes = list(side["classes"])
    train, val = carve_of(side)
    if list(train.classes) != classes:
        raise EdgeferError(f"the data's classes {train.classes} differ from the checkpoint's {classes}")
    counts = np.bincount(train.labels, minlength=len(classes)).astype(np.float64)
    prior = (counts + 1.0) / (counts.sum() + len(classes))
    inp = side["input"]
    mean = torch.tensor(inp["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(inp["std"], dtype=torch.float32).view(1, -1, 1, 1)
    model = model.to(memory_format=torch.channels_last)
    x = to_tensor(val, inp["size"], inp["color"])
    plain, mirror = logits_of(model, x, mean, std)
    mirror_used = mirror if side.get("tta") == "flip" else None
    grid = sorted(set(taus) | ({float(tau)} if tau is not None else set()))
    rows = sweep(plain, mirror_used, val.labels, prior, classes, grid)
    chosen = next(r for r in rows if r["tau"] == float(tau)) if tau is not None else choose(rows)
    before = next(r for r in rows if r["tau"] == 0.0) if 0.0 in grid else sweep(plain, mirror_used, val.labels, prior, classes, [0.0])[0]
    bias = -chosen["tau"] * np.log(prior)
    layer = last_linear(model, len(classes))
    with torch.no_grad():
        layer.bias += torch.from_numpy(bias).to(layer.bias.dtype)
        got = model(((x[:64].float() - mean) / std).contiguous(memory_format=torch.channels_last)).double().numpy()
    if not np.allclose(got, plain[:64] + bias, atol=1e-4):  # the fold is the adjustment, on real faces
        raise EdgeferError("folding the adjustment into the output layer did not shift the logits as computed")
    save_state_dict(model, out)
    record = {
        "method": "logit adjustment (Menon et al. 2021): bias - tau * log(prior), prior from the training part",
        "tau": chosen["tau"], "chosen_by": "given" if tau is not None else "best macro-F1 on the carve",
        "prior": dict(zip(classes, prior.round(6).tolist())), "bias": dict(zip(classes, bias.round(6).tolist())),
        "from": str(ckpt),
        "carve_before": {k: before[k] for k in ("top1", "macro_f1", "recall")},
        "carve_after": {k: chosen[k] for k in ("top1", "macro_f1", "recall")},
        "sweep": [{k: r[k] for k in ("tau", "top1", "macro_f1", "recall")} for r in rows],
    }
    kept = {k: v for k, v in side.items() if k not in ("format", "schema", "report", "metrics")}
    metrics = dict(side.get("metrics") or {})
    metrics.update(val_top1=chosen["top1"], val_macro_f1=chosen["macro_f1"], val_recall=chosen["recall"])
    write_sidecar(out, {**kept, "metrics": metrics, "adjust": record})
    plot_sweep(rows, chosen["tau"], Path(out).with_suffix(".adjust.png"), classes)
    return record


def plot_sweep(rows: list[dict[str, Any]], chosen: float, path: Path, classes: Sequence[str]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t = [r["tau"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, [100 * r["top1"] for r in rows], label="top-1", lw=2)
    ax.plot(t, [100 * r["macro_f1"] for r in rows], label="macro-F1", lw=2, ls="--")
    for c in classes:
        if c in ("disgust", "fear"):
            ax.plot(t, [100 * r["recall"][c] for r in rows], label=f"{c} recall", lw=1)
    ax.axvline(chosen, color="gray", lw=1, ls=":")
    ax.set_xlabel("tau (logits - tau * log prior)")
    ax.set_ylabel("% on the carved validation faces")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
