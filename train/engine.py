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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.errors import EdgeferError

from .checkpoint import load_state_dict, save_state_dict, write_sidecar
from .data import (
    Dataset,
    align_classes,
    apply_soft,
    carve,
    load_dataset,
    load_raw,
    to_tensor,
)

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
    # camera realism (each a per-image probability; 0 = off, no random numbers drawn)
    aug: str | None = None  # preset that set the values below ("real"); recorded, the values rule
    downscale: float = 0.0  # shrink then re-enlarge (a face far from the camera)
    downscale_min: float = 0.5  # smallest linear factor
    blur: float = 0.0  # Gaussian blur (focus, motion)
    blur_sigma: float = 1.2  # max sigma in pixels of the model input
    gamma: float = 0.0  # gamma (exposure curve)
    gamma_max: float = 1.6  # gamma drawn log-uniform in [1/gamma_max, gamma_max]
    noise: float = 0.0  # additive Gaussian sensor noise
    noise_sigma: float = 8.0  # max sigma in grey levels
    jpeg: float = 0.0  # JPEG re-encoding (cv2, per image)
    jpeg_quality: int = 30  # lowest quality drawn (up to 95)
    # validation protocol (issue 15): a class-stratified carve of the training data selects the model
    val_split: float = 0.1  # share carved out when no --val
    split_seed: int = 15  # seed of the carve; independent of --seed so every run holds out the same faces
    report: list[str] = field(default_factory=list)  # labelled sets scored once with the best weights, after training
    # rare-class levers
    loss: str = "ce"  # "ce" | "focal"
    focal_gamma: float = 2.0
    class_weights: str | None = None  # None | "balanced" (1/n) | "effective" (Cui et al. 2019)
    cb_beta: float = 0.999  # beta of the effective number (1 - beta^n) / (1 - beta)
    soft_classes: str = "ferplus"  # classes FERPlus votes become targets over: "ferplus" (8) | "fer2013" (7)
    soft_mix: float = 1.0  # < 1 (fer2013 classes): targets (1 - mix) * the data's label + mix * the votes
    # stochastic weight averaging (Izmailov et al. 2018)
    swa_start: int | None = None  # 1-based epoch from which the weights are averaged (None = off)
    swa_lr: float | None = None  # constant lr from swa_start on (None: keep the schedule)
    swa_bn_images: int = 4096  # training images (clean) the averaged weights' BatchNorm statistics are recomputed on
    threads: int | None = None
    # where the network runs: "auto" (CUDA when torch sees one, else the CPU) | "cpu" | "cuda" | "cuda:N".
    # Augmentation, views and mixing stay on the CPU (the same random stream on every device); each
    # finished batch moves to the device.
    device: str = "auto"
    limit: int | None = None  # use only the first N training images (tests, smoke runs)
    steps_per_epoch: int | None = None  # cap (tests, smoke runs)
    eval_batch: int = 512
    quiet: bool = False
    command: str | None = None
    build: dict[str, Any] = field(default_factory=dict)  # extra zoo.build kwargs
    init: str | None = None  # start from these weights (a best.pth of an earlier run), fresh schedule
    tta: str | None = None  # "flip": validate (and export) with the mean of the face and its mirror image
    teacher: str | list[str] | None = None  # distil from this checkpoint, or the mean of several (each's tta included)
    distill: float = 0.5  # weight of the teacher term; the labels keep 1 - distill
    distill_temp: float = 2.0  # softmax temperature of both sides of the teacher term
    # what the teachers see: "same" = the student's augmented batch; "clean" = the same faces, geometry,
    # jitter, views and mixing before the camera degradations and erasing (the student learns to give a
    # degraded face the answer its clean twin gets)
    teacher_input: str = "same"
    # runtime views (train/views.py): a share of the samples is the face as the runtime crops it
    views: str | None = None  # an .npz of `edgefer train views` made from the same --data
    view_prob: float = 0.5  # share of training samples drawn from their views (where the detector found the face)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        d = dict(d)
        if "holdout" in d and "val_split" not in d:  # a state saved before issue 15: same holdout, same seed
            d["val_split"] = d["holdout"]
            d.setdefault("split_seed", d.get("seed", 0))
        return cls(**{k: v for k, v in d.items() if k in names})

    def teachers(self) -> list[str]:
        """The teacher checkpoints (one path or several)."""
        if not self.teacher:
            return []
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


