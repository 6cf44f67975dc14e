"""GStreamer pipelines as video sources: Jetson CSI cameras and hardware-decoded RTSP.

On a Jetson the camera path that costs no CPU is GStreamer: ``nvarguscamerasrc`` reads a CSI
sensor through the ISP, ``nvv4l2decoder`` decodes H.264/H.265 on the NVDEC engine, ``nvvidconv``
converts in hardware; OpenCV receives BGR frames from an ``appsink``. OpenCV can do this only
when it was built with GStreamer: JetPack's system OpenCV (``python3-opencv``, seen from a venv
made with ``--system-site-packages``) is; the ``opencv-python`` wheels from PyPI are **not**
(``cv2.getBuildInformation()`` says ``GStreamer: NO``), so :func:`open_gstreamer` refuses in one
line there instead of returning a capture that never opens.

The appsink is ``drop=1 max-buffers=1``: a live camera keeps only its newest frame when the
loop falls behind (edgefer's rule for live sources: drop the oldest, never queue).
"""

from __future__ import annotations

import re

from .errors import EdgeferError

#: element names whose presence (with a ``!`` link) marks a string as a GStreamer pipeline
KNOWN_ELEMENTS = (
    "appsink", "nvarguscamerasrc", "v4l2src", "rtspsrc", "uridecodebin", "filesrc", "videotestsrc",
    "nvv4l2decoder", "nvvidconv", "videoconvert", "avfvideosrc", "udpsrc", "souphttpsrc", "decodebin",
)
_DRAIN = "appsink drop=1 max-buffers=1 sync=false"


def gstreamer_available() -> bool:
    """Whether the installed OpenCV was built with GStreamer (``GStreamer: YES`` in its build info)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def is_pipeline(s: object) -> bool:
    """Whether a SOURCE string is a GStreamer pipeline rather than a path, URL or camera index.

    A pipeline links elements with ``!`` and names at least one element we know (an appsink is
    required to hand frames to OpenCV, but a pipeline missing it should still be recognised so
    that :func:`open_gstreamer` can say what is wrong instead of "no such file").
    """
    if not isinstance(s, str) or "!" not in s:
        return False
    names = {tok.split()[0] for tok in (part.strip() for part in s.split("!")) if tok}
    return bool(names & set(KNOWN_ELEMENTS))


def _int_in(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise EdgeferError(f"{name} must be a whole number between {lo} and {hi}, not {value!r}")
    return value


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0) -> str:
    """Pipeline for a Jetson CSI camera (Argus ISP -> NVMM -> BGR in system memory -> appsink)."""
    sensor_id = _int_in("sensor_id", sensor_id, 0, 15)
    width = _int_in("width", width, 16, 8192)
    height = _int_in("height", height, 16, 8192)
    fps = _int_in("fps", fps, 1, 240)
    flip = _int_in("flip", flip, 0, 7)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
        f"videoconvert ! video/x-raw,format=BGR ! {_DRAIN}"
    )


def rtsp_hw_pipeline(url: str, codec: str = "h264", latency_ms: int = 200) -> str:
    """Pipeline for an RTSP stream decoded on the Jetson's NVDEC (``nvv4l2decoder``).

    The URL is quoted into the pipeline, so characters that would end the quote or start a new
    element (``"``, ``!``, newlines) are refused rather than passed to GStreamer's parser.
    """
    if not isinstance(url, str) or not re.match(r"rtsps?://[^\s]+$", url):
        raise EdgeferError(f"an RTSP pipeline needs an rtsp:// or rtsps:// URL, not {url!r}")
    if any(c in url for c in '"!\\'):
        raise EdgeferError(f"RTSP URL {url!r} contains a character GStreamer's pipeline syntax cannot take (\" ! \\)")
    codec = str(codec).lower()
    if codec not in ("h264", "h265"):
        raise EdgeferError(f"RTSP codec must be h264 or h265, not {codec!r}")
    latency_ms = _int_in("latency_ms", latency_ms, 0, 10000)
    return (
        f'rtspsrc location="{url}" latency={latency_ms} ! rtp{codec}depay ! {codec}parse ! '
        f"nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! "
        f"videoconvert ! video/x-raw,format=BGR ! {_DRAIN}"
    )


def open_gstreamer(s: str):
    """A ``cv2.VideoCapture`` on pipeline ``s``; one-line EdgeferError when it cannot be opened."""
    import cv2

    if not gstreamer_available():
        raise EdgeferError(
            f"this OpenCV has no GStreamer: cannot open the pipeline {s[:60]!r}{'...' if len(s) > 60 else ''} "
            f"(OpenCV {cv2.__version__} from {'pip' if 'site-packages' in cv2.__file__ else cv2.__file__}; on a "
            "Jetson use JetPack's OpenCV: a venv made with --system-site-packages and pip uninstall opencv-python)"
        )
    if "appsink" not in s:
        raise EdgeferError("a GStreamer pipeline for edgefer must end in an appsink (... ! videoconvert ! appsink)")
    cap = cv2.VideoCapture(s, cv2.CAP_GSTREAMER)
    if not cap.isOpened():
        cap.release()
        raise EdgeferError(f"GStreamer could not start the pipeline {s[:80]!r} (run it with gst-launch-1.0 to see why)")
    return cap
