"""Frame sources: camera, video file, stream URL, image, folder of images, and the demo.

Decoding runs on a background thread that feeds a bounded queue, so decode overlaps inference
(OpenCV releases the GIL while decoding). Files never drop a frame: the reader blocks when the
queue is full. A live camera never blocks capture: when the consumer falls behind, the oldest
queued frame is dropped and counted, so results stay close to real time. A video file opened
with ``realtime=True`` (``edgefer run clip.mp4 --realtime``) is replayed as a live camera: each
frame is released at its own time (index / fps from the start), decoded then, and dropped like a
camera's frame when the consumer falls behind, so live latency and drops can be measured without
a camera.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# FFmpeg's own log lines ("moov atom not found") would follow our one-line error: keep them quiet
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import EdgeferError  # noqa: E402

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


@dataclass
class Frame:
    index: int
    time_s: float
    image: np.ndarray
    name: str = ""  # file name for image sources
    captured: float = field(default_factory=time.perf_counter)


class Source:
    """Iterate :class:`Frame` objects; ``kind`` is camera, video, stream, image, folder or demo."""

    kind = "source"
    live = False  # live sources drop frames rather than fall behind
    fps: float = 0.0
    total: int | None = None

    def __init__(self) -> None:
        self.dropped = 0
        self.skipped: list[tuple[str, str]] = []  # (name, reason) for folder images that could not be read
        self.decode_s: list[float] = []

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.kind


class _Capture(Source):
    """cv2.VideoCapture-backed source (camera, file, stream) read on a background thread."""

    def __init__(self, cap: cv2.VideoCapture, label: str, live: bool, queue_size: int = 4, paced: bool = False):
        super().__init__()
        self.cap = cap
        self.label = label
        self.live = live
        self.paced = paced  # release frames at the stream's own rate (a file replayed as a camera)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else 30.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = n if n > 0 and not live else None
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.frames_read = 0

    def _reader(self) -> None:
        idx = 0
        start = time.perf_counter()
        consecutive_failures = 0
        try:
            while not self._stop.is_set():
                if self.paced:  # the frame "arrives" at its own time; decoding it is part of capture
                    due = start + idx / self.fps
                    wait = due - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                    elif -wait > 1.0 / self.fps:
                        # more than a frame late: a camera would have overwritten it (one-frame
                        # driver buffer); skip it and count it as dropped
                        if not self.cap.grab():
                            break
                        idx += 1
                        self.decode_s.append(0.0)
                        self.dropped += 1
                        continue
                t0 = time.perf_counter()
                ok, img = self.cap.read()
                t1 = time.perf_counter()
                if not ok or img is None:
                    if self.live and not self.paced and consecutive_failures < 50 and idx > 0:
                        consecutive_failures += 1
                        time.sleep(0.01)
                        continue
                    break
                consecutive_failures = 0
                self.decode_s.append(t1 - t0)
                ts = (t1 - start) if self.live and not self.paced else idx / self.fps
                # a paced frame's clock starts when it was due, so its decode counts as latency
                fr = Frame(idx, ts, img, captured=start + idx / self.fps if self.paced else t1)
                idx += 1
                if self.live:
                    while True:
                        try:
                            self._q.put_nowait(fr)
                            break
                        except queue.Full:
                            try:
                                self._q.get_nowait()
                                self.dropped += 1
                            except queue.Empty:
                                pass
                else:
                    while not self._stop.is_set():
                        try:
                            self._q.put(fr, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except Exception as e:  # a decoder error mid-stream: keep what was read
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.frames_read = idx
            self._q.put(None)

    def __iter__(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._reader, name="edgefer-decode", daemon=True)
        self._thread.start()
        while True:
            fr = self._q.get()
            if fr is None:
                break
            yield fr
        if self.total and self.frames_read < self.total and not self._stop.is_set():
            log.warning("%s: stream ended after %d of %d frames", self.label, self.frames_read, self.total)
            self.ended_early = True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # drain so the reader can exit
            try:
                while True:
                    self._q.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=2)
        self.cap.release()

    def describe(self) -> str:
        return f"{self.kind} {self.label} ({self.width}x{self.height} @ {self.fps:.4g} fps)"


class CameraSource(_Capture):
    kind = "camera"


class VideoSource(_Capture):
    kind = "video"


class StreamSource(_Capture):
    kind = "stream"


class ImageSource(Source):
    kind = "image"

    def __init__(self, paths: list[Path], label: str, folder: bool = False):
        super().__init__()
        self.paths = paths
        self.label = label
        self.kind = "folder" if folder else "image"
        self.total = len(paths)

    def __iter__(self) -> Iterator[Frame]:
        idx = 0
        for p in self.paths:
            t0 = time.perf_counter()
            img = read_image(p)
            self.decode_s.append(time.perf_counter() - t0)
            if img is None:
                reason = "unreadable or not an image"
                if self.kind == "image":
                    raise EdgeferError(f"cannot read image {p}: {reason}")
                self.skipped.append((p.name, reason))
                log.warning("skipping %s: %s", p, reason)
                continue
            yield Frame(idx, 0.0, img, name=p.name)
            idx += 1

    def describe(self) -> str:
        return f"{self.kind} {self.label} ({len(self.paths)} image{'s' if len(self.paths) != 1 else ''})"


class ArraySource(Source):
    """Frames from memory (the demo, tests, the Python API)."""

    kind = "frames"

    def __init__(self, frames: list[np.ndarray] | Iterator[np.ndarray], fps: float = 30.0, label: str = "frames"):
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.label = label
        self.total = len(frames) if isinstance(frames, list) else None

    def __iter__(self) -> Iterator[Frame]:
        for i, img in enumerate(self.frames):
            yield Frame(i, i / self.fps, img)

    def describe(self) -> str:
        return f"{self.kind} {self.label}"


def decode_only_fps(path: str, max_frames: int | None = None) -> tuple[float, int]:
    """The ceiling for a file: frames per second of a bare OpenCV read loop, and frames read."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise EdgeferError(f"cannot read video {path}")
    n = 0
    t0 = time.perf_counter()
    while max_frames is None or n < max_frames:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    dt = time.perf_counter() - t0
    cap.release()
    return (n / dt if dt > 0 else 0.0), n


