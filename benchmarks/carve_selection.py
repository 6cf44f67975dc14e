"""Choose among carve-selected checkpoints without a test split: top-1 on the carve against two annotations.

For each checkpoint (all from runs on the same carve), prints its top-1 on the carved validation
faces against FER2013's labels and against FERPlus's majority vote of the same faces (the votes
in train.npz; faces with a tie or a contempt/unknown/not-a-face majority are left out), and their
mean: the rule that picked ``edgenet2`` and the weights of ``edgenet3`` (train/README.md, "Runs").
Never reads PublicTest.

    python benchmarks/carve_selection.py train/runs/A/best.pth train/runs/B/best.pth ...

Each line also gives the carve's macro-F1 and disgust / fear recall against FER2013's labels (the
issue's rare-class target; a logit adjustment moves these, see ``edgefer train adjust``), and, for
every checkpoint after the first, its top-1 difference from the first on each annotation with the
standard error of that paired difference (from the faces on which the two disagree): a difference
within about one standard error is noise. Pass the current default first.

With two or more checkpoints a last line scores their ensemble the same way: the mean of each
model's probabilities (its flip included when its sidecar says ``tta: flip``), as ``--teacher``
averages them.

``--bias fear=0.25`` (repeatable) also scores each checkpoint with that number added to one class's
logit (face and mirror alike): what a per-class decision bias would buy and cost on the carve.
``--shift "noise 12"`` (repeatable; the shifts of ``benchmarks/robustness.py``) also scores each
checkpoint on the carve's faces under that shift, paired with the first checkpoint under the same
shift: the rule's robustness check (train/README.md, "Runs").
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_cards as mc
import robustness
from edgefer.classifier import softmax
from edgefer.train.adjust import carve_of, logits_of
from edgefer.train.data import to_tensor
from edgefer.train.engine import load_trained, metrics_from

from edgefer.errors import EdgeferError

torch.set_num_threads(2)
val = None
probs = []
firsts: dict[str, np.ndarray] = {}  # the first checkpoint's predictions per shift: the reference of the paired differences


def paired(pred: np.ndarray, ref: np.ndarray, truth: np.ndarray) -> str:
    """Top-1 difference (points) of ``pred`` over ``ref`` on the same faces, with its standard error."""
    d = (pred == truth).astype(np.float64) - (ref == truth)
    return f"{100 * d.mean():+.2f} ± {100 * d.std(ddof=1) / np.sqrt(len(d)):.2f}"


def line(name: str, pred: np.ndarray, shift: str = "plain") -> None:
    a = 100 * (pred == val.labels).mean()
    b = 100 * (pred[keep] == fp).mean()
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (val.labels, pred), 1)
    m = metrics_from(cm)
    rare = "  ".join(f"{c} {100 * m['recall'][classes.index(c)]:.1f}%" for c in ("disgust", "fear") if c in classes)
    vs = ""
    first = firsts.setdefault(shift, pred)
    if first is not pred:
        vs = f"\n    vs the first: FER2013 labels {paired(pred, first, val.labels)}  FERPlus majority {paired(pred[keep], first[keep], fp)}"
    print(f"{name}: carve FER2013 labels {a:.2f}%  carve FERPlus majority {b:.2f}% ({len(keep)} faces)  mean {(a + b) / 2:.2f}"
          f"\n    macro-F1 {100 * m['macro_f1']:.2f}%  {rare}{vs}")


def mean_probs(plain: np.ndarray, mirror: np.ndarray, flip: bool) -> np.ndarray:
    """The model's answer as its export computes it: the face and its mirror averaged with ``tta: flip``."""
    return (softmax(plain) + softmax(mirror)) / 2 if flip else softmax(plain)


def fail(msg: str) -> None:
    print(f"carve_selection: {msg}", file=sys.stderr)
    raise SystemExit(2)


ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("ckpts", nargs="+", help="carve-selected checkpoints; the current default first")
ap.add_argument("--bias", action="append", default=[], metavar="CLASS=B",
                help="also score each checkpoint with B added to CLASS's logit (repeatable)")
ap.add_argument("--shift", action="append", default=[], choices=[k for k in robustness.SHIFTS if k != "plain"],
                help="also score each checkpoint on the carve under this shift of benchmarks/robustness.py (repeatable)")
args = ap.parse_args()
biases = []
for b in args.bias:
    cls, _, val_ = b.partition("=")
    try:
        biases.append((cls, float(val_)))
    except ValueError:
        fail(f"--bias {b}: expected CLASS=NUMBER, e.g. fear=0.25")
for c in args.ckpts:
    try:
        model, side = load_trained(c)
        if val is None:
            _, val = carve_of(side)  # the run's own data and carve, checked against its recorded rows
            carve = side["selected_on"]["rows_sha256"]
            with np.load(side["training"]["data"], allow_pickle=False) as d:
                votes, cols = d["ferplus_votes"], [str(c_) for c_ in d["ferplus_columns"]]
            keep, names = mc.majority_rows(votes[val.rows], cols)
            classes = list(side["classes"])
            fp = np.array([classes.index(n) for n in names])
            x = to_tensor(val, side["input"]["size"], side["input"]["color"])
            nhwc = x.numpy().transpose(0, 2, 3, 1)
            shifted = {}
            for sh in args.shift:
                faces = robustness.SHIFTS[sh](nhwc[..., 0] if nhwc.shape[3] == 1 else nhwc)
                shifted[sh] = torch.from_numpy(np.ascontiguousarray(faces.reshape(nhwc.shape).transpose(0, 3, 1, 2)))
    except EdgeferError as e:
        fail(f"{c}: {e}")
    if (side.get("selected_on") or {}).get("rows_sha256") != carve:  # else scored on faces it may have trained on
        fail(f"{c} was not selected on the same carve as {args.ckpts[0]}")
    mean = torch.tensor(side["input"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(side["input"]["std"]).view(1, -1, 1, 1)
    model = model.to(memory_format=torch.channels_last)
    flip = side.get("tta") == "flip"
    p, m = logits_of(model, x, mean, std)
    prob = mean_probs(p, m, flip)
    probs.append(prob)
    line(c, prob.argmax(1))
    for sh, xs in shifted.items():
        ps, ms = logits_of(model, xs, mean, std)
        line(f"{c} under {sh}", mean_probs(ps, ms, flip).argmax(1), sh)
    for cls, b in biases:
        if cls not in classes:
            fail(f"--bias {cls}={b}: no class {cls!r} (the model's: {', '.join(classes)})")
        shift = np.zeros(len(classes))
        shift[classes.index(cls)] = b
        line(f"{c} with {cls} {b:+g}", mean_probs(p + shift, m + shift, flip).argmax(1))
if len(probs) > 1:
    line(f"ensemble of {len(probs)}", np.mean(probs, 0).argmax(1))
