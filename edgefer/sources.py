"""Frame sources: camera, video file, stream URL, image, folder of images, and the demo.

:func:`open_source` opens what the user named. The pieces live in their own modules and are
re-exported here, so ``from edgefer.sources import ...`` keeps working:

- :mod:`edgefer.sourcebase`: :class:`Frame`, :class:`Source`, :func:`hand_over`, :class:`ArraySource`;
- :mod:`edgefer.imagefiles`: image header parsing, the pixel cap, :func:`load_image`/:func:`read_image`;
- :mod:`edgefer.capture`: the background reader of cameras, files and streams (bounded queue,
  drops for live sources, paced replay with ``realtime``, reading past corrupt stretches), the
  choice of decoder for files (:func:`open_video_file`) and :func:`decode_only_fps`;
- :mod:`edgefer.avdecode`: the PyAV decoder that reads video files by default (``EDGEFER_DECODER=
  opencv|pyav``): its yuv420p frames are converted to BGR identically on every CPU.

A video file opened with ``realtime=True`` (``edgefer run clip.mp4 --realtime``) is replayed as a
live camera: each frame is released at its own time, and dropped like a camera's frame when the
consumer falls behind, so live latency and drops can be measured without a camera.

Inputs are untrusted: images (and video frames) over the pixel cap are refused before decoding,
a folder skips and lists such files, a corrupt video is read past its damage, and camera indices
are bounded (0..1023).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Iterator

# FFmpeg's own log lines ("moov atom not found") would follow our one-line error: keep them quiet
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .capture import (  # noqa: E402,F401  (re-exported: the public names of edgefer.sources)
    DECODER_ENV,
    DECODERS,
    RECENT_FINGERPRINTS,
    RECOVERY_MAX_SECONDS,
    RECOVERY_MAX_SEEKS,
    RECOVERY_READS,
    CameraSource,
    StreamSource,
    VideoSource,
    _Capture,
    decode_only_fps,
    decoder_choice,
    open_video_file,
)
from .errors import EdgeferError  # noqa: E402
from .imagefiles import (  # noqa: E402,F401  (re-exported)
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    MAX_PIXELS_ENV,
    _over_cap,
    _resolve_max_pixels,
    image_size,
    load_image,
    max_pixels_default,
    read_image,
)
from .sourcebase import ArraySource, Frame, Source, hand_over  # noqa: E402,F401  (re-exported)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)

# Camera indices past this are refused before OpenCV sees them: -1 asks V4L2 to probe devices
# (it segfaulted here with none), and an index beyond a C int raises OverflowError.
MAX_CAMERA_INDEX = 1023


class ImageSource(Source):
    kind = "image"

    def __init__(self, paths: list[Path], label: str, folder: bool = False, max_pixels: int | None = None):
        super().__init__()
        self.paths = paths
        self.label = label
        self.kind = "folder" if folder else "image"
        self.total = len(paths)
        self.max_pixels = _resolve_max_pixels(max_pixels)

    def __iter__(self) -> Iterator[Frame]:
        idx = 0
        for p in self.paths:
            t0 = time.perf_counter()
            img, reason = load_image(p, self.max_pixels)
            decode_ms = (time.perf_counter() - t0) * 1e3
            if img is None:
                if self.kind == "image":
                    raise EdgeferError(f"cannot read image {p}: {reason}")
                self.skipped.append((p.name, reason))
                log.warning("skipping %s: %s", p, reason)
                continue
            yield Frame(idx, 0.0, img, name=p.name, decode_ms=decode_ms)
            idx += 1

    def describe(self) -> str:
        return f"{self.kind} {self.label} ({len(self.paths)} image{'s' if len(self.paths) != 1 else ''})"



def demo_frames(n: int = 90, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """A short clip made from a real face photo: scikit-image's public-domain `astronaut`.

    The camera slowly zooms and pans over the photo (NASA portrait of Eileen Collins), so the
    demo exercises detection, alignment, batching, tracking and smoothing with no camera and no
    user data.
    """
    try:
        from skimage import data as skdata
    except ImportError:
        raise EdgeferError("the demo needs scikit-image: pip install 'edgefer[demo]'") from None
    rgb = skdata.astronaut()
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    out_w, out_h = size
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        zoom = 1.0 + 0.6 * t  # zoom in towards the face
        cw, ch = w / zoom, (w / zoom) * out_h / out_w
        ch = min(ch, h)
        cx = w * (0.5 - 0.05 * t) + 12 * np.sin(2 * np.pi * t * 2)
        cy = h * (0.45 - 0.15 * t)
        x0 = int(np.clip(cx - cw / 2, 0, w - cw))
        y0 = int(np.clip(cy - ch / 2, 0, h - ch))
        crop = img[y0 : y0 + int(ch), x0 : x0 + int(cw)]
        frames.append(cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA))
    return frames


def _camera_index(camera: int | str) -> int:
    """The camera index as an int in 0..MAX_CAMERA_INDEX, or one line saying why not."""
    text = str(camera).strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise EdgeferError(f"camera index must be a whole number, not {text!r}")
    value = int(text)
    if not 0 <= value <= MAX_CAMERA_INDEX:
        shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"
        raise EdgeferError(f"camera index must be between 0 and {MAX_CAMERA_INDEX}, not {shown}")
    return value


def _refuse_large_frames(cap: cv2.VideoCapture, what: str, max_pixels: int) -> None:
    """Refuse a capture whose frames are over the pixel cap, before the first one is decoded."""
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    too_big = _over_cap(w, h, max_pixels) if w > 0 and h > 0 else None
    if too_big:
        cap.release()
        raise EdgeferError(f"{what}: frames are {too_big}")


def open_source(source: str | int | None, camera: int | None = None, demo: bool = False, realtime: bool | float = False,
                max_pixels: int | None = None, decoder: str | None = None) -> Source:
    """Open what the user named: camera index, video, image, folder, URL, or the demo.

    ``realtime``: replay a video file as a live camera at its own frame rate, or at ``realtime``
    frames/s when it is a number (frames dropped, never queued, when processing falls behind;
    latency measured from each frame's due time).
    ``max_pixels``: images (and video frames) over this many pixels are refused before decoding;
    default ``EDGEFER_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`. A folder skips and lists them.
    A SOURCE of ASCII digits that is not an existing path is a camera index (0..1023).
    ``decoder``: ``pyav`` or ``opencv`` for video files (default ``EDGEFER_DECODER``, else
    ``pyav``, falling back to OpenCV when PyAV cannot open the file; see :mod:`edgefer.avdecode`).
    Cameras, network streams and GStreamer pipelines are always read by OpenCV.
    """
    cap_px = _resolve_max_pixels(max_pixels)
    if demo:
        if realtime:
            raise EdgeferError("--realtime replays a video file; the demo is not one")
        return ArraySource(demo_frames(), fps=30.0, label="demo (scikit-image astronaut)")
    if camera is not None and source is not None:
        raise EdgeferError("give either SOURCE or --camera, not both")
    if camera is None and source is None:
        raise EdgeferError("no source: give a video, image, folder, URL, --camera N or --demo")
    if camera is None and isinstance(source, int) and not isinstance(source, bool):
        camera = source
    elif camera is None and isinstance(source, str) and re.fullmatch(r"[0-9]+", source) and not Path(source).exists():
        camera = source  # type: ignore[assignment]  # checked and converted below
    if camera is not None:
        index = _camera_index(camera)
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise EdgeferError(f"cannot open camera {index} (no such device, or it is busy)")
        _refuse_large_frames(cap, f"camera {index}", cap_px)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return CameraSource(cap, f"#{index}", live=True, queue_size=2)
    s = str(source)
    from .gstreamer import is_pipeline, open_gstreamer

    if is_pipeline(s) and not Path(s).exists():  # a GStreamer pipeline (Jetson CSI camera, RTSP with hardware decode)
        cap = open_gstreamer(s)
        _refuse_large_frames(cap, "GStreamer pipeline", cap_px)
        return StreamSource(cap, "gstreamer", live=True, queue_size=2)
    if URL_RE.match(s):
        cap = cv2.VideoCapture(s)
        if not cap.isOpened():
            cap.release()
            raise EdgeferError(f"cannot open stream {s}")
        _refuse_large_frames(cap, f"stream {s}", cap_px)
        live = s.lower().startswith(("rtsp", "rtmp", "udp", "tcp", "srt"))
        return StreamSource(cap, s, live=live, queue_size=2 if live else 4)
    p = Path(s).expanduser()
    if not p.exists():
        raise EdgeferError(f"no such file or folder: {s}")
    if realtime and (p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES):
        raise EdgeferError(f"--realtime replays a video file; {s} is {'a folder' if p.is_dir() else 'an image'}")
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EdgeferError(f"folder {s} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(files, s, folder=True, max_pixels=cap_px)
    if not os.access(p, os.R_OK):
        raise EdgeferError(f"cannot read {s}: permission denied")
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        img, reason = load_image(p, cap_px)
        if img is None:
            raise EdgeferError(f"cannot read image {s}: {reason}")
        return ImageSource([p], s, max_pixels=cap_px)
    if suffix in VIDEO_SUFFIXES or suffix == "":
        cap = open_video_file(str(p), decoder)
        if cap is None:
            raise EdgeferError(f"cannot read video {s}: corrupt or unsupported format")
        _refuse_large_frames(cap, f"video {s}", cap_px)
        if realtime:
            src = VideoSource(cap, s, live=True, queue_size=2, paced=True, seekable=True)
            if not isinstance(realtime, bool):
                if not realtime > 0:
                    cap.release()
                    raise EdgeferError(f"the replay rate must be > 0 frames/s, not {realtime}")
                src.fps = float(realtime)
            return src
        return VideoSource(cap, s, live=False, seekable=True)
    # unknown suffix: try as an image, then as a video
    img, reason = load_image(p, cap_px)
    if img is not None:
        return ImageSource([p], s, max_pixels=cap_px)
    if reason.startswith("too large"):
        raise EdgeferError(f"cannot read image {s}: {reason}")
    cap = open_video_file(str(p), decoder)
    if cap is not None:
        _refuse_large_frames(cap, f"video {s}", cap_px)
        ok, _ = cap.read()
        if ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            return VideoSource(cap, s, live=False, seekable=True)
        cap.release()
    raise EdgeferError(f"unsupported source {s}: not a readable image or video")
