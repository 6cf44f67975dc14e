"""Decoding video files with PyAV, bit-exact across CPUs for 8-bit 4:2:0, behind a cv2.VideoCapture face.

Why not OpenCV's own reader: it converts YUV to BGR with FFmpeg's swscale, whose SIMD paths are
not bit-exact across CPUs (the same H.264 file gave BGR pixels up to 2 levels apart on
linux-aarch64 and x86-64, enough to move detector boxes and flip emotions). H.264 decoding itself
is bit-exact; only the colour conversion is not. So frames are decoded by PyAV and an 8-bit 4:2:0
frame (``yuv420p``/``yuvj420p``, even height) is converted here by :func:`bgr_of_420`, integer
arithmetic only, which gives the same pixels on every CPU. Its formula is the one swscale's x86
SIMD converter computes (the one OpenCV's reader used on x86-64), so on x86-64 the pixels are the
very ones OpenCV's reader gave, and the matrix (BT.601/709/2020, ...) and range follow the frame's
metadata as there. ``cv2.cvtColor(COLOR_YUV2BGR_I420)`` is not used: it is BT.601 limited range
only, 10-16 levels off on BT.709 video. Other pixel formats (10-bit, ``nv12``, 4:2:2/4:4:4, odd
heights, ...) fall back to PyAV's ``bgr24`` conversion (swscale): they decode, but only 8-bit
4:2:0 is guaranteed identical across CPUs.

:class:`AVCapture` exposes the part of the ``cv2.VideoCapture`` interface that the capture
reader (:mod:`edgefer.capture`) uses -- ``read``, ``grab``, ``get``/``set`` of the frame count,
fps, size and position, ``isOpened``, ``release`` -- with OpenCV's meanings, so the reader's
pacing, ``--max-frames``, and its corrupt-stretch recovery and accounting work unchanged:

- a packet the decoder rejects (``av.error.InvalidDataError`` and the like) makes ``read`` fail
  once, as OpenCV's read does at a damaged stretch; the next ``read`` goes on with the packets
  after it, and the frame it returns is placed by its timestamp (``CAP_PROP_POS_MSEC``);
- ``CAP_PROP_POS_FRAMES`` is the position of the next frame: ``set`` seeks to the keyframe at or
  before a frame and decodes forward to it (without colour conversion), so the reader's seek
  probes land on the very frame or report that it does not decode;
- the frame count and fps are derived as OpenCV derives them (``nb_frames``, else duration x fps;
  ``av_guess_frame_rate``, else the average rate), so both decoders report the same numbers.

Decoding threads: ``thread_type = "AUTO"`` (frame and slice threads), measured as fast as OpenCV.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .yuv420 import bgr_of_420, yuv_terms  # noqa: F401 - yuv_terms: the formula's tables, re-exported

# av is imported on first use (about 0.1 s): a run on a camera or an image never pays for it.
_AV: dict = {}


def load_av():
    """The ``av`` module, or None when it does not import (then files are decoded by OpenCV).

    av is a runtime dependency; still, a broken install must leave OpenCV decoding files.
    """
    if "module" not in _AV:
        try:
            import av
            import av.error

            _AV["module"], _AV["why"] = av, ""
            # a packet the decoder rejects raises one of these; it is a failed read, never the end
            _AV["errors"] = (av.error.FFmpegError, ValueError)
        except Exception as e:  # noqa: BLE001 - any import failure means "no PyAV here"
            _AV["module"], _AV["why"], _AV["errors"] = None, f"{type(e).__name__}: {e}", (ValueError,)
    return _AV["module"]


# While seeking (``set(CAP_PROP_POS_FRAMES)``), at most this many frames are decoded forward from
# the keyframe before giving up on reaching the target (a keyframe interval far above any encoder
# default), and at most this many damaged packets are stepped over.
SEEK_MAX_DECODE = 1200
SEEK_MAX_ERRORS = 64


# yuvj420p: the deprecated full-range twin of yuv420p (also flagged by color_range)
_FULL_RANGE_FORMATS = ("yuvj420p",)


def frame_planes(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V of an 8-bit planar frame as uint8 views (no copy) of PyAV's buffers, padding cut."""
    return tuple(
        np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes[:3]
    )


def is_exact_420(frame) -> bool:
    """True when :func:`bgr_of` converts the frame itself (same pixels on every CPU)."""
    return frame.format.name in ("yuv420p", *_FULL_RANGE_FORMATS) and frame.height % 2 == 0


def bgr_of(frame) -> np.ndarray:
    """BGR pixels of a decoded PyAV frame: exact integer conversion for 8-bit 4:2:0, else bgr24.

    The matrix follows ``frame.colorspace`` and the range ``frame.color_range`` (JPEG = full) or
    the ``yuvj420p`` format, as OpenCV's reader does; the fallback is PyAV's swscale conversion.
    """
    if is_exact_420(frame):
        full = frame.format.name in _FULL_RANGE_FORMATS or int(frame.color_range) == 2
        return bgr_of_420(*frame_planes(frame), colorspace=int(frame.colorspace), full_range=full)
    return frame.to_ndarray(format="bgr24")


