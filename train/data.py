"""Training data: every dataset form edgefer reads, turned into one in-memory uint8 tensor.

Forms (detected from the path):

* FER2013 ``fer2013.csv``, class folders (``<root>/<class>/*.jpg``, Kaggle ``train/`` +
  ``test/`` roots too) and ``.npz`` (``images``, ``labels``, optional ``classes``,
  ``ferplus_votes``, ``csv_row``) -- read by :mod:`edgefer.calibration.datasets`, the one reader
  the bench and calibration use too;
* RAF-DB ``basic`` layout: ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``) and
  ``Image/aligned/train_00001_aligned.jpg``; labels 1..7 are surprise, fear, disgust,
  happiness, sadness, anger, neutral and are reported in FER2013 order, so a RAF-DB model and a
  FER2013 model agree on what label 3 means.

Soft labels (``soft="ferplus"``, or the path of ``fer2013new.csv``): the FERPlus annotators'
votes become per-image target distributions over FERPlus's 8 emotions. They come from an
``.npz``'s ``ferplus_votes``, or from ``fer2013new.csv`` (row-aligned with ``fer2013.csv``; found
beside the CSV or the npz, or given as a path; an npz's ``csv_row`` picks its rows). As in the
FERPlus paper, images whose votes are mostly "unknown" or "not a face" are dropped; the rest get
``votes / sum(votes)`` over the 8 emotions and their majority as the hard label (for accuracy).

Everything is resized (once, up front) to the architecture's input size and colour, so an
epoch is a loop over one uint8 tensor: no decoding, no workers, which is what a small CPU box
trains fastest with.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefer.classes import FER2013, FERPLUS, canonical
from edgefer.errors import EdgeferError

log = logging.getLogger(__name__)

RAF_CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")  # labels 1..7
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
RAF_LABELS = Path("EmoLabel") / "list_patition_label.txt"  # sic: the dataset's own spelling
RAF_ALIGNED = Path("Image") / "aligned"


@dataclass
class Dataset:
    """Labeled faces: ``images`` uint8 (N,H,W) / (N,H,W,C) or a list, ``labels`` int64 (N,)."""

    images: Any
    labels: np.ndarray
    classes: list[str]
    soft: np.ndarray | None = None  # (N, K) float32 target distributions, or None
    provenance: dict[str, Any] = field(default_factory=dict)
    #: each image's index in the data as read (file order); kept through subsets so a carved
    #: split can be recorded as indices of the file, whatever was dropped or limited afterwards
    rows: np.ndarray | None = None
    #: (N, 10) FERPlus votes not yet turned into targets (:func:`load_raw`), or None
    votes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.arange(len(self.labels), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> Dataset:
        idx = np.asarray(idx, np.int64)
        imgs = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        soft = None if self.soft is None else self.soft[idx]
        votes = None if self.votes is None else self.votes[idx]
        prov = dict(self.provenance, count=len(idx))
        return Dataset(imgs, self.labels[idx], list(self.classes), soft, prov, self.rows[idx], votes)

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.classes)).astype(int).tolist()


# ----------------------------------------------------------------------------- RAF-DB
def raf_root(path: Path) -> Path | None:
    """The RAF-DB ``basic`` folder at or directly below ``path``, or None."""
    for cand in (path, path / "basic"):
        if (cand / RAF_LABELS).is_file():
            return cand
    return None


def load_raf(root: Path, usage: str | None = None) -> Dataset:
    """RAF-DB basic: ``usage`` ``train``/``Training`` or ``test``/``*Test``; None reads both."""
    from edgefer.calibration.datasets import read_image

    split = None
    if usage:
        split = "train" if usage.lower() in ("train", "training") else "test"
    names, labels = [], []
    lab_file = root / RAF_LABELS
    try:
        text = lab_file.read_bytes().decode("utf-8")
    except OSError as e:
        raise EdgeferError(f"cannot read {lab_file}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise EdgeferError(f"{lab_file}, line {line}: not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()) or not 1 <= int(parts[1]) <= 7:
            raise EdgeferError(f"{lab_file}, line {n}: expected '<name>.jpg <1..7>', got {line.strip()!r}")
        if split and not parts[0].startswith(split + "_"):
            continue
        names.append(parts[0])
        labels.append(int(parts[1]))
    if not names:
        raise EdgeferError(f"{lab_file}: no {split or ''} images listed")
    to_fer = [FER2013.index(canonical(c)) for c in RAF_CLASSES]
    images = []
    for name in names:
        stem, ext = os.path.splitext(name)
        p = root / RAF_ALIGNED / f"{stem}_aligned{ext}"
        if not p.exists():
            raise EdgeferError(f"RAF-DB image {p} is missing (the basic layout keeps aligned faces in Image/aligned/)")
        images.append(read_image(p))
    from edgefer.calibration.datasets import stack_images

    lab = np.asarray([to_fer[v - 1] for v in labels], np.int64)
    return Dataset(stack_images(images), lab, list(FER2013), None,
                   {"kind": "rafdb-basic", "path": str(root), "usage": split or "all"})


# ----------------------------------------------------------------------------- FERPlus
def read_ferplus_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    """(votes int16 (rows, 10), usage per row) of a FERPlus ``fer2013new.csv``.

    Read by the shared strict CSV reader (bad quotes, short rows and non-UTF-8 text name their
    line); votes must be integers 0..32767 (FERPlus has 10 annotators, so anything else is a
    different file, and int16 would wrap larger numbers silently).
    """
    from edgefer.datasets import iter_csv

    if not path.is_file():
        raise EdgeferError(f"FERPlus votes {path} is not a regular file")
    votes, usages = [], []
    rows = iter_csv(path)
    first = next(rows, None)
    header = [h.strip() for h in first[1]] if first else []
    lower = [h.lower() for h in header]
    if "image name" not in lower or not all(c.lower() in lower for c in FERPLUS_COLUMNS):
        raise EdgeferError(f"{path}: not a FERPlus vote file (needs Usage, Image name, {', '.join(FERPLUS_COLUMNS)})")
    cols = [lower.index(c.lower()) for c in FERPLUS_COLUMNS]
    iu = lower.index("usage") if "usage" in lower else None
    for n, row in rows:
        try:
            v = [int(row[c]) for c in cols]
        except ValueError:
            raise EdgeferError(f"{path}, line {n}: votes are not integers") from None
        if min(v) < 0 or max(v) > np.iinfo(np.int16).max:
            raise EdgeferError(f"{path}, line {n}: votes must be 0..{np.iinfo(np.int16).max}, found {min(v)}..{max(v)}")
        votes.append(v)
        usages.append(row[iu].strip() if iu is not None else "")
    return np.asarray(votes, np.int16).reshape(-1, len(FERPLUS_COLUMNS)), usages


def votes_to_soft(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep mask, soft targets over FERPlus's 8 emotions, majority label) from (N,10) votes.

    Dropped: rows without votes (-1), without emotion votes, or whose most voted column is
    "unknown" or "NF" (not a face) -- the FERPlus paper's rule.
    """
    v = votes.astype(np.float32)
    emo = v[:, :8]
    valid = (v >= 0).all(axis=1)
    keep = valid & (emo.sum(axis=1) > 0) & (emo.max(axis=1) >= v[:, 8:].max(axis=1))
    soft = np.zeros_like(emo)
    soft[keep] = emo[keep] / emo[keep].sum(axis=1, keepdims=True)
    return keep, soft, soft.argmax(axis=1).astype(np.int64)


