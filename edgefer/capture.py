"""The capture reader: a cv2.VideoCapture-like object (camera, file, stream) read on a background thread.

Decoding runs on a background thread that feeds a bounded queue, so decode overlaps inference
(OpenCV and PyAV release the GIL while decoding). Files never drop a frame: the reader blocks when
the queue is full. A live camera never blocks capture: when the consumer falls behind, the oldest
queued frame is dropped and counted, so results stay close to real time. A video file replayed
with ``paced=True`` releases each frame at its own time (index / fps from the start), decodes it
then, and drops it like a camera's frame when the consumer falls behind.

Inputs are untrusted. A video file with a corrupt stretch is read past it: when a read fails before
the file's frame count, the reader seeks ahead (doubling the step, then bisecting back to the first
frame that decodes), within a fixed budget of seeks and seconds, and counts what it skipped
(``decode_errors``; ``ended_early`` when nothing decodable was found before the frame count).

The capture is duck-typed: ``cv2.VideoCapture`` (cameras, streams, GStreamer, and files with
``EDGEFER_DECODER=opencv``) or :class:`edgefer.avdecode.AVCapture` (files by default), chosen by
:func:`open_video_file`. Both answer the same calls with the same meanings.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from typing import Iterator

# FFmpeg's own log lines ("moov atom not found") would follow our one-line error: keep them quiet
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .avdecode import AVCapture  # noqa: E402
from .errors import EdgeferError  # noqa: E402
from .sourcebase import Frame, Source, hand_over  # noqa: E402

# the logger keeps its old name: log lines read "WARNING edgefer.sources: ..." as before the split
log = logging.getLogger("edgefer.sources")

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


class _Capture(Source):
    """cv2.VideoCapture-backed source (camera, file, stream) read on a background thread."""

    def __init__(self, cap: cv2.VideoCapture, label: str, live: bool, queue_size: int = 4, paced: bool = False,
                 seekable: bool = False):
        super().__init__()
        self.cap = cap
        self.decoder = decoder_of(cap)  # pyav or opencv
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



# Which decoder reads video files: PyAV by default (bit-exact across CPUs for yuv420p, see
# edgefer.avdecode), OpenCV's FFmpeg reader with EDGEFER_DECODER=opencv. Cameras, network streams
# and GStreamer pipelines always use OpenCV.
DECODER_ENV = "EDGEFER_DECODER"
DECODERS = ("pyav", "opencv")


def decoder_choice(decoder: str | None = None) -> str:
    """The decoder asked for: ``decoder`` when given, else EDGEFER_DECODER, else ``pyav``."""
    raw = decoder if decoder is not None else os.environ.get(DECODER_ENV, "")
    name = raw.strip().lower() or "pyav"
    if name not in DECODERS:
        raise EdgeferError(f"{DECODER_ENV} must be one of {', '.join(DECODERS)}, not {raw!r}")
    return name


def open_video_file(path: str, decoder: str | None = None):
    """An opened capture for a video file, or None when neither decoder can open it.

    ``pyav`` (the default) falls back to OpenCV when PyAV cannot open the file (or is missing);
    ``opencv`` uses OpenCV only. The capture's ``decoder`` attribute (PyAV) or its absence
    (OpenCV) tells which one read it; see :func:`decoder_of`.
    """
    if decoder_choice(decoder) == "pyav":
        cap = AVCapture(path)
        if cap.isOpened():
            return cap
        log.debug("%s: PyAV cannot open it (%s); trying OpenCV", path, cap.why)
    cap = cv2.VideoCapture(str(path))
    if cap.isOpened():
        return cap
    cap.release()
    return None


def decoder_of(cap) -> str:
    """``pyav`` or ``opencv``: which decoder a capture reads with."""
    return getattr(cap, "decoder", "opencv")


def decode_only_fps(path: str, max_frames: int | None = None, decoder: str | None = None) -> tuple[float, int]:
    """The ceiling for a file: frames per second of a bare read loop, and frames read.

    Reads with the decoder a run of the same file uses (:func:`open_video_file`: EDGEFER_DECODER,
    PyAV by default, with the same fallback), BGR conversion included, so the "ratio to
    decode-only" compares like with like.
    """
    cap = open_video_file(str(path), decoder)
    if cap is None:
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
