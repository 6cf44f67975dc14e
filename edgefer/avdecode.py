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

import functools
import math
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

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


# -- exact 8-bit 4:2:0 -> BGR ------------------------------------------------------------------
#
# The formula (FFmpeg's x86 yuv2rgb, written down from its definition; every term is an integer
# function of one 8-bit sample, so it is a lookup table):
#   Ys(Y) = ((8*Y - y_off) * k_y) >> 16           y_off = 128 limited range, 0 full range
#   Bu(U) = ((8*U - 1024) * k_ub) >> 16           Rv(V) = ((8*V - 1024) * k_vr) >> 16
#   Gu(U) = ((8*U - 1024) * k_ug) >> 16           Gv(V) = ((8*V - 1024) * k_vg) >> 16
#   B = clip(Ys + Bu), G = clip(Ys + Gu + Gv), R = clip(Ys + Rv)   (clip to 0..255)
# with 13-bit coefficients derived from the matrix's Kr, Kb, and each chroma sample used for its
# 2x2 block of luma samples (no chroma interpolation: swscale's unscaled converter does not
# interpolate either). ``>>`` floors, as pmulhw does.

# Kr, Kb per AVColorSpace (frame.colorspace); anything else -- unspecified, BT.470BG, SMPTE 170M,
# and also YCgCo, which swscale refuses -- is converted as BT.601, swscale's and OpenCV's default.
_KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_KR_KB_601 = (0.299, 0.114)
_FULL_RANGE_FORMATS = ("yuvj420p",)
_BIAS = 512  # keeps every table entry of the fast path positive (|term| < 300 for every matrix)


def _round_shift16(x: int) -> int:
    """round(x / 65536) with halves up, as swscale's roundToInt16 (exact integer arithmetic)."""
    return (x + (1 << 15)) >> 16


