"""Calibration samples: the face crops a model will see, drawn reproducibly from real data.

:func:`collect` turns any calibration source into a :class:`CalibrationSet` of uint8 NHWC
crops at the model's input size and colour, plus a provenance record for the manifest:

* labeled face datasets (FER2013 CSV, class folders, ``.npz``) are already face crops: a
  class-balanced sample is drawn (fixed seed) and only those images are decoded and resized;
* videos, photos and folders of them go through edgefer's own detector and aligner
  (:class:`edgefer.detect.FaceDetector`, :func:`edgefer.align.crop_faces` with the model's
  manifest input spec and crop), so a classifier is calibrated on the crops it will get in
  deployment, not on arbitrary images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgefer.align import crop_faces, resize_faces
from edgefer.artifact import InputSpec, sha256_file
from edgefer.errors import EdgeferError

from edgefer.datasets import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    class_folder_root,
    media_files,
    open_labeled,
    read_image,
)

log = logging.getLogger(__name__)

DEFAULT_COUNT = 300
DEFAULT_SEED = 0
#: faces smaller than this (box side, pixels) are too blurred to say anything about ranges
MIN_FACE = 16


@dataclass
class CalibrationSet:
    """Face crops ready for a model (uint8 NHWC at its input size) and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str] | None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, spec: InputSpec, batch_size: int = 1):
        """The crops laid out as ``spec`` wants (dtype, normalisation, layout), in batches."""
        from edgefer.align import layout

        for i in range(0, len(self.images), batch_size):
            yield layout(self.images[i : i + batch_size], spec)

    def model_input(self, spec: InputSpec) -> np.ndarray:
        from edgefer.align import layout

        return layout(self.images, spec)

    def split(self, n_first: int) -> tuple["CalibrationSet", "CalibrationSet"]:
        """Two disjoint sets (the first ``n_first`` crops and the rest), e.g. calibrate / check."""
        a = CalibrationSet(self.images[:n_first], None if self.labels is None else self.labels[:n_first], self.classes, dict(self.provenance))
        b = CalibrationSet(self.images[n_first:], None if self.labels is None else self.labels[n_first:], self.classes, dict(self.provenance))
        a.provenance["count"], b.provenance["count"] = len(a), len(b)
        return a, b


def raw_spec(spec: InputSpec) -> InputSpec:
    """The same size and colour as ``spec`` but uint8 NHWC: the form crops are kept in."""
    d = dict(spec.__dict__)
    d.update(dtype="uint8", layout="NHWC")
    return InputSpec(**d)


def balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices, as equal per class as the classes allow, reproducible for a seed.

    Each class gets ``n // C``; classes too small to fill their quota give the rest to the
    others (round-robin), so a rare class such as FER2013 "disgust" is fully represented
    instead of being drowned by "happy".
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    n = min(n, len(labels))
    take = {c: 0 for c in classes}
    left = n
    while left > 0:
        open_ = [c for c in classes if take[c] < len(pools[c])]
        share = max(left // len(open_), 1)
        for c in open_:
            k = min(share, len(pools[c]) - take[c], left)
            take[c] += k
            left -= k
            if left == 0:
                break
    idx = np.concatenate([pools[c][: take[c]] for c in classes]) if n else np.zeros(0, np.int64)
    return rng.permutation(idx)


def source_checksum(path: Path) -> str | None:
    """sha256 of the calibration source (file, or every file of a folder); None if unreadable."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def describe_source(path: Path) -> str:
    """What kind of calibration source ``path`` is: labeled dataset, video(s) or photos."""
    if path.is_dir():
        if class_folder_root(path) is not None:
            return "class-folders"
        return "media-folder"
    suf = path.suffix.lower()
    if suf == ".npz":
        return "npz"
    if suf == ".csv":
        return "fer2013-csv"
    if suf in VIDEO_SUFFIXES:
        return "video"
    if suf in IMAGE_SUFFIXES:
        return "image"
    return "unknown"


def collect(
    source: str | os.PathLike,
    spec: InputSpec,
    crop: dict | None = None,
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    usage: str | None = "Training",
    detect: bool | None = None,
    detector: Any = None,
    progress: bool = True,
    model_classes: list[str] | None = None,
    holdout: int = 0,
) -> CalibrationSet:
    """Draw ``count`` calibration crops from ``source`` for a model with input ``spec``.

    ``holdout``: extra crops, disjoint from the calibration ones and appended after them (each
    part class-balanced on its own), to check the quantized model on faces it was not
    calibrated on; :meth:`CalibrationSet.split` separates them.
    ``detect``: None decides by source (datasets of face crops: no; videos/photos: yes), True
    forces the detector on class folders of full photos. ``detector``: a callable
    ``frame -> detections`` (default: the bundled RetinaFace via :class:`edgefer.detect.FaceDetector`).
    """
    if count < 1:
        raise EdgeferError("the calibration size must be at least 1")
    if spec.size is None:
        raise EdgeferError("calibration needs a model with a fixed input size")
    path = Path(source).expanduser()
    if not path.exists():
        raise EdgeferError(f"calibration data {str(source)!r} not found")
    kind = describe_source(path)
    if kind == "unknown":
        raise EdgeferError(
            f"calibration data {path}: unsupported file type; give fer2013.csv, a .npz of faces, "
            "a folder of class folders, a video, an image or a folder of them"
        )
    rspec = raw_spec(spec)
    prov: dict[str, Any] = {
        "source": str(path),
        "source_name": path.name,
        "kind": kind,
        "seed": int(seed),
        "requested": int(count),
    }
    if kind in ("npz", "fer2013-csv", "class-folders") and not detect:
        cs = _from_labeled(path, rspec, count, seed, usage, prov, holdout)
    else:
        cs = _from_media(path, kind, rspec, crop, count + holdout, seed, detector, progress, prov)
    cs.provenance["count"] = len(cs)
    cs.provenance["checksum"] = source_checksum(path)
    if cs.labels is not None and cs.classes:
        counts = np.bincount(cs.labels[cs.labels >= 0], minlength=len(cs.classes))
        cs.provenance["per_class"] = {c: int(k) for c, k in zip(cs.classes, counts)}
        cs.provenance["balanced"] = True
    if model_classes and cs.classes and len(cs.classes) != len(model_classes):
        log.info("calibration classes (%d) differ from the model's (%d): used only to balance the sample",
                 len(cs.classes), len(model_classes))
    if len(cs) < min(count, 32):
        log.warning("only %d calibration samples (asked for %d): INT8 ranges may be poor", len(cs), count)
    return cs


def _from_labeled(path: Path, rspec: InputSpec, count: int, seed: int, usage: str | None, prov: dict,
                  holdout: int = 0) -> CalibrationSet:
    table = open_labeled(path, usage=usage, require_labels=False)
    labeled = (table.labels >= 0).all() and len(table.labels) > 0
    if len(table) == 0:
        raise EdgeferError(f"calibration data {path} holds no images")
    if labeled:
        idx = balanced_indices(table.labels, count, seed)
        if holdout:
            rest = np.setdiff1d(np.arange(len(table)), idx)
            idx = np.concatenate([idx, rest[balanced_indices(table.labels[rest], holdout, seed + 1)]])
    else:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(table))[: min(count + holdout, len(table))]
    images = table.fetch(idx)
    crops = resize_faces(images, rspec)
    for key in ("usage", "collected_by"):
        if key in table.details:
            prov[key] = table.details[key]
    prov["available"] = int(len(table))
    if not labeled:
        return CalibrationSet(crops, None, None, prov)
    return CalibrationSet(crops, table.labels[idx], list(table.classes), prov)


def _iter_media(path: Path, kind: str) -> list[Path]:
    if kind in ("video", "image"):
        return [path]
    if kind == "class-folders":  # --detect on class folders of full photos
        return sorted(p for d in path.iterdir() if d.is_dir() for p in media_files(d, IMAGE_SUFFIXES))
    files = media_files(path, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not files:
        raise EdgeferError(f"calibration folder {path} holds no images or videos")
    return files


def _video_frames(path: Path, n_frames: int):
    """Up to ``n_frames`` frames spread evenly over a video (seeking when the container allows)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise EdgeferError(f"cannot open video {path}")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if total <= 0:  # unknown length: read sequentially, keep every frame up to n_frames
            k = 0
            while k < n_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                k += 1
                yield frame
            return
        wanted = set(np.linspace(0, total - 1, num=min(n_frames, total)).round().astype(int).tolist())
        i = 0
        while wanted and i < total:
            ok, frame = cap.read()  # sequential read: reliable on every codec, cheap at these sizes
            if not ok:
                break
            if i in wanted:
                wanted.discard(i)
                yield frame
            i += 1
    finally:
        cap.release()


def default_detector():
    try:
        from edgefer.detect import FaceDetector
    except ImportError as e:  # pragma: no cover - the detector ships with the runtime
        raise EdgeferError(f"calibrating on videos/photos needs edgefer's face detector: {e}") from None
    return FaceDetector()


def _planned_frames(path: Path, n_frames: int) -> int:
    """How many frames :func:`_video_frames` will read from ``path`` (for the progress count)."""
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    finally:
        cap.release()
    return min(n_frames, total) if total > 0 else n_frames


def _from_media(path, kind, rspec, crop, count, seed, detector, progress, prov) -> CalibrationSet:
    from edgefer.progress import progress as progress_bar

    files = _iter_media(path, kind)
    det = detector or default_detector()
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    # frames per video: enough that the faces found can fill `count`, spread over the clip
    per_video = max(8, int(np.ceil(1.5 * count / max(len(videos), 1))))
    crops: list[np.ndarray] = []
    origins: list[str] = []
    frames_seen = 0
    # counted in frames, not files: one long video is one file, and "0/1 file" for minutes says nothing
    planned = sum(_planned_frames(f, per_video) if f in videos else 1 for f in files) if progress else None
    bar = progress_bar(total=planned, desc="calibration: detecting faces", unit="frame", disable=not progress, leave=False)
    for f in files:
        frames = _video_frames(f, per_video) if f in videos else [read_image(f)]
        for fi, frame in enumerate(frames):
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            frames_seen += 1
            bar.update(1)
            d = det(frame)
            boxes = np.asarray(d.boxes, np.float32).reshape(-1, 4)
            if len(boxes) == 0:
                continue
            side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep = side >= MIN_FACE
            if not keep.any():
                continue
            lm = None if d.landmarks is None else np.asarray(d.landmarks)[keep]
            out = crop_faces(frame, boxes[keep], lm, rspec, crop)
            crops.extend(out.copy())
            origins.extend([f"{f.name}#{fi}"] * len(out))
    bar.close()
    if not crops:
        raise EdgeferError(f"no faces found in {path} ({frames_seen} frames/images searched); give face data for calibration")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(crops))[: min(count, len(crops))]
    images = np.stack([crops[i] for i in idx])
    prov.update(
        detector=getattr(det, "name", None) or type(det).__name__,
        frames_searched=frames_seen,
        faces_found=len(crops),
        files=len(files),
        aligned=(crop or {}).get("align", "eyes"),
    )
    return CalibrationSet(images, None, None, prov)


def save_npz(cs: CalibrationSet, path: str | os.PathLike) -> Path:
    """Write crops (and labels/classes when known) as an .npz that ``--calib`` reads back."""
    import json

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise EdgeferError(f"output {path} must end in .npz")
    arrays: dict[str, Any] = {"images": cs.images}
    if cs.labels is not None:
        arrays["labels"] = cs.labels.astype(np.int64)
    if cs.classes:
        arrays["classes"] = np.asarray(cs.classes)
    arrays["provenance"] = np.asarray(json.dumps(cs.provenance))
    # written beside the target and renamed over it: a full disk or a kill leaves the old file
    # (or none), never a truncated .npz that a later --calib would have to refuse
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise EdgeferError(f"cannot write {path}: {e.strerror or e}") from None
    return path
