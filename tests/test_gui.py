"""Window or not: edgefer.gui decides without risking the process (issue 14, item 1).

opencv-python's Qt aborts the whole process (SIGABRT) when a window is opened without a usable
X display, so the decision must never call imshow in-process on a guess. These run the real
OpenCV of the environment: the headless build (GUI: NONE) or the GUI build, whichever pip gave.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from edgefer.gui import no_window_notice, opencv_gui, screen_status


def test_headless_build_says_which_opencv_to_install():
    if opencv_gui() is not None:
        pytest.skip("this environment has OpenCV's GUI build")
    st = screen_status(env={"DISPLAY": ":0"})
    assert not st.available and st.gui is None
    assert "opencv-python-headless" in st.reason and "pip install opencv-python" in st.reason
    line = no_window_notice(st)
    assert "\n" not in line and line.startswith("edgefer: no window:")


def test_gui_build_without_display_is_refused_without_opening_a_window():
    if opencv_gui() is None:
        pytest.skip("this environment has OpenCV's headless build")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    st = screen_status(env=env)
    assert not st.available and "DISPLAY is not set" in st.reason


def test_gui_build_with_a_dead_display_survives_the_probe():
    """A DISPLAY that names no server (a stale ssh variable): Qt would abort this process; the
    probe's child takes the abort and we get a reason instead."""
    if opencv_gui() is None:
        pytest.skip("this environment has OpenCV's headless build")
    st = screen_status(env={**os.environ, "DISPLAY": ":4711"})
    assert not st.available and ":4711" in st.reason


def test_gui_build_under_xvfb_opens_a_window():
    if opencv_gui() is None:
        pytest.skip("this environment has OpenCV's headless build")
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    xvfb = subprocess.Popen(["Xvfb", ":4712", "-screen", "0", "640x480x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        st = screen_status(env={**os.environ, "DISPLAY": ":4712"})
        assert st.available and st.reason == "", st
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
