"""Frame sources: camera, video file, stream URL, image, folder of images, and the demo.

Decoding runs on a background thread that feeds a bounded queue, so decode overlaps inference
(OpenCV releases the GIL while decoding). Files never drop a frame: the reader blocks when the
queue is full. A live camera never blocks capture: when the consumer falls behind, the oldest
queued frame is dropped and counted, so results stay close to real time. A video file opened
with ``realtime=True`` (``edgefer run clip.mp4 --realtime``) is replayed as a live camera: each
frame is released at its own time (index / fps from the start), decoded then, and dropped like a
camera's frame when the consumer falls behind, so live latency and drops can be measured without
a camera.

Inputs are untrusted. A video file with a corrupt stretch is read past it: when a read fails before
the file's frame count, the reader seeks ahead (doubling the step, then bisecting back to the first
frame that decodes), within a fixed budget of seeks and seconds, and counts what it skipped
(``decode_errors``; ``ended_early`` when nothing decodable was found before the frame count).
Images are refused before decoding when their header claims more pixels than the cap
(:data:`DEFAULT_MAX_PIXELS`, ``EDGEFER_MAX_PIXELS``), so a 69-byte file claiming 40000x40000 never
allocates; a folder skips and lists such files. Camera indices are bounded (0..1023).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
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

# Pixel cap for images and video frames, checked before decoding. 50 megapixels is a 8660x5773
# photo (150 MB as BGR): above what cameras and phones deliver by default, far below what a
# header bomb claims (a 69-byte PNG of 40000x40000 would need 4.8 GB). Override per process with
# EDGEFER_MAX_PIXELS, per call with ``max_pixels``. (OpenCV's own OPENCV_IO_MAX_IMAGE_PIXELS, 2^30
# by default, is read once when cv2 loads, too late and too high to rely on; we still catch it.)
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "EDGEFER_MAX_PIXELS"

# Camera indices past this are refused before OpenCV sees them: -1 asks V4L2 to probe devices
# (it segfaulted here with none), and an index beyond a C int raises OverflowError.
MAX_CAMERA_INDEX = 1023

# Reading past a corrupt stretch of a video file: first up to RECOVERY_READS more reads (the
# decoder often resumes by itself: H.264 conceals the damage until the next keyframe), then seeks
# past it. At most this many seeks per file and this many seconds spent recovering (all stretches
# together), so a wholly corrupt file ends in seconds.
RECOVERY_READS = 120
RECOVERY_MAX_SEEKS = 200
RECOVERY_MAX_SECONDS = 30.0
# Frames whose content fingerprints are kept to recognise a frame seen before (AVI demuxers
# resync over garbage by themselves and number what follows from where they stopped; seeking by
# the index afterwards would deliver those frames again). Fixed size: memory stays bounded.
RECENT_FINGERPRINTS = 1024


def max_pixels_default() -> int:
    """The pixel cap in force: EDGEFER_MAX_PIXELS when set (read on each call), else the default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise EdgeferError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, not {raw!r}")
    return int(value)


def _resolve_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        return max_pixels_default()
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise EdgeferError(f"max_pixels must be a positive whole number, not {max_pixels!r}")
    return max_pixels


def _over_cap(width: int, height: int, max_pixels: int) -> str | None:
    """The reason to refuse a width x height picture, or None when it fits the cap."""
    if width * height > max_pixels:
        return f"{width}x{height} = {width * height:,} pixels, over the {max_pixels:,}-pixel cap ({MAX_PIXELS_ENV})"
    return None


def _u16(b: memoryview, i: int, big: bool) -> int:
    return int.from_bytes(b[i : i + 2], "big" if big else "little")


def _u32(b: memoryview, i: int, big: bool) -> int:
    return int.from_bytes(b[i : i + 4], "big" if big else "little")