#: ``--aug real``: what webcams and studio cameras do to a face the runtime crops (issue 15).
#: Wider crop jitter (the detector's box and eye angle move from frame to frame), resolution loss,
#: focus/motion blur, exposure curves, sensor noise and JPEG; occlusion stays random erasing.
AUG_PRESETS: dict[str, dict[str, float]] = {
    "real": {"rotate": 15.0, "scale": 0.15, "translate": 0.1, "jitter": 0.3, "erase": 0.3,
             "downscale": 0.25, "downscale_min": 0.4, "blur": 0.25, "blur_sigma": 1.2, "gamma": 0.3, "gamma_max": 1.6,
             "noise": 0.25, "noise_sigma": 8.0, "jpeg": 0.3, "jpeg_quality": 30},
}


# ----------------------------------------------------------------------------- helpers
def resolve_device(name: str | None):
    """The torch device ``--device`` names; a CUDA device this machine lacks is one line, not a traceback."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise EdgeferError(f"--device {name}: torch sees no CUDA device here (this torch {torch.__version__}"
                               f"{' is a CPU build' if torch.version.cuda is None else ''}); use --device cpu")
        idx = int(name[5:]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise EdgeferError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", idx)
    raise EdgeferError(f"--device {name}: expected auto, cpu, cuda or cuda:N")


def describe_device(dev) -> str:
    import torch

    return f"cuda:{dev.index or 0} ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"


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


def augment(x, cfg: TrainConfig, keep_clean: bool = False):
    """Random flip, affine, jitter and erasing of a float batch (N, C, H, W) in pixel units.

    With ``keep_clean`` it returns ``(x, clean)``: ``clean`` is the same batch after the geometry
    and jitter but before :func:`camera` and erasing (the same random numbers are drawn either way).
    """
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
    clean = x  # camera() and the erasing below make new tensors; this one is not written to again
    x = camera(x, cfg)
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
    return (x, clean) if keep_clean else x


def _pick(n: int, p: float):
    """Indices of the images (each with probability ``p``) a transform applies to; None if none."""
    import torch

    if p <= 0:
        return None
    idx = torch.nonzero(torch.rand(n) < p).flatten()
    return idx if len(idx) else None


def gaussian_blur(x, sigma):
    """Blur each image of ``x`` (N, C, H, W) with its own sigma (N,), separably, reflect borders."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    r = max(1, int(math.ceil(2.5 * float(sigma.max()))))
    r = min(r, (min(h, w) - 1) // 2)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 2r+1)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def jpeg_roundtrip(x, quality) -> Any:
    """Encode and decode each image of ``x`` (N, C, H, W, pixel units) as JPEG at its quality (N,).

    Real JPEG (OpenCV's libjpeg, 4:2:0 for colour), not an approximation: at 48x48 one round trip
    costs about 30 us, a batch of 128 a few ms beside a training step's ~100 ms. Colour tensors
    are encoded in their channel order as if BGR (chroma subsampling then mixes slightly
    different planes for an RGB model; immaterial next to the compression itself).
    """
    import cv2
    import torch

    arr = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(arr)
    for i in range(len(arr)):
        img = arr[i] if arr.shape[-1] != 1 else arr[i, :, :, 0]
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
        if not ok:  # never seen for uint8 images; keep the face rather than fail a training run
            out[i] = arr[i]
            continue
        dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED if arr.shape[-1] != 1 else cv2.IMREAD_GRAYSCALE)
        out[i] = dec.reshape(out[i].shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.dtype)