def _find_ferplus(data: Path, soft: str) -> Path | None:
    if soft.lower() != "ferplus":
        p = Path(soft).expanduser()
        if not p.is_file():
            raise EdgeferError(f"soft labels: {soft!r} is neither 'ferplus' nor a fer2013new.csv file")
        return p
    base = data if data.is_dir() else data.parent
    for cand in (base / "fer2013new.csv", base.parent / "ferplus" / "fer2013new.csv", base / "FERPlus" / "fer2013new.csv"):
        if cand.is_file():
            return cand
    return None


def _ferplus_votes(ds: Dataset, data: Path, soft: str, table) -> tuple[np.ndarray, str]:
    """(votes (N, 10) row-aligned with ``ds``, where they came from)."""
    votes = None
    source = None
    from edgefer.datasets import check_integers, npz_keys, read_npz

    npz_votes = table.kind == "npz" and "ferplus_votes" in npz_keys(data)
    if npz_votes and soft.lower() == "ferplus":
        # -1 marks rows without votes (those FERPlus dropped); anything else must be a count
        votes = check_integers(read_npz(data, ["ferplus_votes"])["ferplus_votes"], f"{data}: key 'ferplus_votes'",
                               "votes", -1, np.iinfo(np.int16).max, shape=(len(ds), len(FERPLUS_COLUMNS)))
        source = f"{data.name}:ferplus_votes"
    else:
        vfile = _find_ferplus(data, soft)
        if vfile is None:
            raise EdgeferError(
                f"--soft-labels ferplus: no votes for {data} (an .npz with 'ferplus_votes', or fer2013new.csv "
                "beside the data; or pass the path of fer2013new.csv)"
            )
        all_votes, usages = read_ferplus_csv(vfile)
        source = str(vfile)
        if table.kind == "npz":
            if "csv_row" not in npz_keys(data):
                raise EdgeferError(f"{data}: FERPlus votes from a CSV need the npz's 'csv_row' (its rows in fer2013.csv)")
            # -1: a row FERPlus dropped (no votes); rows past the vote file get none either
            rows = check_integers(read_npz(data, ["csv_row"])["csv_row"], f"{data}: key 'csv_row'", "rows",
                                  -1, np.iinfo(np.int64).max, shape=(len(ds),))
            votes = np.full((len(rows), len(FERPLUS_COLUMNS)), -1, np.int16)
            ok = (rows >= 0) & (rows < len(all_votes))
            votes[ok] = all_votes[rows[ok]]
        elif table.kind == "fer2013-csv":
            want = table.details.get("usage")
            sel = np.arange(len(all_votes)) if want in (None, "all") else np.asarray(
                [i for i, u in enumerate(usages) if u == want], np.int64)
            if len(sel) != len(ds):
                raise EdgeferError(
                    f"{vfile} has {len(sel)} {want or ''} rows but {data} has {len(ds)}: the files are not row-aligned"
                )
            votes = all_votes[sel]
        else:
            raise EdgeferError(f"FERPlus soft labels need fer2013.csv or an .npz, not {table.kind} ({data})")
    if len(votes) != len(ds):
        raise EdgeferError(f"{source}: {len(votes)} vote rows for {len(ds)} images")
    return np.asarray(votes), source


