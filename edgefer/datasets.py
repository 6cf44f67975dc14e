"""Readers for labeled face datasets: FER2013 ``fer2013.csv``, class folders and ``.npz``.

Every dataset arrives from elsewhere, so this is the one place that reads and *validates* them;
the bench (runtime side, ``edgefer bench --data``), calibration (``edgefer calibrate``, ``edgefer
export --calib``) and training (``edgefer train --data``) all come through here. It lives in the
runtime package because the runtime never imports a build-side stage, while the build side may
import the runtime (``edgefer.calibration.datasets`` re-exports it). No torch.

A file that does not hold what it should is refused with one :class:`EdgeferError` line naming
the file and the CSV line or ``.npz`` key, never a traceback and never a silent guess:

* CSV: read with a strict parser (a bad quote is an error, not a field that swallows the rest
  of the file); every row must have the header's number of fields; the emotion must be an
  integer 0..6; the pixels must be whitespace-separated integers 0..255 forming a square image
  of at least ``MIN_SIDE`` pixels. The rows a caller reads are fully decoded and checked up
  front (about 1.5 s for FER2013's 28,709 training rows), so an error names its line whatever
  sample is later drawn.
* ``.npz``: members are read with ``allow_pickle=False`` after their ``.npy`` header has been
  checked: object arrays (which only pickle can load, i.e. code execution) are refused, the
  size the header declares must equal what the member holds (a truncated or forged member is
  refused before anything is allocated), members over ``max_array_bytes()`` are refused, and a
  bad CRC is reported as such. ``images`` must be square uint8 (or integer 0..255) crops,
  ``labels`` integer indices inside the class list (``classes``, or FER2013's seven), so a
  label -1 can never be scored as the last class by Python's negative indexing.
* class folders: unreadable images name their file.

Labels are indices into the dataset's own class list; datasets whose class names are all
FER2013 emotions are reported in FER2013 order, so a FER2013-trained model and a Kaggle folder
copy of FER2013 agree on what label 3 means.

Forms read:

* ``fer2013.csv`` — columns ``emotion,pixels,Usage`` (any order, names stripped); 48x48 gray.
  ``usage`` picks ``Training`` / ``PublicTest`` / ``PrivateTest`` rows.
* class folders — ``<root>/<class>/*.jpg|png|...``; a Kaggle root holding ``train/`` and
  ``test/`` class folders is also accepted (``usage`` Training -> train, *Test -> test).
* ``.npz`` — ``images`` (N,H,W) or (N,H,W,1|3) uint8, ``labels`` (N,) ints, optional
  ``classes`` (absent: FER2013 order). ``edgefer calibrate`` writes this form.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from .classes import FER2013, canonical
from .errors import EdgeferError
from .npzfile import DEFAULT_MAX_ARRAY_BYTES, _first_line, max_array_bytes, npz_keys, read_npz  # noqa: F401  (re-exported)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
USAGES = ("Training", "PublicTest", "PrivateTest")

#: smallest face crop side accepted from an array or CSV (smaller is a layout mistake, not a face)
MIN_SIDE = 8
#: the largest CSV field (a pixel string) accepted: a 1024x1024 gray image as text fits
CSV_FIELD_LIMIT = 16 << 20


@dataclass
class LabeledTable:
    """A labeled dataset whose images are fetched on demand.

    ``labels`` is known up front and already validated (every label indexes ``classes``, or is
    -1 for an unlabeled set read with ``require_labels=False``); ``fetch(indices)`` returns the
    chosen images. Class folders decode only what is fetched, which lets calibration draw 300
    class-balanced faces from a large tree without decoding all of it.
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
    try:
        data = np.fromfile(str(path), np.uint8)  # works for non-ASCII paths, unlike cv2.imread
        im = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, cv2.error, MemoryError) as e:  # OpenCV refuses oversized headers with cv2.error
        raise EdgeferError(f"cannot read image {path}: {_first_line(e)}") from None
    if im is None:
        raise EdgeferError(f"cannot read image {path}: not an image OpenCV can decode")
    if im.dtype != np.uint8:
        if not np.issubdtype(im.dtype, np.number) or im.size == 0 or not np.isfinite(im).all():
            raise EdgeferError(f"cannot read image {path}: pixels of type {im.dtype} that are not finite numbers")
        im = cv2.convertScaleAbs(im, alpha=255.0 / max(float(im.max()), 1.0))
    if im.ndim == 3 and im.shape[2] == 4:
        im = cv2.cvtColor(im, cv2.COLOR_BGRA2BGR)
    if im.ndim == 3 and im.shape[2] == 1:
        im = im[:, :, 0]
    if not (im.ndim == 2 or (im.ndim == 3 and im.shape[2] == 3)) or min(im.shape[:2]) < 1:
        raise EdgeferError(f"cannot read image {path}: {im.shape} is neither gray nor 3-channel colour")
    if im.ndim == 3 and _is_gray(im):
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