def read_image(path: Path) -> np.ndarray | None:
    """BGR image or None; reads through numpy so non-ASCII paths work."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return img


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


def open_source(source: str | int | None, camera: int | None = None, demo: bool = False, realtime: bool | float = False) -> Source:
    """Open what the user named: camera index, video, image, folder, URL, or the demo.

    ``realtime``: replay a video file as a live camera at its own frame rate, or at ``realtime``
    frames/s when it is a number (frames dropped, never queued, when processing falls behind;
    latency measured from each frame's due time).
    """
    if demo:
        if realtime:
            raise EdgeferError("--realtime replays a video file; the demo is not one")
        return ArraySource(demo_frames(), fps=30.0, label="demo (scikit-image astronaut)")
    if camera is not None and source is not None:
        raise EdgeferError("give either SOURCE or --camera, not both")
    if camera is None and source is None:
        raise EdgeferError("no source: give a video, image, folder, URL, --camera N or --demo")
    if camera is None and isinstance(source, str) and source.isdigit() and not Path(source).exists():
        camera = int(source)
    if camera is not None:
        cap = cv2.VideoCapture(camera)
        if not cap.isOpened():
            cap.release()
            raise EdgeferError(f"cannot open camera {camera} (no such device, or it is busy)")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return CameraSource(cap, f"#{camera}", live=True, queue_size=2)
    s = str(source)
    if URL_RE.match(s):
        cap = cv2.VideoCapture(s)
        if not cap.isOpened():
            cap.release()
            raise EdgeferError(f"cannot open stream {s}")
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
        return ImageSource(files, s, folder=True)
    if not os.access(p, os.R_OK):
        raise EdgeferError(f"cannot read {s}: permission denied")
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if read_image(p) is None:
            raise EdgeferError(f"cannot read image {s}: corrupt or not an image")
        return ImageSource([p], s)
    if suffix in VIDEO_SUFFIXES or suffix == "":
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            cap.release()
            raise EdgeferError(f"cannot read video {s}: corrupt or unsupported format")
        if realtime:
            src = VideoSource(cap, s, live=True, queue_size=2, paced=True)
            if not isinstance(realtime, bool):
                if not realtime > 0:
                    cap.release()
                    raise EdgeferError(f"the replay rate must be > 0 frames/s, not {realtime}")
                src.fps = float(realtime)
            return src
        return VideoSource(cap, s, live=False)
    # unknown suffix: try as an image, then as a video
    if read_image(p) is not None:
        return ImageSource([p], s)
    cap = cv2.VideoCapture(str(p))
    if cap.isOpened():
        ok, _ = cap.read()
        if ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            return VideoSource(cap, s, live=False)
    cap.release()
    raise EdgeferError(f"unsupported source {s}: not a readable image or video")