def image_size(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int] | None:
    """(width, height) that an image file's header claims, read without decoding; None if unknown.

    Covers PNG, JPEG (baseline and progressive), BMP, WebP (lossy, lossless, extended), TIFF and
    PNM (pgm/ppm/pbm), the formats a folder run reads. A header is only a claim: a file can still
    fail to decode, but one that claims too much is refused before anything is allocated.
    """
    b = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    n = len(b)
    try:
        if n >= 24 and bytes(b[:8]) == b"\x89PNG\r\n\x1a\n" and bytes(b[12:16]) == b"IHDR":
            return _u32(b, 16, True), _u32(b, 20, True)
        if n >= 4 and b[0] == 0xFF and b[1] == 0xD8:
            return _jpeg_size(b)
        if n >= 26 and bytes(b[:2]) == b"BM":
            if _u32(b, 14, False) == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                return _u16(b, 18, False), _u16(b, 20, False)
            w = int.from_bytes(b[18:22], "little", signed=True)
            h = int.from_bytes(b[22:26], "little", signed=True)  # negative: top-down rows
            return abs(w), abs(h)
        if n >= 30 and bytes(b[:4]) == b"RIFF" and bytes(b[8:12]) == b"WEBP":
            chunk = bytes(b[12:16])
            if chunk == b"VP8X":
                return (int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1)
            if chunk == b"VP8L" and b[20] == 0x2F:
                bits = _u32(b, 21, False)
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 " and bytes(b[23:26]) == b"\x9d\x01\x2a":
                return _u16(b, 26, False) & 0x3FFF, _u16(b, 28, False) & 0x3FFF
            return None
        if n >= 8 and bytes(b[:4]) in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b, bytes(b[:2]) == b"MM")
        if n >= 3 and b[0] == ord("P") and chr(b[1]) in "123456":
            m = re.match(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)", bytes(b[:1024]))
            return (int(m.group(1)), int(m.group(2))) if m else None
    except (IndexError, ValueError):
        return None
    return None


def _jpeg_size(b: memoryview) -> tuple[int, int] | None:
    """Walk the JPEG markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC)."""
    n, i = len(b), 2
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m in (0x01, 0xD8) or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image, start of scan: no frame header before the data
            return None
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = _u16(b, i + 5, True), _u16(b, i + 7, True)
            return (w, h) if h else None  # height 0: given later by a DNL marker; let OpenCV check
        i += 2 + _u16(b, i + 2, True)
    return None