def camera(x, cfg: TrainConfig):
    """What a real camera adds to a face crop, each on a random share of the batch (pixel units).

    In the order light meets it: resolution (a far face: shrunk then re-enlarged as the
    runtime's resize does), blur, exposure curve (gamma), sensor noise, then JPEG. Off by default
    (each probability 0 draws no random numbers, so older recipes reproduce bit for bit); on
    with ``--aug real`` or each flag.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    idx = _pick(n, cfg.downscale)
    if idx is not None:
        f = torch.empty(len(idx)).uniform_(cfg.downscale_min, 1.0)
        x = x.clone()
        for j, i in enumerate(idx.tolist()):
            sh, sw = max(4, int(round(h * float(f[j])))), max(4, int(round(w * float(f[j]))))
            small = F.interpolate(x[i : i + 1], size=(sh, sw), mode="area")
            x[i : i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    idx = _pick(n, cfg.blur)
    if idx is not None:
        sigma = torch.empty(len(idx)).uniform_(0.3, max(0.31, cfg.blur_sigma))
        x = x.clone()
        x[idx] = gaussian_blur(x[idx], sigma)
    idx = _pick(n, cfg.gamma)
    if idx is not None:
        lg = math.log(max(cfg.gamma_max, 1.0 + 1e-6))
        g = torch.exp(torch.empty(len(idx)).uniform_(-lg, lg)).view(-1, 1, 1, 1)
        x = x.clone()
        x[idx] = (255.0 * (x[idx] / 255.0).clamp(0, 1) ** g).clamp(0, 255)
    idx = _pick(n, cfg.noise)
    if idx is not None:
        sig = torch.empty(len(idx)).uniform_(0, cfg.noise_sigma).view(-1, 1, 1, 1)
        x = x.clone()
        x[idx] = (x[idx] + torch.randn_like(x[idx]) * sig).clamp(0, 255)
    idx = _pick(n, cfg.jpeg)
    if idx is not None:
        q = torch.randint(int(cfg.jpeg_quality), 96, (len(idx),))
        x = x.clone()
        x[idx] = jpeg_roundtrip(x[idx], q)
    return x


def mix_batch(x, t, cfg: TrainConfig, rng: np.random.Generator, twin=None):
    """Mixup or cutmix of inputs ``x`` and target distributions ``t`` (or unchanged).

    ``twin`` (a second view of the same batch, e.g. the teachers' clean one) gets the very same
    mixing; it is then returned third.
    """
    import torch

    modes = [m for m, a in (("mixup", cfg.mixup), ("cutmix", cfg.cutmix)) if a > 0]
    if not modes or rng.random() >= cfg.mix_prob:
        return (x, t) if twin is None else (x, t, twin)
    mode = modes[int(rng.integers(len(modes)))]
    alpha = cfg.mixup if mode == "mixup" else cfg.cutmix
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0]))
    if mode == "mixup":
        def mix(v):
            return lam * v + (1 - lam) * v[perm]
    else:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)

        def mix(v):
            v = v.clone()
            v[:, :, y0:y1, x0:x1] = v[perm][:, :, y0:y1, x0:x1]
            return v
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    t = lam * t + (1 - lam) * t[perm]
    return (mix(x), t) if twin is None else (mix(x), t, mix(twin))


def class_weight_vector(counts: Sequence[int], mode: str | None, beta: float = 0.999) -> np.ndarray | None:
    """Per-class loss weights for rare classes, normalised to sum to the number of classes.

    ``balanced``: ``1 / n_c`` (inverse frequency). ``effective``: Cui et al. 2019, "Class-Balanced
    Loss Based on Effective Number of Samples": ``(1 - beta) / (1 - beta ** n_c)``, which grows
    slower than 1/n for big classes (their samples overlap; it saturates at ``1 / (1 - beta)``
    faces), so FER2013's 436 disgust faces get 2.8x the weight of its 7,215 happy ones at beta
    0.999 instead of 16.5x (beta 0.9999: 11x). Absent classes get 0.
    """
    if not mode:
        return None
    n = np.asarray(counts, np.float64)
    present = n > 0
    w = np.zeros_like(n)
    if mode == "balanced":
        w[present] = 1.0 / n[present]
    elif mode == "effective":
        if not 0 < beta < 1:
            raise EdgeferError(f"--cb-beta must be in (0, 1), not {beta}")
        w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    else:
        raise EdgeferError(f"--class-weights must be balanced or effective, not {mode!r}")
    return w * present.sum() / w.sum()


def label_loss(logits, t, soft_targets: bool, cfg: TrainConfig, cw=None):
    """The label term: cross-entropy (KL for vote distributions), or focal; optionally class-weighted.

    Targets ``t`` are distributions (smoothed one-hot, votes, mixes). Focal (Lin et al. 2017)
    scales each class's ``-t log p`` by ``(1 - p) ** gamma``, so easy faces (most "happy") count
    less. Class weights weigh each image by ``t @ w`` (its label's weight; a mix's blend), mean
    over the batch as in Cui et al.
    """
    import torch.nn.functional as F

    logp = F.log_softmax(logits, 1)
    if cfg.loss == "focal":
        per = -(t * (1 - logp.exp()).pow(cfg.focal_gamma) * logp).sum(1)
    elif cfg.loss == "ce":
        if cw is None:  # the recipe's original expressions, value for value
            return F.kl_div(logp, t, reduction="batchmean") if soft_targets else -(t * logp).sum(1).mean()
        per = F.kl_div(logp, t, reduction="none").sum(1) if soft_targets else -(t * logp).sum(1)
    else:
        raise EdgeferError(f"--loss must be ce or focal, not {cfg.loss!r}")
    if cw is not None:
        per = per * (t @ cw)
    return per.mean()


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
    dev = next(model.parameters()).device
    k = None
    losses = []
    preds = []
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            xb = ((x_u8[i : i + batch].float() - mean) / std).contiguous(memory_format=torch.channels_last).to(dev)
            logits = model(xb)
            if tta == "flip":
                logits = torch.log((F.softmax(logits, 1) + F.softmax(model(torch.flip(xb, [3])), 1)) / 2)
            k = logits.shape[1]
            logp = F.log_softmax(logits, 1)
            if soft is not None:
                t = torch.from_numpy(soft[i : i + batch]).to(dev)
                losses.append(F.kl_div(logp, t, reduction="sum").item())
            else:
                losses.append(F.nll_loss(logp, torch.from_numpy(labels[i : i + batch]).to(dev), reduction="sum").item())
            preds.append(logits.argmax(1).cpu().numpy())
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


def load_teacher(path: str, cfg: TrainConfig, spec: dict, classes: list[str]):
    """(model in eval mode, its tta, its sidecar) of one teacher; refused when it does not see what the student sees."""
    from . import zoo
    from .checkpoint import read_sidecar

    if not Path(path).is_file():
        raise EdgeferError(f"--teacher {path}: no such checkpoint")
    info = read_sidecar(path)
    if not info:
        raise EdgeferError(f"--teacher {path}: no sidecar ({path}.json); use a best.pth of edgefer train")
    if list(info.get("classes", [])) != list(classes):
        raise EdgeferError(f"--teacher {path}: classes {info.get('classes')} differ from the data's {classes}")
    tin = info.get("input", {})
    mine = {"size": list(spec["size"]), "color": spec["color"], "mean": list(spec["mean"]), "std": list(spec["std"])}
    theirs = {k_: (list(v) if isinstance(v, (list, tuple)) else v) for k_, v in tin.items() if k_ in mine}
    if theirs != mine:
        raise EdgeferError(f"--teacher {path}: input {theirs} differs from {cfg.arch}'s {mine}")
    model = zoo.build(info["arch"], **info.get("build", {}))
    try:
        model.load_state_dict(load_state_dict(path))
    except Exception as e:  # noqa: BLE001
        raise EdgeferError(f"--teacher {path}: does not fit {info['arch']} ({str(e).splitlines()[0][:160]})") from None
    model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    return model, info.get("tta"), info


def teacher_probs(teachers, x, tau: float):
    """Mean over teachers of their softened probabilities (each averaged with its mirror when its tta is flip)."""
    import torch
    import torch.nn.functional as F

    acc = None
    for model, tta in teachers:
        p = F.softmax(model(x) / tau, 1)
        if tta == "flip":
            p = (p + F.softmax(model(torch.flip(x, [3])) / tau, 1)) / 2
        acc = p if acc is None else acc + p
    return acc / len(teachers)


def saw_validation(side: dict | None, selected_on: dict) -> str | None:
    """Why a checkpoint (``--init``/``--teacher``) has seen this run's carved validation faces, or None.

    It has when it was trained on the same data file without the same carve (e.g. the bundled
    EdgeNets, trained on all of train.npz): its knowledge of those faces then flatters every
    validation score of this run.
    """
    if not side or selected_on.get("kind") != "carved":
        return None
    tr = (side.get("data") or {}).get("train") or {}
    if not selected_on.get("data_sha256") or tr.get("sha256") != selected_on.get("data_sha256"):
        return None
    theirs = side.get("selected_on") or {}
    if theirs.get("kind") == "carved" and theirs.get("rows_sha256") == selected_on.get("rows_sha256"):
        return None
    return "it was trained on the same data file without this run's carve"


# ----------------------------------------------------------------------------- data
TEST_WORDS = ("publictest", "privatetest", "test")


def looks_like_test(ds: Dataset, path: str) -> str | None:
    """Why ``path`` looks like a test split (a FER2013 *Test usage, a file named *test*, FER2013
    test image names), or None. Selecting on such a set makes its score optimistic."""
    usage = str(ds.provenance.get("usage") or "")
    if "test" in usage.lower():
        return f"its {usage} rows"
    name = Path(path).name.lower()
    if "test" in name:
        return f"its name {Path(path).name!r}"
    if Path(path).suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "names" in z.files:
                    first = [str(v) for v in z["names"][:32]]
                    if first and all(n.lower().startswith(("publictest", "privatetest")) for n in first):
                        return f"its image names ({first[0]}, ...)"
        except Exception:  # noqa: BLE001 - a hint only; the reader has validated the file
            return None
    return None


def prepare_data(cfg: TrainConfig, spec: dict | None = None) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """(train, validation, what selects the model).

    Without ``--val`` the validation set is carved from the training data (class-stratified,
    ``--val-split`` of each class, seed ``--split-seed``; :func:`.data.carve`) before FERPlus
    votes drop any image, so every run on the same file holds out the same faces. ``--limit N``
    keeps the file's first N images before the carve. A FER2013 CSV's PublicTest rows and a
    dataset's test folder are no longer used to select: pass them to ``--report``.
    """
    train = load_raw(cfg.data, usage="Training", soft=cfg.soft_labels)
    if cfg.limit:
        train = train.subset(np.arange(min(cfg.limit, len(train))))
    if cfg.val:
        want8 = cfg.soft_labels and cfg.soft_classes == "ferplus"
        val = load_dataset(cfg.val, usage="PublicTest", soft=cfg.soft_labels if want8 else None)
        why = looks_like_test(val, cfg.val)
        selected_on = {"kind": "external", "path": str(cfg.val), "data_sha256": val.provenance.get("sha256"),
                       "size": len(val), "class_counts": val.class_counts(), "test_like": bool(why)}
        if why:
            selected_on["test_like_reason"] = why
            msg = (f"edgefer train: warning: --val {cfg.val} looks like a test split ({why}): selecting the best epoch "
                   f"on it makes its score optimistic; drop --val (a carved split selects) and pass it to --report")
            print(msg, file=sys.stderr, flush=True)
    else:
        train, val, selected_on = carve(train, cfg.val_split, cfg.split_seed)
        selected_on["limit"] = cfg.limit
    if cfg.soft_labels:
        train = apply_soft(train, cfg.soft_classes, cfg.soft_mix)
        if cfg.soft_classes == "ferplus":
            val = apply_soft(val, "ferplus")  # 8-class model: validated against the votes
        else:
            val.votes = None  # 7-class model: validated against the data's own labels
    val = align_classes(val, train.classes)
    if len(train) == 0 or len(val) == 0:
        raise EdgeferError("no training or validation images")
    return train, val, selected_on


# ----------------------------------------------------------------------------- training
def _set_seed(seed: int, epoch: int) -> np.random.Generator:
    import random

    import torch

    s = (seed * 1_000_003 + epoch) % (2**31)
    torch.manual_seed(s)
    random.seed(s)
    return np.random.default_rng([seed, epoch + 1])


def with_views(x, idx: np.ndarray, views, found: np.ndarray, p: float, rng: np.random.Generator):
    """The batch ``x`` (uint8, of rows ``idx``) with a share ``p`` of its faces swapped for one of their
    runtime views (:mod:`.views`), drawn among the views where the detector found the face."""
    f = found[idx]
    use = np.flatnonzero((rng.random(len(idx)) < p) & f.any(1))
    if not len(use):
        return x
    x = x.clone()
    for b in use.tolist():
        choices = np.flatnonzero(f[b])
        x[b] = views[idx[b], int(choices[rng.integers(len(choices))])]
    return x


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
        # what may change on resume: the length of the run, the output folder, threads, device, verbosity
        saved.epochs = cfg.epochs or saved.epochs
        saved.out = str(rp.parent)
        saved.threads = cfg.threads or saved.threads
        saved.device = cfg.device
        saved.quiet = cfg.quiet
        cfg = saved

    spec = arch_spec(cfg.arch)
    out = Path(cfg.out or f"runs/{cfg.arch}")
    out.mkdir(parents=True, exist_ok=True)
    threads = cfg.threads or min(4, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    dev = resolve_device(cfg.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    logf = open(out / "log.txt", "a")

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        logf.write(line + "\n")
        logf.flush()
        log.info(msg)
        if not cfg.quiet:
            tqdm.write(msg)

    t0 = time.time()
    train_ds, val_ds, selected_on = prepare_data(cfg, spec)
    classes = list(train_ds.classes)
    k = len(classes)
    x_train = to_tensor(train_ds, spec["size"], spec["color"])
    x_val = to_tensor(val_ds, spec["size"], spec["color"])
    x_views = f_views = None
    if cfg.views:
        from .views import load_views, views_for

        loaded = load_views(cfg.views, train_ds.provenance.get("sha256"), spec["size"], spec["color"])
        v_np, f_views = views_for(loaded, train_ds.rows)
        x_views = torch.from_numpy(np.ascontiguousarray(v_np.transpose(0, 1, 4, 2, 3)))
        del loaded, v_np
        say(f"views: {cfg.views}: {int(f_views.any(1).sum())} of {len(train_ds)} training faces have runtime views "
            f"({f_views.shape[1]} each, detector found {100 * f_views.mean():.1f}%); a share {cfg.view_prob:g} of samples uses one")
    say(f"device: {describe_device(dev)}, {threads} CPU threads for data and augmentation")
    say(f"data: {len(train_ds)} train ({train_ds.provenance.get('kind')}), {len(val_ds)} val, classes {', '.join(classes)}"
        f" [{time.time() - t0:.1f}s]")
    if selected_on["kind"] == "carved":
        say(f"selection: carved {selected_on['fraction']:.0%} of the training data, class-stratified, split seed "
            f"{selected_on['seed']} ({selected_on['size']} faces, rows {selected_on['rows_sha256'][:19]}...)")
    else:
        say(f"selection: external --val {selected_on['path']}"
            + (f" (WARNING: looks like a test split: {selected_on['test_like_reason']})" if selected_on["test_like"] else ""))
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)

    build_kw = {"num_classes": k, **(cfg.build or {})}
    _set_seed(cfg.seed, -1)
    model = zoo.build(cfg.arch, **build_kw).to(dev, memory_format=torch.channels_last)
    from .checkpoint import read_sidecar

    def leak(flag: str, path: str) -> None:
        """Warn (and record) when a starting point or teacher has seen the carved validation faces."""
        try:
            side_ = read_sidecar(path)
        except EdgeferError:
            side_ = None
        why = saw_validation(side_, selected_on)
        if why:
            msg = f"{flag} {path} has seen this run's validation faces ({why}): validation scores are optimistic"
            selected_on.setdefault("warnings", []).append(msg)
            say("WARNING: " + msg)

    if cfg.init and state is None:
        if not Path(cfg.init).is_file():
            raise EdgeferError(f"--init {cfg.init}: no such checkpoint")
        try:
            model.load_state_dict(load_state_dict(cfg.init))
        except EdgeferError:
            raise
        except Exception as e:  # noqa: BLE001 - wrong arch / class count: one line
            raise EdgeferError(f"--init {cfg.init}: does not fit {cfg.arch} ({str(e).splitlines()[0][:160]})") from None
    if cfg.init:
        leak("--init", cfg.init)
    ema = EMA(model, cfg.ema_decay) if cfg.ema else None
    teachers = []
    if cfg.teachers():
        # with --soft-labels the label term is the soft targets; a teacher must share the run's classes
        for tp in cfg.teachers():
            tm, tta_, _ = load_teacher(tp, cfg, spec, classes)
            teachers.append((tm.to(dev, memory_format=torch.channels_last), tta_))
            leak("--teacher", tp)
    if cfg.teacher_input not in ("same", "clean"):
        raise EdgeferError(f"--teacher-input is same or clean, not {cfg.teacher_input!r}")
    if cfg.teacher_input == "clean" and not teachers:
        raise EdgeferError("--teacher-input clean needs --teacher")
    clean_teacher = cfg.teacher_input == "clean"
    swa = None
    if cfg.swa_start:
        from torch.optim.swa_utils import AveragedModel

        if not 1 <= cfg.swa_start <= cfg.epochs:
            raise EdgeferError(f"--swa-start must be an epoch in 1..{cfg.epochs}, not {cfg.swa_start}")
        swa = AveragedModel(model)

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
        if swa is not None and state.get("swa") is not None:
            swa.load_state_dict(state["swa"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history, best = list(state.get("history", [])), dict(state.get("best", {}))
        say(f"resumed from {resume} at epoch {start_epoch}/{cfg.epochs}")
    command = cfg.command or " ".join(shlex.quote(a) for a in sys.argv)
    if state is None:
        (out / "command.txt").write_text(command + "\n")
    cfg.command = command

    counts = np.bincount(train_ds.labels, minlength=k)
    cw_np = class_weight_vector(counts, cfg.class_weights, cfg.cb_beta)
    cw = None if cw_np is None else torch.from_numpy(cw_np).float().to(dev)
    if cw_np is not None:
        say(f"class weights ({cfg.class_weights}): " + ", ".join(f"{c} {w:.2f}" for c, w in zip(classes, cw_np)))
    swa_bn = None
    if swa is not None:  # clean training faces (no augmentation) to recompute the averaged weights' BN statistics
        sel = np.sort(np.random.default_rng([cfg.seed, 7]).permutation(len(train_ds))[: cfg.swa_bn_images])
        swa_bn = [((x_train[sel[i : i + cfg.eval_batch]].float() - mean) / std).contiguous(memory_format=torch.channels_last)
                  for i in range(0, len(sel), cfg.eval_batch)]
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
            "data": {"train": provenance(train_ds), "val": provenance(val_ds)}, "selected_on": selected_on,
            "config": asdict(cfg), "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                               "threads": threads, "cpu": platform.processor() or platform.machine(),
                                               "device": describe_device(dev)},
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
            xb = x_train[idx]
            if x_views is not None:
                xb = with_views(xb, idx, x_views, f_views, cfg.view_prob, rng)
            soft = None if train_ds.soft is None else train_ds.soft[idx]
            t = _targets(train_ds.labels[idx], soft, k, cfg.label_smoothing)
            if clean_teacher:
                x, xt = augment(xb.float(), cfg, keep_clean=True)
                x, xt = (((v - mean) / std).contiguous(memory_format=torch.channels_last) for v in (x, xt))
                x, t, xt = mix_batch(x, t, cfg, rng, twin=xt)
                x, t, xt = (v.to(dev, non_blocking=True) for v in (x, t, xt))
            else:
                x = ((augment(xb.float(), cfg) - mean) / std).contiguous(memory_format=torch.channels_last)
                x, t = mix_batch(x, t, cfg, rng)
                x, t = x.to(dev, non_blocking=True), t.to(dev, non_blocking=True)
                xt = x
            in_swa = swa is not None and cfg.swa_lr is not None and epoch + 1 >= cfg.swa_start
            for g in opt.param_groups:
                g["lr"] = cfg.swa_lr if in_swa else cosine_lr(step, total, warm, lr, cfg.min_lr_ratio)
            logits = model(x)
            loss = label_loss(logits, t, train_ds.soft is not None, cfg, cw)
            if teachers:
                # Hinton et al. 2015: KL to the teachers' (mean) softened probabilities, scaled by T^2
                tau = cfg.distill_temp
                with torch.no_grad():
                    pt = teacher_probs(teachers, xt, tau)
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
        kind = "ema" if ema is not None else "raw"
        if swa is not None and epoch + 1 >= cfg.swa_start:
            from torch.optim.swa_utils import update_bn

            swa.update_parameters(model)
            update_bn(swa_bn, swa, device=dev)  # BatchNorm statistics of the averaged weights, on clean training faces
            sm = evaluate(swa.module, x_val, val_ds.labels, val_ds.soft, mean, std, cfg.eval_batch, cfg.tta)
            rec.update(swa_val_top1=sm["top1"], swa_val_macro_f1=sm["macro_f1"], swa_models=int(swa.n_averaged))
            if sm["top1"] > vm["top1"]:  # the averaged weights compete with this epoch's for best
                vm, eval_model, kind = sm, swa.module, "swa"
        improved = not best or vm["top1"] > best.get("val_top1", -1)
        if improved:
            best = {"epoch": epoch + 1, "val_top1": vm["top1"], "val_macro_f1": vm["macro_f1"], "val_loss": vm["loss"],
                    "val_recall": dict(zip(classes, vm["recall"])), "confusion": vm["confusion"], "weights": kind}
            save_state_dict(eval_model, out / "best.pth")
            write_sidecar(out / "best.pth", {
                "arch": cfg.arch, "build": build_kw, "classes": classes,
                "input": {k_: spec[k_] for k_ in ("size", "color", "mean", "std")},
                **({"tta": cfg.tta} if cfg.tta else {}),
                "metrics": {k_: v for k_, v in best.items() if k_ != "confusion"},
                "data": {"train": provenance(train_ds), "val": provenance(val_ds)}, "selected_on": selected_on,
                "command": command, "training": asdict(cfg),
                "weights": kind,
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
            "swa": swa.state_dict() if swa is not None else None,
        }
        tmp = out / "last.pt.tmp"
        torch.save(resume_state, tmp)
        os.replace(tmp, out / "last.pt")
        write_json(out / "metrics.json", metrics_doc("running" if epoch + 1 < cfg.epochs else "done"))
        plot_curves(history, out / "curves.png")
    doc = metrics_doc("done")
    if cfg.report and best:
        # the final numbers: the best weights scored once on each report set, never used to select
        from .report import report_checkpoint

        doc["report"] = report_checkpoint(out / "best.pth", cfg.report)
        side = read_sidecar(out / "best.pth")
        write_sidecar(out / "best.pth", {**{k_: v for k_, v in side.items() if k_ not in ("format", "schema")},
                                         "report": doc["report"]})
        for r in doc["report"]:
            say(f"report {r['data']}: " + "; ".join(f"{m} top-1 {100 * v['top1']:.2f}% macro-F1 {100 * v['macro_f1']:.2f}%"
                                                    for m, v in r["scores"].items()))
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
