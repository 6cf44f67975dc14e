"""The training loop: a small, CPU-friendly recipe for face-expression classifiers.

What it does and why:

* data lives in memory as one uint8 tensor at the model's input size (:mod:`.data`); batches
  are augmented in torch, vectorised over the batch (flip, small random affine with replicated
  borders, brightness/contrast jitter, random erasing), so no worker processes are needed;
* channels-last tensors: on CPU oneDNN runs 3x3 convs about 5x faster in training that way;
* targets are distributions: one-hot with label smoothing, FERPlus vote distributions (KL
  divergence loss), and mixup / cutmix mixes of either;
* AdamW (or SGD with Nesterov momentum), no weight decay on BatchNorm and biases, linear
  warm-up then cosine decay, stepped per batch. AdamW is the default: on FER2013 SGD at the
  usual lr 0.1 sat on the majority class ("happy", 25%) for three epochs under the full
  augmentation, where AdamW at 2e-3 was past 50% within ten short epochs; optional EMA of the weights (evaluated and
  saved instead of the raw weights when on); optional class-balanced sampling;
* determinism: every epoch reseeds torch and numpy from (seed, epoch), so a run resumed from
  its ``last.pt`` continues exactly as if it had not stopped;
* every epoch: validation top-1 / macro-F1 / per-class recall, ``metrics.json``, a log line,
  ``curves.png``; the best epoch's weights as ``best.pth`` (plain state dict) + sidecar and
  ``confusion.png``; ``last.pt`` to resume from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import EdgeferError

from .checkpoint import load_state_dict, save_state_dict, write_sidecar
from .data import Dataset, align_classes, load_dataset, split_holdout, to_tensor

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    arch: str
    data: str
    val: str | None = None
    out: str | None = None
    epochs: int = 60
    batch: int = 128
    lr: float | None = None  # None: 2e-3 for AdamW, 0.1 for SGD (at batch 128, scaled linearly)
    opt: str = "adamw"
    weight_decay: float | None = None  # None: 5e-4 for SGD, 0.05 for AdamW
    momentum: float = 0.9
    warmup: float = 3.0  # epochs
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0
    mix_prob: float = 0.5  # share of batches mixed when mixup/cutmix is on
    ema: bool = False
    ema_decay: float = 0.999
    balanced: bool = False
    soft_labels: str | None = None  # "ferplus" or a fer2013new.csv path
    seed: int = 0
    flip: bool = True
    rotate: float = 10.0  # degrees
    scale: float = 0.1
    translate: float = 0.1  # fraction of the side
    jitter: float = 0.2  # brightness / contrast
    erase: float = 0.25  # probability of random erasing
    holdout: float = 0.1  # validation share when no --val and the data has no test split
    threads: int | None = None
    limit: int | None = None  # use only the first N training images (tests, smoke runs)
    steps_per_epoch: int | None = None  # cap (tests, smoke runs)
    eval_batch: int = 512
    quiet: bool = False
    command: str | None = None
    build: dict[str, Any] = field(default_factory=dict)  # extra zoo.build kwargs
    init: str | None = None  # start from these weights (a best.pth of an earlier run), fresh schedule
    tta: str | None = None  # "flip": validate (and export) with the mean of the face and its mirror image
    teacher: str | None = None  # distil from this checkpoint (its own tta included) on the same augmented batches
    distill: float = 0.5  # weight of the teacher term; the labels keep 1 - distill
    distill_temp: float = 2.0  # softmax temperature of both sides of the teacher term

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------- helpers
def arch_spec(arch: str) -> dict[str, Any]:
    """Input size, colour, normalisation and classes an architecture module declares."""
    import importlib

    from .zoo import REGISTRY, names

    if arch not in REGISTRY:
        raise EdgeferError(f"unknown architecture {arch!r}; known: {', '.join(names())}")
    mod = importlib.import_module(REGISTRY[arch].split(":")[0])
    if getattr(mod, "KIND", "classifier") != "classifier":
        raise EdgeferError(f"{arch} is a {mod.KIND}; edgefer train trains classifiers")
    size = getattr(mod, "INPUT_SIZE", None)
    if size is None:
        raise EdgeferError(f"architecture {arch} declares no INPUT_SIZE")
    if isinstance(size, int):
        size = (size, size)
    return {
        "size": [int(size[0]), int(size[1])],
        "color": getattr(mod, "COLOR", "gray"),
        "mean": [float(v) for v in getattr(mod, "MEAN", (0.0,))],
        "std": [float(v) for v in getattr(mod, "STD", (255.0,))],
        "classes": list(getattr(mod, "CLASSES", []) or []),
    }


def cosine_lr(step: int, total: int, warmup: int, base: float, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


class EMA:
    """Exponential moving average of a model's weights (BatchNorm statistics copied)."""

    def __init__(self, model, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))  # short warm-up
        with torch.no_grad():
            ema_sd = self.model.state_dict()
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema_sd[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    ema_sd[k].copy_(v)


def augment(x, cfg: TrainConfig):
    """Random flip, affine, jitter and erasing of a float batch (N, C, H, W) in pixel units."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    if cfg.rotate or cfg.scale or cfg.translate or cfg.flip:
        ang = (torch.rand(n) * 2 - 1) * math.radians(cfg.rotate)
        s = 1 + (torch.rand(n) * 2 - 1) * cfg.scale
        tx, ty = ((torch.rand(n) * 2 - 1) * cfg.translate * 2 for _ in range(2))
        flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n)
        cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.jitter:
        c = 1 + (torch.rand(n, 1, 1, 1) * 2 - 1) * cfg.jitter
        b = (torch.rand(n, 1, 1, 1) * 2 - 1) * cfg.jitter * 64
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - m) * c + m + b).clamp_(0, 255)
    if cfg.erase:
        h, w = x.shape[-2:]
        on = torch.rand(n) < cfg.erase
        if on.any():
            area = torch.empty(n).uniform_(0.02, 0.2) * h * w
            ratio = torch.exp(torch.empty(n).uniform_(math.log(0.3), math.log(3.3)))
            eh = (area * ratio).sqrt().clamp(1, h).long()
            ew = (area / ratio).sqrt().clamp(1, w).long()
            y0 = (torch.rand(n) * (h - eh + 1)).long()
            x0 = (torch.rand(n) * (w - ew + 1)).long()
            yy = torch.arange(h).view(1, h, 1)
            xx = torch.arange(w).view(1, 1, w)
            mask = (yy >= y0.view(n, 1, 1)) & (yy < (y0 + eh).view(n, 1, 1)) & (xx >= x0.view(n, 1, 1)) & (xx < (x0 + ew).view(n, 1, 1))
            mask &= on.view(n, 1, 1)
            noise = torch.rand_like(x) * 255
            x = torch.where(mask.unsqueeze(1), noise, x)
    return x


def mix_batch(x, t, cfg: TrainConfig, rng: np.random.Generator):
    """Mixup or cutmix of inputs ``x`` and target distributions ``t`` (or unchanged)."""
    import torch

    modes = [m for m, a in (("mixup", cfg.mixup), ("cutmix", cfg.cutmix)) if a > 0]
    if not modes or rng.random() >= cfg.mix_prob:
        return x, t
    mode = modes[int(rng.integers(len(modes)))]
    alpha = cfg.mixup if mode == "mixup" else cfg.cutmix
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0]))
    if mode == "mixup":
        x = lam * x + (1 - lam) * x[perm]
    else:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, lam * t + (1 - lam) * t[perm]


def metrics_from(confusion: np.ndarray) -> dict[str, Any]:
    """Top-1, macro-F1, per-class recall from a (true x predicted) confusion matrix."""
    cm = confusion.astype(np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    present = support > 0
    return {
        "top1": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "recall": [float(r) for r in recall],
    }


def evaluate(model, x_u8, labels: np.ndarray, soft: np.ndarray | None, mean, std, batch: int = 512,
             tta: str | None = None) -> dict[str, Any]:
    """Loss, top-1, macro-F1, per-class recall and confusion matrix of ``model`` on a uint8 tensor.

    ``tta="flip"`` scores the mean of the probabilities of each face and its mirror image, which
    is what an artifact exported with ``tta: flip`` computes in its graph.
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    k = None
    losses = []
    preds = []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            xb = ((x_u8[i : i + batch].float() - mean) / std).contiguous(memory_format=torch.channels_last)
            logits = model(xb)
            if tta == "flip":
                logits = torch.log((F.softmax(logits, 1) + F.softmax(model(torch.flip(xb, [3])), 1)) / 2)
            k = logits.shape[1]
            logp = F.log_softmax(logits, 1)
            if soft is not None:
                t = torch.from_numpy(soft[i : i + batch])
                losses.append(F.kl_div(logp, t, reduction="sum").item())
            else:
                losses.append(F.nll_loss(logp, torch.from_numpy(labels[i : i + batch]), reduction="sum").item())
            preds.append(logits.argmax(1).numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    k = k or 1
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels, pred), 1)
    out = metrics_from(cm)
    out["loss"] = float(sum(losses) / max(1, len(labels)))
    out["confusion"] = cm.tolist()
    return out