# ----------------------------------------------------------------------------- validation
def check_images(images: np.ndarray, where: str) -> np.ndarray:
    """``images`` as uint8 (N,S,S) or (N,S,S,3) face crops, or one line saying why not.

    Integer arrays holding 0..255 are accepted (and cast); floats are refused rather than
    guessed at (0..1 or 0..255?), as are non-square crops (a (N,47,48) array is a layout
    mistake: the aligner and FER2013 make square faces) and empty sets.
    """
    kind = images.dtype.kind
    if kind == "f" or kind == "c":
        raise EdgeferError(
            f"{where}: images are {images.dtype}; store uint8 pixels 0..255 "
            "(e.g. (x * 255).round().astype(np.uint8) for floats in 0..1)"
        )
    if kind not in "iu":
        raise EdgeferError(f"{where}: images must be uint8 pixels, not {images.dtype}")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise EdgeferError(f"{where}: images must be (N,H,W) gray or (N,H,W,3) colour, found shape {images.shape}")
    if len(images) == 0:
        raise EdgeferError(f"{where}: holds no images (shape {images.shape})")
    h, w = images.shape[1:3]
    if h != w:
        raise EdgeferError(f"{where}: face crops must be square, found {h}x{w} (shape {images.shape})")
    if h < MIN_SIDE:
        raise EdgeferError(f"{where}: images of {h}x{w} pixels are too small for faces (at least {MIN_SIDE}x{MIN_SIDE})")
    if images.dtype != np.uint8:
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            bad = int(np.flatnonzero(((images < 0) | (images > 255)).reshape(len(images), -1).any(axis=1))[0])
            raise EdgeferError(f"{where}: pixel values must be 0..255, found {lo}..{hi} (first in image {bad})")
        images = images.astype(np.uint8)
    return images


def check_integers(values: np.ndarray, where: str, what: str, lo: int, hi: int,
                   shape: tuple[int | None, ...] | None = None, hint: str = "") -> np.ndarray:
    """``values`` as int64 within ``lo..hi`` (inclusive), of ``shape`` (None: any size), or one line.

    Strings, floats and booleans are refused, not converted: a float label 2.7 or a string
    label 'happy' says the file is not what it claims to be.
    """
    kind = values.dtype.kind
    if kind in "US":
        sample = ", ".join(repr(str(v)) for v in values.reshape(-1)[:3])
        raise EdgeferError(f"{where}: {what} are strings ({sample}{', ...' if values.size > 3 else ''}), "
                           f"not integers{hint}")
    if kind not in "iu":
        raise EdgeferError(f"{where}: {what} must be integers, not {values.dtype}{hint}")
    if shape is not None:
        if len(shape) == 1 and values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]  # a column vector (N,1) is the same labels
        if values.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, values.shape)):
            want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise EdgeferError(f"{where}: {what} must have shape {want}, found {values.shape}")
    values = values.astype(np.int64)
    out = (values < lo) | (values > hi)
    if out.any():
        first = np.argwhere(out)[0]
        pos = int(first[0]) if len(first) == 1 else tuple(int(i) for i in first)
        raise EdgeferError(f"{where}: {what} must be {lo}..{hi}{hint}, found {int(values[tuple(first)])} at index {pos} "
                           f"({int(out.sum())} of {values.size} out of range)")
    return values


