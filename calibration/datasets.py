"""Readers for labeled face datasets: FER2013 ``fer2013.csv``, class folders and ``.npz``.

One reader serves INT8 calibration (which wants a small class-balanced sample, so images are
decoded lazily: only the rows that are drawn) and the bench's ``--data`` (which wants every
image, :func:`load_labeled`). Labels are indices into the dataset's own class list; datasets
whose class names are all FER2013 emotions are reported in FER2013 order, so a FER2013-trained
model and a Kaggle folder copy of FER2013 agree on what label 3 means.

Forms read:

* ``fer2013.csv`` — columns ``emotion,pixels,Usage`` (any order, names stripped); 48x48 gray.
  ``usage`` picks ``Training`` / ``PublicTest`` / ``PrivateTest`` rows.
* class folders — ``<root>/<class>/*.jpg|png|...``; a Kaggle root holding ``train/`` and
  ``test/`` class folders is also accepted (``usage`` Training -> train, *Test -> test).
* ``.npz`` — ``images`` (N,H,W) or (N,H,W,C) uint8, ``labels`` (N,) ints, optional ``classes``
  (absent: FER2013 order). ``edgefer calibrate`` writes this form.
"""

from __future__ import annotations

import csv
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from edgefer.classes import FER2013, canonical
from edgefer.errors import EdgeferError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
USAGES = ("Training", "PublicTest", "PrivateTest")


@dataclass
class LabeledTable:
    """A labeled dataset whose images are decoded on demand.

    ``labels`` is known up front (cheap); ``fetch(indices)`` decodes the chosen images. This is
    what lets calibration draw 300 class-balanced faces from a 300 MB CSV without decoding
    28,709 pixel strings.
    """

    labels: np.ndarray
    classes: list[str]
    fetch: Callable[[np.ndarray], list[np.ndarray] | np.ndarray]
    kind: str
    path: Path
    details: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def all_images(self) -> np.ndarray | list[np.ndarray]:
        return self.fetch(np.arange(len(self.labels)))


# ----------------------------------------------------------------------------- helpers
def ordered_classes(names: Sequence[str]) -> list[str]:
    """Folder/class names in a stable order: FER2013 order when all are FER2013 emotions."""
    canon = [canonical(n) for n in names]
    if len(set(canon)) == len(canon) and set(canon) <= set(FER2013):
        return [c for c in FER2013 if c in canon]
    return sorted(names)