class AVCapture:
    """A video file decoded by PyAV, read through the cv2.VideoCapture calls the reader makes.

    Opening never decodes a frame: the size is the stream's (so the pixel cap is checked before
    any decoding). ``isOpened()`` is False when the file has no video stream PyAV can decode;
    ``why`` then says why.
    """

    decoder = "pyav"

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.why = ""
        self._container = None
        self._stream = None
        self._demux = None
        self._pending: deque = deque()  # frames decoded but not yet handed out
        self._eof = False
        self._next = 0  # position of the next frame (CAP_PROP_POS_FRAMES)
        self._last_pts = None  # timestamp of the last frame handed out
        # the reader thread may still be inside read() when the consumer's thread releases the
        # capture (close() after --max-frames): closing a container mid-decode must wait for it
        self._lock = threading.RLock()
        if load_av() is None:
            self.why = f"PyAV is not available ({_AV['why']})"
            return
        try:
            self._open()
        except (*_AV["errors"], OSError, IndexError) as e:
            self.release()
            self.why = f"{type(e).__name__}: {e}"

    def _open(self) -> None:
        self._container = _AV["module"].open(self.path, mode="r")
        if not self._container.streams.video:
            raise ValueError("no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        self._stream = stream
        self.width, self.height = int(ctx.width or 0), int(ctx.height or 0)
        self.fps = self._guess_fps()
        self.count = self._guess_count()
        tb = stream.time_base
        self._tb = Fraction(tb) if tb else Fraction(0)
        self._start = stream.start_time if stream.start_time is not None else 0
        self._demux = self._container.demux(stream)

    def _guess_fps(self) -> float:
        s = self._stream
        for rate in (s.guessed_rate, s.average_rate):
            if rate and float(rate) > 0:
                return float(rate)
        tb = s.codec_context.time_base
        return float(1 / tb) if tb else 0.0

    def _guess_count(self) -> int:
        s = self._stream
        if s.frames:
            return int(s.frames)
        seconds = 0.0
        if self._container.duration:
            seconds = self._container.duration / _AV["module"].time_base
        elif s.duration and s.time_base:
            seconds = float(s.duration * s.time_base)
        return math.floor(seconds * self.fps + 0.5) if seconds > 0 and self.fps > 0 else 0

    # -- the cv2.VideoCapture subset ----------------------------------------------------------

    def isOpened(self) -> bool:  # cv2.VideoCapture's name
        return self._container is not None

    def release(self) -> None:
        with self._lock:
            container, self._container = self._container, None
            self._stream = self._demux = None
            self._pending.clear()
            if container is not None:
                try:
                    container.close()
                except (*_AV["errors"], OSError):  # closing a damaged file must not raise
                    pass

    def get(self, prop: int) -> float:
        if self._container is None:
            return 0.0
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(self.count)
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.width)
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.height)
        if prop == cv2.CAP_PROP_POS_FRAMES:
            return float(self._next)
        if prop == cv2.CAP_PROP_POS_MSEC:
            if self._last_pts is None:
                return 0.0
            return float((self._last_pts - self._start) * self._tb * 1000)
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        with self._lock:
            if self._container is None or prop != cv2.CAP_PROP_POS_FRAMES:
                return False
            return self._seek(max(0, int(value)))

    def grab(self) -> bool:
        """Decode the next frame without converting it (a paced replay skipping a late frame)."""
        with self._lock:
            return self._take() is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._lock:
            frame = self._take()
            if frame is None:
                return False, None
            return True, bgr_of(frame)

    # -- decoding -----------------------------------------------------------------------------

    def _take(self):
        """The next frame, or None for a rejected packet (once) or the end of the file."""
        if not self._pending and not self._fill():
            return None
        frame = self._pending.popleft()
        self._last_pts = frame.pts
        self._next += 1
        return frame

    def _fill(self) -> bool:
        """Decode packets until a frame is pending: False at a rejected packet or the end."""
        while not self._pending:
            if self._eof or self._demux is None:
                return False
            try:
                packet = next(self._demux)
            except StopIteration:
                self._eof = True
                return False
            except _AV["errors"]:  # the demuxer gave up: the file ends here (a seek may go on)
                self._eof = True
                try:  # frames still inside the (threaded) decoder are good ones: hand them out
                    self._pending.extend(self._stream.codec_context.decode(None))
                except (*_AV["errors"], EOFError):
                    pass
                return bool(self._pending)
            try:
                self._pending.extend(packet.decode())
            except _AV["errors"]:
                return False  # this read fails; the next one decodes the packets after it
        return True

    def _position(self, frame) -> int | None:
        if frame.pts is None or not self._tb or self.fps <= 0:
            return None
        return round(float((frame.pts - self._start) * self._tb) * self.fps)

    def _seek(self, target: int) -> bool:
        """Leave the frame at ``target`` (or the first decodable one after it) next in line."""
        self._pending.clear()
        self._eof = False
        self._last_pts = None
        if target == 0:  # the start: reopen, which also works where the container cannot seek
            self.release()
            try:
                self._open()
            except (*_AV["errors"], OSError, IndexError):
                self.release()
                return False
            self._next = 0
            return True
        ts = self._start + round(target / self.fps / self._tb) if self._tb and self.fps > 0 else 0
        try:
            self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
        except _AV["errors"]:
            self._eof = True
            return False
        self._demux = self._container.demux(self._stream)
        decoded = errors = 0
        while decoded < SEEK_MAX_DECODE and errors < SEEK_MAX_ERRORS:
            if not self._pending:
                if self._fill():
                    continue
                if self._eof:
                    break
                errors += 1
                continue
            frame = self._pending[0]
            pos = self._position(frame)
            if pos is None:
                break
            if pos >= target:
                self._next = pos
                return True
            self._pending.popleft()
            decoded += 1
        self._pending.clear()
        self._next = target
        self._eof = True  # nothing at or after the target within reach: reads fail until a new seek
        return True