def check_labels(labels: np.ndarray, n: int, classes: Sequence[str], where: str) -> np.ndarray:
    """Labels as int64 (n,), each an index into ``classes``; -1 and ``len(classes)`` are refused."""
    if labels.ndim >= 1 and labels.shape[0] != n:
        raise EdgeferError(f"{where}: {n} images but {labels.shape[0]} labels")
    return check_integers(labels, where, "labels", 0, len(classes) - 1, shape=(n,),
                          hint=f" (indices into the {len(classes)} classes {', '.join(classes)})")


def check_classes(classes: np.ndarray, where: str) -> list[str]:
    """Class names: a 1-D array of distinct, non-empty strings."""
    if classes.dtype.kind not in "US" or classes.ndim != 1:
        raise EdgeferError(f"{where}: classes must be a 1-D array of names, found {classes.dtype} {classes.shape}")
    try:
        names = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    except UnicodeDecodeError:
        raise EdgeferError(f"{where}: class names are not UTF-8 text") from None
    if not names:
        raise EdgeferError(f"{where}: names no classes")
    if any(not n.strip() for n in names):
        raise EdgeferError(f"{where}: an empty class name")
    canon = [canonical(n) for n in names]
    dup = next((n for i, n in enumerate(names) if canon[i] in canon[:i]), None)
    if dup is not None:
        raise EdgeferError(f"{where}: the class {dup!r} is named twice ({', '.join(names)})")
    return names