# ----------------------------------------------------------------------------- plots
def plot_curves(history: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no curves.png (pip install matplotlib)")
        return False
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [h["train_loss"] for h in history], label="train")
    a1.plot(ep, [h["val_loss"] for h in history], label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(ep, [100 * h["train_top1"] for h in history], label="train (augmented)")
    a2.plot(ep, [100 * h["val_top1"] for h in history], label="val top-1")
    a2.plot(ep, [100 * h["val_macro_f1"] for h in history], label="val macro-F1", ls="--")
    a2.set_xlabel("epoch")
    a2.set_ylabel("%")
    a2.legend()
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no confusion.png (pip install matplotlib)")
        return False
    m = np.asarray(cm, np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}\n({int(m[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def load_teacher(cfg: "TrainConfig", spec: dict, classes: list[str]):
    """(model in eval mode, its tta) of ``cfg.teacher``; refused when it does not see what the student sees."""
    from . import zoo
    from .checkpoint import read_sidecar

    if not Path(cfg.teacher).is_file():
        raise EdgeferError(f"--teacher {cfg.teacher}: no such checkpoint")
    info = read_sidecar(cfg.teacher)
    if not info:
        raise EdgeferError(f"--teacher {cfg.teacher}: no sidecar ({cfg.teacher}.json); use a best.pth of edgefer train")
    if list(info.get("classes", [])) != list(classes):
        raise EdgeferError(f"--teacher {cfg.teacher}: classes {info.get('classes')} differ from the data's {classes}")
    tin = info.get("input", {})
    mine = {"size": list(spec["size"]), "color": spec["color"], "mean": list(spec["mean"]), "std": list(spec["std"])}
    theirs = {k_: (list(v) if isinstance(v, (list, tuple)) else v) for k_, v in tin.items() if k_ in mine}
    if theirs != mine:
        raise EdgeferError(f"--teacher {cfg.teacher}: input {theirs} differs from {cfg.arch}'s {mine}")
    model = zoo.build(info["arch"], **info.get("build", {}))
    try:
        model.load_state_dict(load_state_dict(cfg.teacher))
    except Exception as e:  # noqa: BLE001
        raise EdgeferError(f"--teacher {cfg.teacher}: does not fit {info['arch']} ({str(e).splitlines()[0][:160]})") from None
    model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    return model, info.get("tta")


# ----------------------------------------------------------------------------- data
def prepare_data(cfg: TrainConfig, spec: dict) -> tuple[Dataset, Dataset]:
    train = load_dataset(cfg.data, usage="Training", soft=cfg.soft_labels)
    kind = train.provenance.get("kind")
    if cfg.val:
        val = load_dataset(cfg.val, usage="PublicTest", soft=cfg.soft_labels)
    elif kind in ("fer2013-csv", "rafdb-basic") or (kind == "class-folders" and Path(cfg.data, "test").is_dir()):
        # the dataset's own test split (FER2013 PublicTest, RAF-DB test, Kaggle test/)
        val = load_dataset(cfg.data, usage="PublicTest", soft=cfg.soft_labels)
    else:
        train, val = split_holdout(train, cfg.holdout, cfg.seed)
    val = align_classes(val, train.classes)
    if cfg.limit:
        train = train.subset(np.arange(min(cfg.limit, len(train))))
    if len(train) == 0 or len(val) == 0:
        raise EdgeferError("no training or validation images")
    return train, val


# ----------------------------------------------------------------------------- training
def _set_seed(seed: int, epoch: int) -> np.random.Generator:
    import random

    import torch

    s = (seed * 1_000_003 + epoch) % (2**31)
    torch.manual_seed(s)
    random.seed(s)
    return np.random.default_rng([seed, epoch + 1])


def _targets(labels: np.ndarray, soft: np.ndarray | None, k: int, smoothing: float):
    import torch

    if soft is not None:
        t = torch.from_numpy(soft).float()
    else:
        t = torch.zeros(len(labels), k)
        t[torch.arange(len(labels)), torch.from_numpy(labels)] = 1.0
    if smoothing:
        t = t * (1 - smoothing) + smoothing / k
    return t


def train(cfg: TrainConfig, resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train ``cfg.arch``; returns the final metrics dict (also written to metrics.json)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from edgefer.progress import progress

    from . import zoo

    state = None
    if resume:
        rp = Path(resume)
        if rp.is_dir():
            rp = rp / "last.pt"
        if not rp.is_file():
            raise EdgeferError(f"--resume {resume}: no such checkpoint")
        try:
            state = torch.load(str(rp), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - one line for any unreadable file
            raise EdgeferError(f"--resume {rp}: not a resumable edgefer training state ({str(e).splitlines()[0][:120]})") from None
        if not isinstance(state, dict) or "config" not in state:
            raise EdgeferError(f"--resume {rp}: not a training state written by edgefer train (use last.pt)")
        saved = TrainConfig.from_dict(state["config"])
        # what may change on resume: the length of the run, the output folder, threads, verbosity
        saved.epochs = cfg.epochs or saved.epochs
        saved.out = str(rp.parent)
        saved.threads = cfg.threads or saved.threads
        saved.quiet = cfg.quiet
        cfg = saved

    spec = arch_spec(cfg.arch)
    out = Path(cfg.out or f"runs/{cfg.arch}")
    out.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads or min(4, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    logf = open(out / "log.txt", "a")

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        logf.write(line + "\n")
        logf.flush()
        log.info(msg)
        if not cfg.quiet:
            tqdm.write(msg)

    t0 = time.time()
    train_ds, val_ds = prepare_data(cfg, spec)
    classes = list(train_ds.classes)
    k = len(classes)
    x_train = to_tensor(train_ds, spec["size"], spec["color"])
    x_val = to_tensor(val_ds, spec["size"], spec["color"])
    say(f"data: {len(train_ds)} train ({train_ds.provenance.get('kind')}), {len(val_ds)} val, classes {', '.join(classes)}"
        f" [{time.time() - t0:.1f}s]")
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)

    build_kw = {"num_classes": k, **(cfg.build or {})}
    _set_seed(cfg.seed, -1)
    model = zoo.build(cfg.arch, **build_kw).to(memory_format=torch.channels_last)
    if cfg.init and state is None:
        if not Path(cfg.init).is_file():
            raise EdgeferError(f"--init {cfg.init}: no such checkpoint")
        try:
            model.load_state_dict(load_state_dict(cfg.init))
        except EdgeferError:
            raise
        except Exception as e:  # noqa: BLE001 - wrong arch / class count: one line
            raise EdgeferError(f"--init {cfg.init}: does not fit {cfg.arch} ({str(e).splitlines()[0][:160]})") from None
    ema = EMA(model, cfg.ema_decay) if cfg.ema else None
    teacher, teacher_tta = (None, None)
    if cfg.teacher:
        if train_ds.soft is not None:
            raise EdgeferError("--teacher and --soft-labels are exclusive")
        teacher, teacher_tta = load_teacher(cfg, spec, classes)
        teacher = teacher.to(memory_format=torch.channels_last)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    scale = cfg.batch / 128
    if cfg.opt == "sgd":
        lr = cfg.lr if cfg.lr is not None else 0.1 * scale
        wd = cfg.weight_decay if cfg.weight_decay is not None else 5e-4
        opt = torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.opt == "adamw":
        lr = cfg.lr if cfg.lr is not None else 2e-3 * scale
        wd = cfg.weight_decay if cfg.weight_decay is not None else 0.05
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    else:
        raise EdgeferError(f"--opt must be sgd or adamw, not {cfg.opt!r}")

    n = len(train_ds)
    steps = max(1, n // cfg.batch) if n >= cfg.batch else 1
    if cfg.steps_per_epoch:
        steps = min(steps, cfg.steps_per_epoch)
    total = steps * cfg.epochs
    warm = int(round(cfg.warmup * steps))

    history: list[dict] = []
    best: dict[str, Any] = {}
    start_epoch, step = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.model.load_state_dict(state["ema"])
            ema.updates = int(state.get("ema_updates", 0))
        opt.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history, best = list(state.get("history", [])), dict(state.get("best", {}))
        say(f"resumed from {resume} at epoch {start_epoch}/{cfg.epochs}")
    command = cfg.command or " ".join(shlex.quote(a) for a in sys.argv)
    if state is None:
        (out / "command.txt").write_text(command + "\n")
    cfg.command = command

    counts = np.bincount(train_ds.labels, minlength=k)
    weights = None
    if cfg.balanced:
        w = 1.0 / np.maximum(counts, 1)
        weights = w[train_ds.labels]
        weights = weights / weights.sum()

    def provenance(ds: Dataset) -> dict:
        p = {k_: v for k_, v in ds.provenance.items() if v is not None}
        p.update(count=len(ds), class_counts=ds.class_counts())
        return p

    def metrics_doc(status: str) -> dict:
        return {
            "arch": cfg.arch, "status": status, "epochs": cfg.epochs, "epochs_done": len(history),
            "classes": classes, "best": best, "history": history,
            "data": {"train": provenance(train_ds), "val": provenance(val_ds)},
            "config": asdict(cfg), "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                               "threads": threads, "cpu": platform.processor() or platform.machine()},
        }

    def write_json(path: Path, doc: dict) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        os.replace(tmp, path)

    for epoch in range(start_epoch, cfg.epochs):
        te = time.time()
        rng = _set_seed(cfg.seed, epoch)
        model.train()
        order = rng.choice(n, size=steps * cfg.batch, replace=True, p=weights) if weights is not None else None
        if order is None:
            perm = rng.permutation(n)
            while len(perm) < steps * min(cfg.batch, n):
                perm = np.concatenate([perm, rng.permutation(n)])
            order = perm
        bs = min(cfg.batch, n)
        tot_loss, tot_correct, seen = 0.0, 0, 0
        # a bar on a terminal, a plain line every few seconds in a log (no carriage returns)
        bar = progress(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=cfg.quiet, unit="batch")
        for b in bar:
            idx = order[b * bs : (b + 1) * bs]
            x = augment(x_train[idx].float(), cfg)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            soft = None if train_ds.soft is None else train_ds.soft[idx]
            t = _targets(train_ds.labels[idx], soft, k, cfg.label_smoothing)
            x, t = mix_batch(x, t, cfg, rng)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, total, warm, lr, cfg.min_lr_ratio)
            logits = model(x)
            logp = F.log_softmax(logits, 1)
            loss = F.kl_div(logp, t, reduction="batchmean") if train_ds.soft is not None else -(t * logp).sum(1).mean()
            if teacher is not None:
                # Hinton et al. 2015: KL to the teacher's softened probabilities, scaled by T^2
                tau = cfg.distill_temp
                with torch.no_grad():
                    pt = F.softmax(teacher(x) / tau, 1)
                    if teacher_tta == "flip":
                        pt = (pt + F.softmax(teacher(torch.flip(x, [3])) / tau, 1)) / 2
                kd = F.kl_div(F.log_softmax(logits / tau, 1), pt, reduction="batchmean") * tau * tau
                loss = (1 - cfg.distill) * loss + cfg.distill * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
            tot_loss += loss.item() * len(idx)
            tot_correct += int((logits.argmax(1) == t.argmax(1)).sum())
            seen += len(idx)
            if b % 20 == 0 or b == steps - 1:  # the last batch too: the bar's final loss and lr are the epoch's
                bar.set_postfix(loss=f"{tot_loss / seen:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        bar.close()
        eval_model = ema.model if ema is not None else model
        vm = evaluate(eval_model, x_val, val_ds.labels, val_ds.soft, mean, std, cfg.eval_batch, cfg.tta)
        rec = {
            "epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
            "train_loss": tot_loss / max(1, seen), "train_top1": tot_correct / max(1, seen),
            "val_loss": vm["loss"], "val_top1": vm["top1"], "val_macro_f1": vm["macro_f1"],
            "val_recall": vm["recall"], "seconds": time.time() - te,
        }
        history.append(rec)
        improved = not best or vm["top1"] > best.get("val_top1", -1)
        if improved:
            best = {"epoch": epoch + 1, "val_top1": vm["top1"], "val_macro_f1": vm["macro_f1"], "val_loss": vm["loss"],
                    "val_recall": dict(zip(classes, vm["recall"])), "confusion": vm["confusion"]}
            save_state_dict(eval_model, out / "best.pth")
            write_sidecar(out / "best.pth", {
                "arch": cfg.arch, "build": build_kw, "classes": classes,
                "input": {k_: spec[k_] for k_ in ("size", "color", "mean", "std")},
                **({"tta": cfg.tta} if cfg.tta else {}),
                "metrics": {k_: v for k_, v in best.items() if k_ != "confusion"},
                "data": {"train": provenance(train_ds), "val": provenance(val_ds)},
                "command": command, "training": asdict(cfg),
                "weights": "ema" if ema is not None else "raw",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__,
            })
            plot_confusion(vm["confusion"], classes, out / "confusion.png",
                           f"{cfg.arch} epoch {epoch + 1}: val top-1 {100 * vm['top1']:.2f}%, macro-F1 {100 * vm['macro_f1']:.2f}%")
        say(f"epoch {epoch + 1}/{cfg.epochs} train loss {rec['train_loss']:.4f} acc {100 * rec['train_top1']:.2f}% | "
            f"val loss {vm['loss']:.4f} top-1 {100 * vm['top1']:.2f}% macro-F1 {100 * vm['macro_f1']:.2f}%"
            f"{' *best*' if improved else ''} | lr {rec['lr']:.5f} | {rec['seconds']:.0f}s")
        resume_state = {
            "config": asdict(cfg), "epoch": epoch + 1, "step": step, "history": history, "best": best,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": ema.model.state_dict() if ema is not None else None, "ema_updates": ema.updates if ema else 0,
        }
        tmp = out / "last.pt.tmp"
        torch.save(resume_state, tmp)
        os.replace(tmp, out / "last.pt")
        write_json(out / "metrics.json", metrics_doc("running" if epoch + 1 < cfg.epochs else "done"))
        plot_curves(history, out / "curves.png")
    doc = metrics_doc("done")
    write_json(out / "metrics.json", doc)
    if history:
        plot_curves(history, out / "curves.png")
    say(f"done: best val top-1 {100 * best.get('val_top1', 0):.2f}% at epoch {best.get('epoch')} -> {out / 'best.pth'}")
    logf.close()
    return doc


def load_trained(ckpt: str | os.PathLike):
    """(model in eval mode, sidecar) of a checkpoint written by :func:`train`."""
    from . import zoo
    from .checkpoint import read_sidecar

    side = read_sidecar(ckpt)
    if side is None:
        raise EdgeferError(f"{ckpt} has no sidecar {Path(ckpt).name}.json")
    model = zoo.build(side["arch"], **side.get("build", {}))
    model.load_state_dict(load_state_dict(ckpt))
    return model.eval(), side