def stack_images(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One array when all images share a shape, else the list (resize_faces takes either)."""
    if images and all(im.shape == images[0].shape for im in images):
        return np.stack(images)
    return images


def read_image(path: Path) -> np.ndarray:
    """A gray (H,W) or BGR (H,W,3) uint8 image; alpha dropped, 16-bit scaled down."""
    data = np.fromfile(str(path), np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    im = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if im is None:
        raise EdgeferError(f"cannot read image {path}: not an image OpenCV can decode")
    if im.dtype != np.uint8:
        im = cv2.convertScaleAbs(im, alpha=255.0 / max(float(im.max()), 1.0))
    if im.ndim == 3 and im.shape[2] == 4:
        im = cv2.cvtColor(im, cv2.COLOR_BGRA2BGR)
    if im.ndim == 3 and im.shape[2] == 1:
        im = im[:, :, 0]
    if im.ndim == 3 and im.shape[2] == 3 and _is_gray(im):
        im = im[:, :, 0].copy()  # FER2013 JPEG copies are gray stored as 3 equal channels
    return im


def _is_gray(im: np.ndarray) -> bool:
    return bool(np.array_equal(im[:, :, 0], im[:, :, 1]) and np.array_equal(im[:, :, 1], im[:, :, 2]))


def media_files(root: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def class_folder_root(root: Path, usage: str | None = None) -> Path | None:
    """The folder whose subfolders are classes, or None when ``root`` is not in that layout."""
    if not root.is_dir():
        return None
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    # Kaggle layout: <root>/train/<class>, <root>/test/<class>
    if "train" in subdirs and ("test" in subdirs or "val" in subdirs):
        want = "train" if (usage or "Training") == "Training" else ("test" if "test" in subdirs else "val")
        inner = class_folder_root(subdirs[want])
        if inner is not None:
            return inner
    if media_files(root, IMAGE_SUFFIXES + VIDEO_SUFFIXES):
        return None
    with_images = [p for p in subdirs.values() if media_files(p, IMAGE_SUFFIXES)]
    return root if len(with_images) >= 2 else None


# ----------------------------------------------------------------------------- readers
def _open_csv(path: Path, usage: str | None) -> LabeledTable:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    labels: list[int] = []
    pixels: list[str] = []
    usages: dict[str, int] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "pixels" not in header or "emotion" not in header:
                if "image name" in header:
                    raise EdgeferError(
                        f"{path} is a FERPlus label file (votes, no pixels); pass fer2013.csv (the pixels) instead"
                    )
                raise EdgeferError(f"{path}: not a FER2013 CSV (needs columns emotion,pixels[,Usage]; found {', '.join(header) or 'none'})")
            ie, ip = header.index("emotion"), header.index("pixels")
            iu = header.index("usage") if "usage" in header else None
            for n, row in enumerate(reader, start=2):
                if not row:
                    continue
                u = row[iu].strip() if iu is not None else "Training"
                usages[u] = usages.get(u, 0) + 1
                if usage and iu is not None and u != usage:
                    continue
                try:
                    labels.append(int(row[ie]))
                except (ValueError, IndexError):
                    raise EdgeferError(f"{path}, line {n}: emotion is not an integer") from None
                pixels.append(row[ip])
    except UnicodeDecodeError:
        raise EdgeferError(f"{path}: not a text CSV file") from None
    except csv.Error as e:
        raise EdgeferError(f"{path}: malformed CSV ({e})") from None
    if not labels:
        have = ", ".join(f"{k} ({v})" for k, v in usages.items()) or "no rows"
        raise EdgeferError(f"{path}: no rows with Usage {usage!r} (the file has: {have})")
    lab = np.asarray(labels, np.int64)
    if lab.min() < 0 or lab.max() >= len(FER2013):
        raise EdgeferError(f"{path}: emotion labels must be 0..6 (FER2013 order), found {lab.min()}..{lab.max()}")

    def fetch(idx: np.ndarray) -> np.ndarray:
        out = []
        for i in np.asarray(idx, np.int64):
            v = np.array(pixels[i].split(), dtype=np.int64)
            side = int(round(np.sqrt(v.size)))
            if side * side != v.size or v.size == 0 or v.min() < 0 or v.max() > 255:
                raise EdgeferError(f"{path}: row {i} does not hold a square image of 0..255 pixels")
            out.append(v.astype(np.uint8).reshape(side, side))
        return stack_images(out) if out else np.zeros((0, 48, 48), np.uint8)

    return LabeledTable(lab, list(FER2013), fetch, "fer2013-csv", path, {"usage": usage or "all"})


def _open_npz(path: Path, require_labels: bool = True) -> LabeledTable:
    try:
        d = np.load(path, allow_pickle=False)
        keys = set(d.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise EdgeferError(f"cannot read {path} as .npz: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if "images" not in keys:
        raise EdgeferError(f"{path}: the .npz has no 'images' array (keys: {', '.join(sorted(keys)) or 'none'})")
    images = d["images"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise EdgeferError(f"{path}: 'images' must be uint8 (N,H,W) or (N,H,W,1|3), found {images.dtype} {images.shape}")
    if "labels" in keys:
        labels = np.asarray(d["labels"]).astype(np.int64).reshape(-1)
        if len(labels) != len(images):
            raise EdgeferError(f"{path}: {len(images)} images but {len(labels)} labels")
    elif require_labels:
        raise EdgeferError(f"{path}: the .npz has no 'labels' array")
    else:
        labels = np.full(len(images), -1, np.int64)
    classes = [str(c) for c in d["classes"]] if "classes" in keys else list(FER2013)
    if len(labels) and (labels >= 0).any() and labels.max() >= len(classes):
        raise EdgeferError(f"{path}: label {labels.max()} but only {len(classes)} classes")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]

    def fetch(idx: np.ndarray) -> np.ndarray:
        return images[np.asarray(idx, np.int64)]

    details = {}
    if "provenance" in keys:  # written by `edgefer calibrate`: keep where the crops came from
        import json

        try:
            details["collected_by"] = json.loads(str(d["provenance"]))
        except ValueError:
            pass
    return LabeledTable(labels, classes, fetch, "npz", path, details)


def _open_folders(root: Path, usage: str | None) -> LabeledTable:
    croot = class_folder_root(root, usage)
    if croot is None:
        raise EdgeferError(f"{root}: not a class-folder dataset (expected <root>/<class>/*.jpg|png)")
    dirs = {p.name: p for p in croot.iterdir() if p.is_dir() and not p.name.startswith(".")}
    names = ordered_classes(list(dirs))
    fer_order = names and canonical(names[0]) in FER2013 and all(canonical(n) in FER2013 for n in names)
    files: list[Path] = []
    labels: list[int] = []
    for ci, name in enumerate(names):
        for p in media_files(dirs[name], IMAGE_SUFFIXES):
            files.append(p)
            labels.append(ci)
    if not files:
        raise EdgeferError(f"{croot}: the class folders hold no images")
    classes = [canonical(n) for n in names] if fer_order else names

    def fetch(idx: np.ndarray) -> np.ndarray | list[np.ndarray]:
        return stack_images([read_image(files[i]) for i in np.asarray(idx, np.int64)])

    return LabeledTable(np.asarray(labels, np.int64), classes, fetch, "class-folders", croot, {"files": files})


def open_labeled(path: str | os.PathLike, usage: str | None = None, require_labels: bool = True) -> LabeledTable:
    """Open a labeled dataset lazily (labels read, images decoded on ``fetch``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise EdgeferError(f"data {str(path)!r} not found")
    if usage is not None and usage not in USAGES:
        raise EdgeferError(f"usage must be one of {', '.join(USAGES)}, not {usage!r}")
    if p.is_dir():
        return _open_folders(p, usage)
    suf = p.suffix.lower()
    if suf == ".npz":
        return _open_npz(p, require_labels=require_labels)
    if suf == ".csv":
        return _open_csv(p, usage)
    raise EdgeferError(f"{p}: unsupported labeled data (give fer2013.csv, a .npz, or a folder of class folders)")


def load_labeled(path: str | os.PathLike, usage: str | None = None) -> tuple[np.ndarray | list[np.ndarray], np.ndarray, list[str]]:
    """``(images, labels, classes)`` of a FER2013 CSV, class-folder tree or ``.npz``.

    ``images``: uint8 (N,H,W) / (N,H,W,C), or a list when sizes differ; ``labels``: int64 (N,)
    indices into ``classes``. ``usage`` selects FER2013 CSV rows (or train/test of a Kaggle
    folder root); None reads every row of a CSV.
    """
    t = open_labeled(path, usage=usage)
    return t.all_images(), t.labels, t.classes