SOFT_CLASSES = ("ferplus", "fer2013")


def ferplus_to_fer2013(soft8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, targets over FER2013's 7 classes) of distributions over FERPlus's 8.

    Classes are matched by name (happiness -> happy, anger -> angry, ...); "contempt", which
    FER2013 lacks, is dropped and each row renormalised. Rows whose only emotion votes were
    contempt have nothing left and are dropped.
    """
    src = [canonical(c) for c in FERPLUS]
    cols = [src.index(canonical(c)) for c in FER2013]
    t = soft8[:, cols].astype(np.float32)
    tot = t.sum(axis=1)
    keep = tot > 0
    out = np.zeros_like(t)
    out[keep] = t[keep] / tot[keep, None]
    return keep, out


def apply_soft(ds: Dataset, into: str = "ferplus", mix: float = 1.0) -> Dataset:
    """Turn a :func:`load_raw` dataset's FERPlus votes into targets (the FERPlus drop rule).

    ``into="ferplus"``: targets over FERPlus's 8 emotions (an 8-class model); ``"fer2013"``:
    over FER2013's 7 (contempt dropped, renormalised; :func:`ferplus_to_fer2013`), so a 7-class
    model learns from the votes and stays comparable with FER2013-labelled runs. Hard labels
    (for accuracy) are the majority vote over the chosen classes.

    ``mix`` < 1 (``"fer2013"`` only): targets ``(1 - mix) * the data's own label + mix * the votes``,
    and the hard labels stay the data's own: the votes inform the targets without replacing
    FER2013's labels (a model scored on FER2013's labels loses the faces FERPlus moves to neutral
    when the votes replace them; ``train/runs/edgenet-carved-r1``).
    """
    if not 0.0 <= mix <= 1.0:
        raise EdgeferError(f"--soft-mix must be in 0..1, not {mix}")
    if mix < 1.0 and into != "fer2013":
        raise EdgeferError("--soft-mix below 1 needs --soft-classes fer2013 (the data's own classes)")
    if ds.votes is None:
        return ds
    if into not in SOFT_CLASSES:
        raise EdgeferError(f"soft-label classes must be one of {', '.join(SOFT_CLASSES)}, not {into!r}")
    keep, soft_t, _ = votes_to_soft(ds.votes)
    classes = list(FERPLUS)
    dropped_contempt = 0
    if into == "fer2013":
        keep7, soft7 = ferplus_to_fer2013(soft_t)
        dropped_contempt = int((keep & ~keep7).sum())
        keep, soft_t, classes = keep & keep7, soft7, list(FER2013)
    idx = np.flatnonzero(keep)
    out = ds.subset(idx)
    if mix < 1.0:
        own = align_classes(out, classes).labels  # the data's labels, in FER2013's order
        t = np.zeros((len(idx), len(classes)), np.float32)
        t[np.arange(len(idx)), own] = 1.0
        out.labels = own.astype(np.int64)
        out.soft = ((1.0 - mix) * t + mix * soft_t[idx]).astype(np.float32)
        out.provenance["soft_mix"] = float(mix)
    else:
        out.labels = soft_t[idx].argmax(axis=1).astype(np.int64)
        out.soft = soft_t[idx]
    out.votes = None
    out.classes = classes
    out.provenance.update(soft_labels="ferplus", soft_classes=into, dropped_no_face_or_unknown=int((~keep).sum()) - dropped_contempt)
    if into == "fer2013":
        out.provenance["dropped_contempt_only"] = dropped_contempt
    return out


# ----------------------------------------------------------------------------- entry points
def file_digest(path: Path, limit: int = 1 << 30) -> str | None:
    """sha256 of a data file (None for folders or files over ``limit`` bytes)."""
    if not path.is_file() or path.stat().st_size > limit:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def load_dataset(path: str | os.PathLike, usage: str | None = None, soft: str | None = None,
                 soft_classes: str = "ferplus") -> Dataset:
    """A labeled dataset from any supported form; ``soft`` adds FERPlus soft labels.

    ``usage``: FER2013 CSV rows (``Training``/``PublicTest``/``PrivateTest``), Kaggle or RAF-DB
    split (``Training`` -> train, ``*Test`` -> test); ignored for .npz and plain class folders.
    ``soft_classes``: the classes the votes become targets over (:func:`apply_soft`).
    """
    return apply_soft(load_raw(path, usage, soft), soft_classes)


def load_raw(path: str | os.PathLike, usage: str | None = None, soft: str | None = None) -> Dataset:
    """The dataset with its own labels; with ``soft``, its FERPlus votes attached but not applied.

    Why separate: the validation split is carved from the data as read (its own labels,
    stratified), before the FERPlus rule drops images, so runs with and without soft labels
    hold out the same faces.
    """
    from edgefer.calibration.datasets import USAGES, open_labeled

    p = Path(path).expanduser()
    if not p.exists():
        raise EdgeferError(f"data {str(path)!r} not found")
    if p.is_dir() and raf_root(p) is not None:
        if soft:
            raise EdgeferError("FERPlus soft labels apply to FER2013 data, not RAF-DB")
        return load_raf(raf_root(p), usage)
    table = open_labeled(p, usage=usage if usage in USAGES else None)
    images = table.all_images()
    ds = Dataset(images, table.labels.copy(), list(table.classes), None,
                 {"kind": table.kind, "path": str(p), "usage": table.details.get("usage"),
                  "sha256": file_digest(p)})
    if soft:
        ds.votes, source = _ferplus_votes(ds, p, soft, table)
        ds.provenance["votes"] = source
    return ds


def align_classes(ds: Dataset, classes: Sequence[str]) -> Dataset:
    """Re-index ``ds`` labels (and soft targets) to ``classes`` by canonical name."""
    if list(ds.classes) == list(classes):
        return ds
    want = [canonical(c) for c in classes]
    have = [canonical(c) for c in ds.classes]
    missing = [c for c in have if c not in want]
    if missing:
        raise EdgeferError(
            f"validation classes {', '.join(ds.classes)} do not match the training classes {', '.join(classes)}"
        )
    mapping = np.asarray([want.index(c) for c in have], np.int64)
    soft = None
    if ds.soft is not None:
        soft = np.zeros((len(ds), len(classes)), np.float32)
        soft[:, mapping] = ds.soft
    return Dataset(ds.images, mapping[ds.labels], list(classes), soft, dict(ds.provenance), ds.rows, ds.votes)


def carve_indices(labels: np.ndarray, num_classes: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a class-stratified validation carve: ``round(n_c * fraction)`` of each class.

    Deterministic in (labels, fraction, seed): numpy's PCG64 stream from ``seed`` shuffles each
    class's positions in class order, so the same data and seed give the same faces on every
    machine and numpy version that keeps ``default_rng``'s stream (numpy guarantees it).
    """
    if not 0 < fraction < 1:
        raise EdgeferError(f"--val-split must be in (0, 1), not {fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val.extend(idx[: int(round(len(idx) * fraction))])
    return np.sort(np.asarray(val, np.int64))


def indices_digest(idx: np.ndarray) -> str:
    """sha256 of sorted int64 indices (little-endian bytes): a split's fingerprint."""
    return "sha256:" + hashlib.sha256(np.sort(np.asarray(idx, "<i8")).tobytes()).hexdigest()


def image_keys(images) -> list[bytes]:
    """A digest per image (pixels and shape): equal keys are pixel-identical images."""
    return [hashlib.sha1(np.ascontiguousarray(im).tobytes() + repr(np.shape(im)).encode()).digest() for im in images]


def carve(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """(train part, validation part, record) of a class-stratified carve of ``ds``.

    Pixel-identical copies of a carved face are carved with it (``duplicates_moved`` counts
    them), so no validation face is also a training face. The record names the split
    (fraction, seed, sizes, per-class counts and the sha256 of the sorted file rows held out)
    so a sidecar says exactly which faces selected the model.
    """
    val_idx = carve_indices(ds.labels, len(ds.classes), fraction, seed)
    # FER2013 has 1,514 groups of pixel-identical images: a carved face whose copy stays in
    # training is scored on a face the model was fitted to (198 of the default carve's 2,872
    # on train.npz). Copies of carved faces therefore join the carve.
    keys = image_keys(ds.images)
    carved = {keys[i] for i in val_idx.tolist()}
    copies = [i for i in range(len(ds)) if keys[i] in carved]
    moved = len(copies) - len(val_idx)
    val_idx = np.asarray(copies, np.int64)
    tr_idx = np.setdiff1d(np.arange(len(ds)), val_idx)
    tr, va = ds.subset(tr_idx), ds.subset(val_idx)
    va.provenance["holdout"] = f"{fraction:.0%} stratified, seed {seed}"
    rows = ds.rows[val_idx]
    record = {
        "kind": "carved", "fraction": float(fraction), "seed": int(seed), "stratified": True,
        "size": len(val_idx), "train_size": len(tr_idx), "of": len(ds),
        "duplicates_moved": int(moved),
        "class_counts": va.class_counts(), "rows_sha256": indices_digest(rows),
        "data": ds.provenance.get("path"), "data_sha256": ds.provenance.get("sha256"),
    }
    return tr, va, record


def split_holdout(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A stratified (train, val) split (:func:`carve` without the record)."""
    tr, va, _ = carve(ds, fraction, seed)
    return tr, va


def to_tensor(ds: Dataset, size: Sequence[int], color: str):
    """uint8 torch tensor (N, C, H, W) at the model's input size and colour."""
    import torch

    from edgefer.align import resize_faces
    from edgefer.artifact import InputSpec

    spec = InputSpec(dtype="uint8", layout="NHWC", size=[int(size[0]), int(size[1])], color=color)
    chunks = []
    n = len(ds)
    for i in range(0, n, 4096):
        part = ds.images[i : i + 4096]
        chunks.append(resize_faces(part, spec))
    arr = np.concatenate(chunks) if chunks else np.zeros((0, *spec.size, spec.channels), np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