@functools.lru_cache(maxsize=16)
def yuv_terms(colorspace: int, full_range: bool) -> tuple[np.ndarray, ...]:
    """The five per-sample terms (Ys, Bu, Gu, Gv, Rv) as int32 arrays of 256 entries.

    Coefficients are computed in exact integer arithmetic from Kr, Kb (the only floats are the
    matrix constants, rounded once to 16.16 fixed point), so the tables are the same everywhere.
    """
    kr, kb = _KR_KB.get(int(colorspace), _KR_KB_601)
    kg = 1.0 - kr - kb
    # chroma coefficients in 16.16 for limited-range chroma (the 255/224 stretch folded in)
    scale = 65536 * 255 / 224
    crv, cbu, cgu, cgv = (
        math.floor(scale * c + 0.5)
        for c in (2 * (1 - kr), 2 * (1 - kb), 2 * (1 - kb) * kb / kg, 2 * (1 - kr) * kr / kg)
    )
    cgu, cgv = -cgu, -cgv
    if full_range:  # no luma stretch; chroma back to 224/255, truncated toward zero as in C
        cy, oy = 1 << 16, 0
        crv, cbu, cgu, cgv = (int(math.copysign(abs(c) * 224 // 255, c)) for c in (crv, cbu, cgu, cgv))
    else:
        cy, oy = (65536 * 255) // 219, 16 << 16
    k_y, k_vr, k_ub, k_vg, k_ug = (_round_shift16(c << 13) for c in (cy, crv, cbu, cgv, cgu))
    y_off = _round_shift16(oy << 3)
    v = np.arange(256, dtype=np.int64)
    ys = (((v << 3) - y_off) * k_y) >> 16
    c = (v << 3) - 1024

    def term(k: int) -> np.ndarray:
        return ((c * k) >> 16).astype(np.int32)

    return ys.astype(np.int32), term(k_ub), term(k_ug), term(k_vg), term(k_vr)


@functools.lru_cache(maxsize=16)
def _fast_tables(colorspace: int, full_range: bool) -> tuple[np.ndarray, ...]:
    """The terms rearranged for the fast path: every channel is ``P[Y] - N_c[U, V]`` with P, N_c >= 0.

    P = Ys + BIAS (uint16, full resolution), N_b = BIAS - Bu, N_r = BIAS - Rv (uint16) and
    N_g = (BIAS - Gu) - Gv (int16 tables, the difference is positive). A saturating uint16
    subtraction P - N then clips below at 0 exactly, and a saturating conversion to uint8 clips
    above at 255: both are exact integer operations, whatever the CPU.
    """
    ys, bu, gu, gv, rv = yuv_terms(colorspace, full_range)
    if max(int(np.abs(t).max()) for t in (ys, bu, rv)) >= _BIAS or int(np.abs(gu).max() + np.abs(gv).max()) >= _BIAS:
        raise ValueError(f"colour terms out of the fast path's range for colorspace {colorspace}")
    return (
        (ys + _BIAS).astype(np.uint16).reshape(1, 256),
        (_BIAS - bu).astype(np.uint16).reshape(1, 256),
        (_BIAS - gu).astype(np.int16).reshape(1, 256),
        gv.astype(np.int16).reshape(1, 256),
        (_BIAS - rv).astype(np.uint16).reshape(1, 256),
    )


# Scratch planes of the fast path, per thread (the reader thread and the caller may both convert)
# and per frame size: a fresh 1080p scratch each frame costs more in page faults than the maths.
_SCRATCH = threading.local()


def _scratch(h: int, w: int) -> tuple[np.ndarray, ...]:
    held = getattr(_SCRATCH, "planes", None)
    if held is None or held[0].shape != (h, w):
        held = (np.empty((h, w), np.uint16), np.empty((h, w), np.uint16)) + tuple(
            np.empty((h, w), np.uint8) for _ in range(3)
        )
        _SCRATCH.planes = held
    return held


def frame_planes(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V of an 8-bit planar frame as uint8 views (no copy) of PyAV's buffers, padding cut."""
    return tuple(
        np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes[:3]
    )


def bgr_of_420(y: np.ndarray, u: np.ndarray, v: np.ndarray, colorspace: int = 2, full_range: bool = False) -> np.ndarray:
    """BGR (h x w x 3 uint8) of 8-bit 4:2:0 planes by the formula above: same pixels on every CPU.

    ``y`` is h x w (h even), ``u``/``v`` are h/2 x ceil(w/2). Only integer operations with defined
    results: cv2.LUT, saturating uint16/int16 cv2.subtract, cv2.merge (the horizontal chroma
    doubling), cv2.convertScaleAbs of non-negative integers below 2**24 (exact: a saturating cast),
    and strided row views for the vertical doubling (even and odd luma rows share a chroma row).
    """
    h, w = y.shape
    ch, cw = u.shape
    if h % 2 or ch != h // 2 or cw != (w + 1) // 2 or v.shape != u.shape:
        raise ValueError(f"not 4:2:0 planes: Y {y.shape}, U {u.shape}, V {v.shape}")
    p_t, nb_t, ngu_t, gv_t, nr_t = _fast_tables(int(colorspace), bool(full_range))
    p, s, *outs = _scratch(h, w)
    cv2.LUT(y, p_t, dst=p)
    n_g = cv2.subtract(cv2.LUT(u, ngu_t), cv2.LUT(v, gv_t)).view(np.uint16)
    for n, out in zip((cv2.LUT(u, nb_t), n_g, cv2.LUT(v, nr_t)), outs, strict=True):
        wide = cv2.merge([n, n]).reshape(ch, 2 * cw)  # each chroma sample twice along the row
        if 2 * cw != w:
            wide = wide[:, :w]
        cv2.subtract(p[0::2], wide, dst=s[0::2])
        cv2.subtract(p[1::2], wide, dst=s[1::2])
        cv2.convertScaleAbs(s, dst=out)
    return cv2.merge(outs)


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
