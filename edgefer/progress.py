"""Progress bars that behave in a log file as well as on a terminal.

tqdm redraws its bar with carriage returns. On a terminal that is a live bar; written to a
file or a pipe (CI logs, ``2> export.log``, ``| tee``) every redraw stays, and a ten-minute
export leaves thousands of ``\\r``-joined fragments on one "line". So: on a terminal this is
tqdm as before; anywhere else it is :class:`PlainProgress`, which prints one ordinary line
(``desc: 120/300 frames (40%) [postfix]``) at most every ``every_s`` seconds and one at the
end, and never a carriage return.

Both objects offer the subset of tqdm's interface edgefer uses: iteration, ``update``,
``set_postfix``, ``set_postfix_str``, ``set_description``, ``write``, ``close`` and the
``total`` / ``n`` attributes, so call sites do not care which one they got.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

#: seconds between two plain progress lines (a log gets a line per interval, not per step)
PLAIN_EVERY_S = 10.0


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class PlainProgress:
    """A progress report for non-terminals: whole lines, one per ``every_s`` seconds at most."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, file: TextIO | None = None, every_s: float = PLAIN_EVERY_S, **_: Any):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.n = 0
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.file = file
        self.every_s = every_s
        self.postfix = ""
        self._t0 = time.monotonic()
        self._last = self._t0
        self._closed = False
        self._said = -1  # the count of the last line printed (no repeated final line)

    # ------------------------------------------------------------------ tqdm's interface
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            return
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def write(self, s: str, file: TextIO | None = None, end: str = "\n") -> None:
        out = file or self.file or sys.stderr
        out.write(s + end)
        out.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # a run that ended within the first interval printed nothing: one line says it happened
        if self.n and self.n != self._said:
            self._line()

    # ------------------------------------------------------------------ output
    def _line(self) -> None:
        if self.disable:
            return
        out = self.file or sys.stderr
        n = int(self.n) if float(self.n).is_integer() else round(self.n, 1)
        if self.total:
            msg = f"{n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            msg = f"{n} {self.unit}"
        msg += f", {time.monotonic() - self._t0:.0f} s"
        if self.postfix:
            msg += f" [{self.postfix}]"
        try:
            out.write(f"{self.desc}: {msg}\n" if self.desc else msg + "\n")
            out.flush()
        except (OSError, ValueError):  # a closed pipe must not stop the work
            self.disable = True
        self._said = self.n


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, leave: bool = False, file: TextIO | None = None,
             every_s: float = PLAIN_EVERY_S, **kwargs: Any):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`PlainProgress`
    printing a line at most every ``every_s`` seconds (0: every update, for a few long steps).

    ``disable`` silences both (``-q``). Extra keyword arguments go to tqdm (``bar_format``...).
    """
    stream = file if file is not None else sys.stderr
    if _isatty(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=file, **kwargs)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, file=file, every_s=every_s)


def write(msg: str, file: TextIO | None = None) -> None:
    """A line that does not break a live tqdm bar on a terminal; a plain line elsewhere."""
    stream = file if file is not None else sys.stderr
    if _isatty(stream):
        from tqdm import tqdm

        tqdm.write(msg, file=file)
    else:
        stream.write(msg + "\n")
        stream.flush()
