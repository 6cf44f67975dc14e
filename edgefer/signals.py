"""Stopping a run cleanly on SIGINT, SIGTERM (``docker stop``, systemd) and SIGHUP alike.

Only SIGINT used to reach the clean stop; SIGTERM killed the process with the annotated video
half written (no moov atom: unplayable) and no summary. While a run is inside :class:`StopOnSignal`:

* a signal that arrives while a frame's results are being written sets a flag; the loop finishes
  that frame (every sink gets it) and then stops;
* a signal that arrives while the loop waits for a frame or runs the models raises
  :class:`Interrupted` at once (nothing half-written is lost: the frame had not reached a sink);
* either way the caller closes every sink, writes the summary, and exits with
  ``128 + signal number`` (130 SIGINT, 143 SIGTERM, 129 SIGHUP), the shell's convention.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

HANDLED = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                            getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(BaseException):
    """Raised in the main thread by a stop signal (a BaseException, like KeyboardInterrupt, so
    that ``except Exception`` in a stage does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def signal_name(signum: int | None) -> str | None:
    if signum is None:
        return None
    try:
        return signal.Signals(signum).name
    except ValueError:  # pragma: no cover
        return str(signum)


class StopOnSignal:
    """Context manager: route stop signals to a flag (while ``busy``) or :class:`Interrupted`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.busy = False  # True while the current frame is being written to the sinks
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, _frame: Any) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if not self.busy or not first:
            raise Interrupted(signum)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in HANDLED:
                try:
                    self._old[s] = signal.signal(s, self._handler)
                except (ValueError, OSError):  # pragma: no cover - not settable here
                    pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            try:
                signal.signal(s, old)
            except (ValueError, OSError):  # pragma: no cover
                pass
        self._old.clear()

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum) if self.signum is not None else 0
