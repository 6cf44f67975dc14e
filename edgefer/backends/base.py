"""The backend protocol itself: the :class:`Backend` base class and the thread-count rule.

Kept apart from the registry and from ``open_backend`` (:mod:`edgefer.backends`) so that each
runtime module and :mod:`edgefer.backends.autoselect` build on it without importing the package
that chooses among them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import EdgeferError


#: most threads one runtime session may use; more only multiplies scheduling overhead (and
#: `--threads 100000` once spawned threads until the machine ran out of PIDs)
MAX_THREADS = 256


def check_threads(threads: int | None) -> int | None:
    """``threads`` (or ``$EDGEFER_THREADS`` when not given) checked to lie in 0..MAX_THREADS."""
    if not threads:
        env = os.environ.get("EDGEFER_THREADS", "").strip()
        if not env:
            return None
        try:
            threads = int(env)
        except ValueError:
            raise EdgeferError(f"EDGEFER_THREADS must be a whole number of threads, not {env!r}") from None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
        raise EdgeferError(f"threads must be between 0 (runtime default) and {MAX_THREADS}, not {threads!r}")
    return threads or None


class Backend:
    """Base class. Subclasses set ``name`` and implement ``_load`` and ``run``."""

    name = "base"

    def __init__(self, artifact: Artifact, device: str | None = None, threads: int | None = None, **options: Any):
        self.artifact = artifact
        self.manifest = artifact.manifest
        self.device = device
        self.threads = check_threads(threads)
        self.options = options
        self.input_name = self.manifest.input.name
        self.output_names: list[str] = []
        #: set by ``open_backend(..., "auto")``: which runtime auto chose and why (see autoselect)
        self.auto: dict[str, Any] | None = None
        self._load()

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What this backend really runs: used by `edgefer info` and the bench."""
        d: dict[str, Any] = {
            "backend": self.name,
            "target": self.manifest.target,
            "precision": self.manifest.precision,
            "device": self.device or "cpu",
            # what `edgefer run` prints in its summary: the threads asked of the runtime, or its own default
            "threads": self.threads or "runtime default",
        }
        if self.auto:
            d["auto"] = dict(self.auto)
        return d

    def fits_error(self, what: str) -> EdgeferError:
        return EdgeferError(f"{self.artifact.describe()} does not fit its manifest: {what}")