# ----------------------------------------------------------------------------- CSV
def iter_csv(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of each non-blank row of a CSV, the header first.

    Strict quoting (a stray quote is an error at its line, not a field that swallows the file),
    UTF-8 (a BOM is skipped), and every row must have as many fields as the header: a short or
    long row names its line. Lines are the physical line where the row starts.
    """
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise EdgeferError(f"cannot read {path}: {e.strerror or _first_line(e)}") from None
    with f:
        reader = csv.reader(f, strict=True)
        width = None
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                why = _first_line(e)
                if "unexpected end of data" in why:
                    why += ": a quote opened here is never closed"
                raise EdgeferError(f"{path}, line {start}: malformed CSV ({why})") from None
            except UnicodeDecodeError:
                raise EdgeferError(f"{path}, near line {reader.line_num + 1}: not UTF-8 text") from None
            except OSError as e:
                raise EdgeferError(f"cannot read {path}: {e.strerror or _first_line(e)}") from None
            line, start = start, reader.line_num + 1
            if not row:
                continue
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise EdgeferError(f"{path}, line {line}: {len(row)} field{'s' * (len(row) != 1)} where the header has {width}")
            yield line, row


def parse_pixels(text: str, where: str) -> np.ndarray:
    """A FER2013 ``pixels`` field -> uint8 (S,S): whitespace-separated integers 0..255, square."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raw = None
    if raw is None or raw.translate(None, b"0123456789 \t\r\n"):
        bad = next((t for t in text.split() if not (t.isascii() and t.isdigit())), text)
        raise EdgeferError(f"{where}: pixel value {bad[:20]!r} is not an integer 0..255")
    v = np.fromstring(raw, dtype=np.int64, sep=" ") if raw.strip() else np.zeros(0, np.int64)
    if v.size == 0:
        raise EdgeferError(f"{where}: no pixel values")
    if v.max() > 255:
        raise EdgeferError(f"{where}: pixel value {int(v.max())} is outside 0..255")
    side = int(round(np.sqrt(v.size)))
    if side * side != v.size:
        raise EdgeferError(f"{where}: {v.size} pixel values do not make a square image (48x48 = 2304)")
    if side < MIN_SIDE:
        raise EdgeferError(f"{where}: a {side}x{side} image is too small for a face (at least {MIN_SIDE}x{MIN_SIDE})")
    return v.astype(np.uint8).reshape(side, side)


# ----------------------------------------------------------------------------- readers
def _open_csv(path: Path, usage: str | None) -> LabeledTable:
    rows = iter_csv(path)
    first = next(rows, None)
    header = [h.strip().lower() for h in first[1]] if first else []
    if "pixels" not in header or "emotion" not in header:
        if "image name" in header:
            raise EdgeferError(f"{path} is a FERPlus label file (votes, no pixels); pass fer2013.csv (the pixels) instead")
        raise EdgeferError(f"{path}: not a FER2013 CSV (needs columns emotion,pixels[,Usage]; found {', '.join(header) or 'none'})")
    ie, ip = header.index("emotion"), header.index("pixels")
    iu = header.index("usage") if "usage" in header else None
    labels: list[int] = []
    images: list[np.ndarray] = []
    usages: dict[str, int] = {}
    top = len(FER2013) - 1
    for line, row in rows:
        u = row[iu].strip() if iu is not None else "Training"
        usages[u] = usages.get(u, 0) + 1
        if usage and iu is not None and u != usage:
            continue
        where = f"{path}, line {line}"
        try:
            y = int(row[ie])
        except ValueError:
            raise EdgeferError(f"{where}: emotion {row[ie][:20]!r} is not an integer") from None
        if not 0 <= y <= top:
            raise EdgeferError(f"{where}: emotion {y} is outside 0..{top} (FER2013 order: {', '.join(FER2013)})")
        labels.append(y)
        images.append(parse_pixels(row[ip], where))
    if not labels:
        have = ", ".join(f"{k} ({v})" for k, v in usages.items()) or "no rows"
        raise EdgeferError(f"{path}: no rows with Usage {usage!r} (the file has: {have})")

    def fetch(idx: np.ndarray) -> np.ndarray | list[np.ndarray]:
        out = [images[i] for i in np.asarray(idx, np.int64)]
        return stack_images(out) if out else np.zeros((0, 48, 48), np.uint8)

    return LabeledTable(np.asarray(labels, np.int64), list(FER2013), fetch, "fer2013-csv", path, {"usage": usage or "all"})


def _open_npz(path: Path, require_labels: bool = True) -> LabeledTable:
    arrays = read_npz(path, ["images"], ["labels", "classes", "provenance"])
    images = check_images(arrays["images"], f"{path}: key 'images'")
    classes = check_classes(arrays["classes"], f"{path}: key 'classes'") if "classes" in arrays else list(FER2013)
    if "labels" in arrays:
        labels = check_labels(arrays["labels"], len(images), classes, f"{path}: key 'labels'")
    elif require_labels:
        raise EdgeferError(f"{path}: the .npz has no 'labels' array")
    else:
        labels = np.full(len(images), -1, np.int64)

    def fetch(idx: np.ndarray) -> np.ndarray:
        return images[np.asarray(idx, np.int64)]

    details = {}
    prov = arrays.get("provenance")
    if prov is not None and prov.dtype.kind in "US" and prov.size == 1:  # written by `edgefer calibrate`
        try:
            details["collected_by"] = json.loads(str(prov.reshape(-1)[0]))
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
    """Open and validate a labeled dataset (labels checked; class-folder images decoded on ``fetch``)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise EdgeferError(f"data {str(path)!r} not found")
    if usage is not None and usage not in USAGES:
        raise EdgeferError(f"usage must be one of {', '.join(USAGES)}, not {usage!r}")
    if p.is_dir():
        return _open_folders(p, usage)
    if not p.is_file():  # a FIFO or device would block or never end
        raise EdgeferError(f"data {p} is not a regular file")
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
