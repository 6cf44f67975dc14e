"""The per-frame write step shared by ``edgefer run`` with one source and with several.

Both loops promise the same thing (DESIGN.md, untrusted inputs): a stop signal that arrives
while a frame is being written lets that frame reach every sink, then stops; a write error is
one line, stops the loop and keeps what was already written whole; closing the sinks is not cut
short by a first signal and each close's own write error is reported too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ..errors import EdgeferError
from ..signals import StopOnSignal


def write_frame(stop: StopOnSignal, write_errors: list[str], work: Callable[..., bool | None], *args: Any) -> bool:
    """Run ``work(*args)`` (one frame's writes) with signals deferred to its end; whether the loop goes on.

    ``work`` returns False when the loop must stop (a closed window). A write error
    (:class:`EdgeferError`) is appended to ``write_errors`` and stops the loop; a signal that
    arrived during the frame stops it after the frame.
    """
    stop.busy = True  # a signal from here on finishes this frame, then stops
    try:
        go_on = work(*args) is not False
    except EdgeferError as e:  # a write error: stop, keep what was written, say it once
        write_errors.append(str(e))
        return False
    finally:
        stop.busy = False
    return go_on and not stop.requested


def close_all(closers: Iterable[Any], write_errors: list[str]) -> None:
    """Close every sink (None entries skipped), each close's write error appended to ``write_errors``."""
    for closer in closers:
        if closer is None:
            continue
        try:
            closer.close()
        except EdgeferError as e:
            write_errors.append(str(e))