def _tiff_size(b: memoryview, big: bool) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD, the page OpenCV decodes."""
    off = _u32(b, 4, big)
    if off + 2 > len(b):
        return None
    size: dict[int, int] = {}
    for k in range(min(_u16(b, off, big), 4096)):
        e = off + 2 + 12 * k
        if e + 12 > len(b):
            break
        tag, typ = _u16(b, e, big), _u16(b, e + 2, big)
        if tag in (256, 257):
            size[tag] = _u16(b, e + 8, big) if typ == 3 else _u32(b, e + 8, big)
    return (size[256], size[257]) if 256 in size and 257 in size else None


@dataclass
class Frame:
    index: int  # position in the file (frames skipped over a corrupt stretch leave a gap)
    time_s: float
    image: np.ndarray
    name: str = ""  # file name for image sources
    captured: float = field(default_factory=time.perf_counter)
    # milliseconds spent decoding this frame (carried on the frame, not kept per frame by the
    # source, so a camera running for weeks does not grow a list)
    decode_ms: float = 0.0


class Source:
    """Iterate :class:`Frame` objects; ``kind`` is camera, video, stream, image, folder or demo."""

    kind = "source"
    live = False  # live sources drop frames rather than fall behind
    fps: float = 0.0
    total: int | None = None

    def __init__(self) -> None:
        self.dropped = 0
        self.skipped: list[tuple[str, str]] = []  # (name, reason) for folder images that could not be read
        # video files: frames skipped because they could not be decoded (inside the file), and
        # whether the file gave out before its frame count (``frames_missing`` then says how many)
        self.decode_errors = 0
        self.ended_early = False
        self.frames_missing = 0

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.kind


def hand_over(q: queue.Queue, item, live: bool, stop: threading.Event) -> int:
    """Put ``item`` on a reader's bounded queue: a live source never waits (the oldest queued frame
    is dropped instead), a file waits for room until ``stop``. Returns the frames dropped (0 or 1)."""
    dropped = 0
    if live:
        while True:
            try:
                q.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    q.get_nowait()
                    dropped += 1
                except queue.Empty:
                    pass
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            break
        except queue.Full:
            continue
    return dropped


class _Capture(Source):
    """cv2.VideoCapture-backed source (camera, file, stream) read on a background thread."""

    def __init__(self, cap: cv2.VideoCapture, label: str, live: bool, queue_size: int = 4, paced: bool = False,
                 seekable: bool = False):
        super().__init__()
        self.cap = cap
        self.label = label
        self.live = live
        self.paced = paced  # release frames at the stream's own rate (a file replayed as a camera)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and fps < 1000 else 30.0
        self._file_fps = self.fps  # self.fps may be set to a replay rate; timestamps use the file's
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = n if n > 0 and not live else None
        # the file's frame count, also for a file replayed live: a file with a known count is
        # read past a corrupt stretch by seeking, and reports when it ends before that count
        self._count = n if n > 0 and (paced or not live) else None
        self.seekable = seekable and self._count is not None
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.frames_read = 0  # frames delivered
        self.seeks = 0  # seeks spent reading past corrupt stretches
        self._recovery_s = 0.0
        self._budget_note = ""
        # after a corrupt stretch the decoder can hand back frames out of order or with gaps
        # (H.264 concealing damage up to the next keyframe): from then on, frames are placed by
        # their timestamps instead of being counted
        self._by_timestamp = False
        # fingerprint -> [position, count] of recently delivered frames (bounded; see RECENT_FINGERPRINTS)
        self._recent: dict[bytes, list[int]] = {}
        self._recent_order: deque[bytes] = deque()

    # -- reading past corrupt stretches (seekable files) --------------------------------------

    @staticmethod
    def _fingerprint(img: np.ndarray) -> bytes:
        """A digest of a 64x64 grid of pixels of a decoded frame (about 40 us at 720p).

        Decoding is deterministic, so the same frame decoded twice (in sequence, then after a
        seek) gives the same digest. Different frames of a still scene can share one; such a
        digest is seen twice and is then never used to realign (see _remember).
        """
        h, w = img.shape[:2]
        return hashlib.blake2b(img[:: max(1, h // 64), :: max(1, w // 64)].tobytes(), digest_size=8).digest()

    def _remember(self, img: np.ndarray, pos: int) -> None:
        fp = self._fingerprint(img)
        entry = self._recent.get(fp)
        if entry is None:
            self._recent[fp] = [pos, 1]
        else:  # the same picture twice (a still scene): ambiguous, never used to realign
            entry[0], entry[1] = pos, entry[1] + 1
        self._recent_order.append(fp)
        if len(self._recent_order) > RECENT_FINGERPRINTS:
            old = self._recent_order.popleft()
            e = self._recent[old]
            e[1] -= 1
            if e[1] == 0:
                del self._recent[old]

    def _seen_at(self, img: np.ndarray) -> int | None:
        """Where a frame identical to ``img`` was delivered, when exactly one recent frame was."""
        e = self._recent.get(self._fingerprint(img))
        return e[0] if e is not None and e[1] == 1 else None

    def _budget_left(self) -> bool:
        if self.seeks >= RECOVERY_MAX_SEEKS:
            self._budget_note = f"gave up after {self.seeks} seeks"
            return False
        if self._recovery_s >= RECOVERY_MAX_SECONDS:
            self._budget_note = f"gave up after {self._recovery_s:.0f} s of seeking"
            return False
        return True

    def _probe(self, pos: int) -> np.ndarray | None:
        """Seek to frame ``pos`` and decode it; None unless that very frame came back."""
        if not self._budget_left():
            return None
        self.seeks += 1
        t0 = time.perf_counter()
        try:
            if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, pos):
                return None
            ok, img = self.cap.read()
            if not ok or img is None or int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1 != pos:
                return None
            return img
        finally:
            self._recovery_s += time.perf_counter() - t0

    def _timestamp_position(self) -> int | None:
        """Position of the frame just read from its timestamp (the demuxer's, not a counter)."""
        ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        if not ms or not math.isfinite(ms) or ms < 0:
            return None
        return int(round(ms * self._file_fps / 1000.0))

    def _recover(self, nxt: int) -> tuple[int, np.ndarray | None]:
        """The next decodable frame after ``nxt`` (which just failed to read): (position, image).

        First reads on: most decoders resume by themselves after a damaged packet, and the frame
        they give back is placed by its timestamp. When RECOVERY_READS reads in a row fail, seeks
        forward 1, 2, 4, ... frames until a seek decodes, then bisects back between the last
        failure and that frame, so a stretch of k bad frames costs about 2*log2(k) seeks. Frames
        passed over are counted in ``decode_errors``. The capture is left just after the frame
        returned, so plain reads go on from there. Image None: nothing decodable before the frame
        count (or the budget is spent); the position is then the first frame not delivered.
        """
        assert self._count is not None
        count = self._count
        t0 = time.perf_counter()
        for _ in range(RECOVERY_READS):
            if self._recovery_s + (time.perf_counter() - t0) >= RECOVERY_MAX_SECONDS:
                break
            ok, img = self.cap.read()
            if ok and img is not None:
                pos = self._timestamp_position()
                if pos is not None and pos < nxt:
                    continue  # a frame from before the damage, handed back late: already counted
                self._recovery_s += time.perf_counter() - t0
                pos = nxt if pos is None or pos >= count else pos
                self.decode_errors += pos - nxt
                return pos, img
        self._recovery_s += time.perf_counter() - t0
        bad = nxt  # a position known not to decode
        while True:
            step, good, img = 1, None, None
            while good is None:
                t = min(bad + step, count - 1)
                if t <= bad or not self._budget_left():
                    return nxt, None
                img = self._probe(t)
                if img is None:
                    bad, step = t, step * 2
                else:
                    good = t
            last = good
            while good - bad > 1 and self._budget_left():
                mid = (bad + good) // 2
                found = self._probe(mid)
                last = mid
                if found is None:
                    bad = mid
                else:
                    good, img = mid, found
            if last != good:  # leave the capture right after `good`
                again = self._probe(good)
                if again is None:
                    return nxt, None
                img = again
            seen = self._seen_at(img)
            if seen is not None and seen < good:
                # the demuxer had resynced over garbage by itself and numbered the frames after it
                # from where it lost count: frame `good` was delivered as `seen`. Everything up to
                # nxt - 1 + shift has been delivered; the `shift` frames it skipped are errors.
                shift = good - seen
                log.warning("%s: frames after a corrupt stretch were numbered %d too low", self.label, shift)
                self.decode_errors += shift
                self._recent.clear()
                self._recent_order.clear()
                nxt += shift
                if nxt >= count:
                    return nxt, None
                img = self._probe(nxt)  # the frame after the last one delivered may well decode
                if img is not None:
                    return nxt, img
                bad = nxt
                continue
            self.decode_errors += good - nxt
            return good, img

    def _reader(self) -> None:
        idx = 0  # position in the file of the next frame
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
                        # driver buffer); skip it and count it as dropped. A failed grab falls
                        # through to the read below, which reads past it or ends.
                        if self.cap.grab():
                            idx += 1
                            self.dropped += 1
                            continue
                t0 = time.perf_counter()
                ok, img = self.cap.read()
                pos = idx
                if ok and img is not None and self._by_timestamp:
                    stamp = self._timestamp_position()
                    if stamp is not None and stamp < idx:
                        continue  # behind what was delivered: a concealed frame of the damaged stretch
                    if stamp is not None and self._count is not None and stamp < self._count:
                        self.decode_errors += stamp - idx
                        pos = stamp
                elif (not ok or img is None) and self.seekable and self._count is not None and idx < self._count:
                    pos, img = self._recover(idx)
                    ok = img is not None
                    if not ok:
                        idx = pos  # where the file gave out (after a realignment, further on)
                    self._by_timestamp = True
                t1 = time.perf_counter()
                if not ok or img is None:
                    if self.live and not self.paced and consecutive_failures < 50 and idx > 0:
                        consecutive_failures += 1
                        time.sleep(0.01)
                        continue
                    break
                consecutive_failures = 0
                idx = pos
                if self.seekable:
                    self._remember(img, idx)
                ts = (t1 - start) if self.live and not self.paced else idx / self.fps
                # a paced frame's clock starts when it was due, so its decode counts as latency
                fr = Frame(idx, ts, img, captured=start + idx / self.fps if self.paced else t1,
                           decode_ms=(t1 - t0) * 1e3)
                idx += 1
                self.frames_read += 1
                self.dropped += hand_over(self._q, fr, self.live, self._stop)
        except Exception as e:  # a decoder error mid-stream: keep what was read
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self._position = idx
            self._q.put(None)

    def __iter__(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._reader, name="edgefer-decode", daemon=True)
        self._thread.start()
        while True:
            fr = self._q.get()
            if fr is None:
                break
            yield fr
        if self._stop.is_set():
            return
        if self.decode_errors:
            log.warning("%s: skipped %d undecodable frame%s (%d seeks)", self.label, self.decode_errors,
                        "s" if self.decode_errors != 1 else "", self.seeks)
        pos = getattr(self, "_position", 0)
        if self._count and pos < self._count:
            self.ended_early = True
            self.frames_missing = self._count - pos
            why = f"; {self._budget_note}" if self._budget_note else ""
            log.warning("%s: stream ended after %d of %d frames%s", self.label, pos, self._count, why)

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


def load_image(path: Path | str, max_pixels: int | None = None) -> tuple[np.ndarray | None, str]:
    """(BGR image, "") or (None, why not): the header is checked against the pixel cap first.

    Reads through numpy so non-ASCII paths work. An image whose header claims more than
    ``max_pixels`` (default: :func:`max_pixels_default`) is refused before decoding; a format
    whose header we do not parse is checked after decoding, and OpenCV's own errors (its 2^30
    pixel limit, a corrupt stream) become a reason, not an exception.
    """
    cap = _resolve_max_pixels(max_pixels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except (OSError, ValueError) as e:
        return None, f"unreadable ({e.strerror or type(e).__name__})" if isinstance(e, OSError) else "unreadable"
    if data.size == 0:
        return None, "empty file"
    size = image_size(data)
    if size is not None:
        if size[0] <= 0 or size[1] <= 0:
            return None, f"corrupt header ({size[0]}x{size[1]} pixels)"
        too_big = _over_cap(size[0], size[1], cap)
        if too_big:
            return None, f"too large: {too_big}"
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip().startswith("error:")), "").strip()
        return None, f"cannot be decoded ({first or 'OpenCV error'})"
    if img is None:
        return None, "unreadable or not an image"
    too_big = _over_cap(img.shape[1], img.shape[0], cap)
    if too_big:  # a format whose header was not parsed: refused all the same
        return None, f"too large: {too_big}"
    return img, ""


def read_image(path: Path | str, max_pixels: int | None = None) -> np.ndarray | None:
    """BGR image, or None when it cannot be read or is over the pixel cap (see :func:`load_image`)."""
    return load_image(path, max_pixels)[0]


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
                max_pixels: int | None = None) -> Source:
    """Open what the user named: camera index, video, image, folder, URL, or the demo.

    ``realtime``: replay a video file as a live camera at its own frame rate, or at ``realtime``
    frames/s when it is a number (frames dropped, never queued, when processing falls behind;
    latency measured from each frame's due time).
    ``max_pixels``: images (and video frames) over this many pixels are refused before decoding;
    default ``EDGEFER_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`. A folder skips and lists them.
    A SOURCE of ASCII digits that is not an existing path is a camera index (0..1023).
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
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            cap.release()
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
    cap = cv2.VideoCapture(str(p))
    if cap.isOpened():
        _refuse_large_frames(cap, f"video {s}", cap_px)
        ok, _ = cap.read()
        if ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            return VideoSource(cap, s, live=False, seekable=True)
    cap.release()
    raise EdgeferError(f"unsupported source {s}: not a readable image or video")
