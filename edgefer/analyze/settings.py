"""What an analyze job is set to do: its :class:`Settings`, the constants of its output layout,
the checks for its optional dependencies, and the model digests that key its resume markers.

Everything here is a leaf the other modules of :mod:`edgefer.analyze` build on.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..artifact import DEFAULT_CLASSIFIER
from ..errors import EdgeferError
from ..extras import install_hint

#: bumped when a table's columns change meaning: part of every done-marker key
SCHEMA_VERSION = 1
TABLES = ("faces", "tracks", "videos")
DONE_DIR = "_done"
LIST_SUFFIXES = {".txt", ".lst", ".list"}
DEFAULT_SPLIT_FRAMES = 9000
DEFAULT_SPLIT_WARMUP = 30
#: a task whose worker process died this many times becomes an error row
MAX_ATTEMPTS = 2
#: a worker reports frame progress every this many frames
PROGRESS_EVERY = 16
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def require_pyarrow() -> None:
    """Fail with one line naming the extra when pyarrow is absent (before any work)."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ModuleNotFoundError:
        raise EdgeferError(f"`edgefer analyze` writes Parquet with pyarrow, not installed here: {install_hint('analyze')}") from None


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise EdgeferError(f"`edgefer analyze --ray` needs ray, not installed here: {install_hint('ray')}") from None


@dataclass(frozen=True)
class Settings:
    """What a worker needs to build its pipeline and cut its ranges (picklable, hashable)."""

    detector: str = "retinaface-mnet025"
    classifier: str = DEFAULT_CLASSIFIER
    backend: str = "auto"
    providers: str | None = None
    device: str | None = None
    det_size: int | None = 640
    conf_thresh: float | None = None
    smoothing: float = 0.5
    detect_every: int | None = None
    overlap: bool = True
    adaptive: bool = True
    max_frames: int | None = None
    split_frames: int = DEFAULT_SPLIT_FRAMES  # 0: never split
    split_warmup: int = DEFAULT_SPLIT_WARMUP
    threads: int | None = None  # runtime threads per pipeline (None: cores // workers; does not change results)

    def result_keys(self) -> dict[str, Any]:
        """The settings that change the rows (threads do not): part of every done-marker key."""
        d = asdict(self)
        d.pop("threads")
        return d

    def pipeline_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "backend": self.backend, "det_size": self.det_size, "conf_thresh": self.conf_thresh,
            "smoothing": self.smoothing, "threads": self.threads, "detect_every": self.detect_every,
            "overlap": self.overlap, "adaptive": self.adaptive,
        }
        if self.providers:
            kw["providers"] = self.providers
        if self.device:
            kw["device"] = self.device
        return kw


def model_digest(ref: str, kind: str) -> str:
    """``sha256:<hex>`` of the artifact's manifest, after verifying its model files.

    The manifest carries the sha256 of every file it names and the pipeline refuses files that
    do not match, so the manifest's own digest identifies the model exactly; checking the files
    here makes a corrupt model one line (exit 2) before any worker starts.
    """
    from ..artifact import load, resolve

    load(ref, kind=kind, verify=True)
    return "sha256:" + hashlib.sha256(Path(resolve(ref)).read_bytes()).hexdigest()


def is_url(s: str) -> bool:
    """A URL (``scheme://...``) rather than a local path: kept as it is, never stat'ed or globbed."""
    return bool(_URL_RE.match(s))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one): workers' default."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
