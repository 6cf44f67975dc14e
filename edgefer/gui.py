"""Can this process open a window, and if not, why (one line the user can act on).

Why a module of its own: with ``opencv-python`` (the GUI build, Qt on Linux) a window on a
machine without a usable X display does not raise - Qt prints "could not connect to display"
and **aborts the process** (SIGABRT, measured with opencv-python 5.0.0.93: exit 134). A stale
``DISPLAY`` (an ssh session without X forwarding, a stopped Xvfb) does the same. So the only
honest check is to open a window where a crash costs nothing: in a short child process, once.
With ``opencv-python-headless`` (GUI: NONE) no window is possible at all, and the fix is a
different OpenCV build, which the reason says.

Only cv2 and the standard library: the runtime imports this.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass

#: opens and closes a window: exit 0 only when the GUI backend reached a display
PROBE = "import cv2; cv2.namedWindow('edgefer-probe'); cv2.waitKey(1); cv2.destroyAllWindows(); cv2.waitKey(1)"
PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ScreenStatus:
    available: bool
    gui: str | None  # OpenCV's GUI backend ("QT5", "GTK3", "WIN32UI", "COCOA"), None for a headless build
    reason: str  # empty when available; else why not, and what to do


def opencv_gui(build_info: str | None = None) -> str | None:
    """The ``GUI:`` entry of OpenCV's build information, None when it is NONE (headless)."""
    if build_info is None:
        import cv2

        try:
            build_info = cv2.getBuildInformation()
        except Exception:  # pragma: no cover - every OpenCV wheel has it
            return None
    for line in build_info.splitlines():
        s = line.strip()
        if s.startswith("GUI:"):
            v = s.split(":", 1)[1].strip()
            return None if not v or v.upper() == "NONE" else v
    return None


def _probe_window(env: dict[str, str]) -> tuple[bool, str]:
    try:
        r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"opening a window did not finish in {PROBE_TIMEOUT_S:.0f} s"
    except OSError as e:
        return False, f"could not test the display ({e})"
    if r.returncode == 0:
        return True, ""
    last = next((ln.strip() for ln in r.stderr.splitlines() if "display" in ln.lower()), "")
    return False, last or f"opening a window failed (exit {r.returncode})"


def screen_status(env: dict[str, str] | None = None, build_info: str | None = None,
                  probe: bool = True) -> ScreenStatus:
    """Whether ``edgefer run`` can show a window here, and the one-line reason when it cannot.

    ``env`` (default ``os.environ``) and ``build_info`` (default OpenCV's) are parameters so the
    decision can be checked for other machines' settings; ``probe=False`` skips the child process
    (then a set but unusable ``DISPLAY`` counts as available).
    """
    env = dict(os.environ if env is None else env)
    gui = opencv_gui(build_info)
    if gui is None:
        return ScreenStatus(False, None, "OpenCV here is a build without GUI (opencv-python-headless): for a window, "
                                         "pip uninstall -y opencv-python-headless && pip install opencv-python")
    if sys.platform.startswith("linux"):
        qt = gui.upper().startswith("QT")
        x11 = env.get("DISPLAY")
        if not x11 and (qt or not env.get("WAYLAND_DISPLAY")):
            # opencv-python's Qt ships only the xcb (X11) plugin: Wayland needs XWayland's DISPLAY
            return ScreenStatus(False, gui, "no display (DISPLAY is not set)")
        if probe:
            ok, why = _probe_window(env)
            if not ok:
                return ScreenStatus(False, gui, f"the display {x11 or env.get('WAYLAND_DISPLAY')} cannot be used: {why}")
    return ScreenStatus(True, gui, "")


@functools.lru_cache(maxsize=1)
def cached_screen_status() -> ScreenStatus:
    """:func:`screen_status` of this process, probed at most once."""
    return screen_status()


def no_window_notice(status: ScreenStatus) -> str:
    """The line ``edgefer run`` prints once when it runs without a window."""
    return f"edgefer: no window: {status.reason} (results still go to --output / --events; --no-display silences this)"
