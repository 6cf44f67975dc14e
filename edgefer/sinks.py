"""Outputs of a run: annotated frames (video, image, folder), JSON Lines events, a window.

Every sink writes as it goes (events are flushed per frame, video frames appended), so an
interrupted or failing run keeps what was processed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .align import shrink
from .errors import EdgeferError
from .sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:
    from .results import FrameResult

log = logging.getLogger(__name__)

# one colour per emotion (BGR), so a label reads at a glance
COLORS = {
    "angry": (40, 40, 230),
    "anger": (40, 40, 230),
    "disgust": (40, 140, 40),
    "fear": (160, 60, 160),
    "happy": (40, 200, 250),
    "sad": (200, 120, 40),
    "surprise": (230, 200, 40),
    "neutral": (200, 200, 200),
    "calm": (200, 200, 200),
    "contempt": (90, 90, 160),
}


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(box: tuple[int, int, int, int], size: tuple[int, int], frame: tuple[int, int],
                taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Where a label of ``size`` (w, h) goes for a face ``box``: above it, else below it, always inside
    the frame (w, h), moved away from labels already ``taken`` where a free place exists nearby."""
    x1, y1, x2, y2 = box
    tw, th = size
    fw, fh = frame
    lx = int(min(max(x1, 0), max(fw - tw, 0)))
    above = y1 - th
    below = y2
    candidates = []
    for y in (above, below):
        for step in range(0, 6):  # the preferred place, then nudged up (above) or down (below)
            yy = y - step * th if y == above else y + step * th
            candidates.append(int(min(max(yy, 0), max(fh - th, 0))))
    rect = (lx, candidates[0], lx + tw, candidates[0] + th)
    for yy in candidates:
        r = (lx, yy, lx + tw, yy + th)
        if not any(_overlaps(r, t) for t in taken):
            rect = r
            break
    taken.append(rect)
    return rect


def annotate(image: np.ndarray, result: "FrameResult", fps: float | None = None) -> np.ndarray:
    """Draw box, emotion, confidence and track id of every face (in place, returns the image).

    Labels stay inside the frame and, where a free place exists near their face, do not cover one
    another (crowds). ``fps``: burn a processing-rate counter in the corner (None: none).
    """
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    thick = max(1, round(h / 360))
    fscale = max(0.4, h / 1100)
    taken: list[tuple[int, int, int, int]] = []
    labels = []
    for f in result.faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        col = COLORS.get(f.emotion, (0, 220, 0))
        cv2.rectangle(img, (x1, y1), (x2, y2), col, thick, cv2.LINE_AA)
        label = f"{f.emotion} {f.confidence:.2f}  #{f.track}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fscale, thick)
        labels.append(((x1, y1, x2, y2), (tw + 4, th + base + 2), label, col, base))
    # big faces first: their labels get the preferred places
    for box, size, label, col, base in sorted(labels, key=lambda L: -(L[0][2] - L[0][0])):
        lx1, ly1, lx2, ly2 = place_label(box, size, (w, h), taken)
        cv2.rectangle(img, (lx1, ly1), (lx2, ly2), col, -1)
        cv2.putText(img, label, (lx1 + 2, ly2 - base // 2 - 1), cv2.FONT_HERSHEY_SIMPLEX, fscale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(img, f"{fps:.1f} fps", (8, int(24 * fscale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, fscale, (0, 255, 0), thick, cv2.LINE_AA)
    return img


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: JSON has no NaN or Infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """Standard JSON only (``allow_nan=False``), non-finite numbers written as null."""
    return json.dumps(finite_json(obj), allow_nan=False, **kw)


class EventWriter:
    """JSON Lines, one line per frame: {"frame", "time_s", "faces": [...]} (+ "file" for images).

    Each line is written and flushed whole. When the disk fills (or any write fails) the file is
    cut back to the last whole line, so what was written stays valid JSON Lines, and the error is
    one line (exit 2).
    """

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        self.path = p
        self.lines = 0
        self._good = 0  # byte offset after the last whole line
        if str(path) == "-":
            self.f = sys.stdout
            return
        if p.parent and not p.parent.exists():
            raise EdgeferError(f"cannot write events to {p}: folder {p.parent} does not exist")
        try:
            self.f = open(p, "w", encoding="utf-8")
        except OSError as e:
            raise EdgeferError(f"cannot write events to {p}: {e.strerror}") from None

    def write(self, result: "FrameResult", **fields: Any) -> None:
        ev = result.to_event()
        if result.name and "file" not in ev:
            ev["file"] = result.name
        ev.update(fields)
        line = dumps(ev, separators=(",", ":")) + "\n"
        try:
            self.f.write(line)
            self.f.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            self._cut_back()
            raise EdgeferError(
                f"cannot write events to {self.path}: {e.strerror or e} (kept {self.lines} whole lines)"
            ) from None
        self._good += len(line.encode("utf-8"))
        self.lines += 1

    def _cut_back(self) -> None:
        if self.f is sys.stdout:
            return
        try:
            os.ftruncate(self.f.fileno(), self._good)
        except OSError:
            pass
        try:  # drop what is still buffered: it can never be written whole
            self.f = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass

    def close(self) -> None:
        if self.f is not sys.stdout:
            try:
                self.f.close()
            except OSError:
                pass


class _OpenCVWriter:
    """cv2.VideoWriter behind the writer protocol (write, release, codec). It reports no write errors."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fourcc: str):
        self.codec = {"mp4v": "MPEG-4 part 2 (mp4v)", "MJPG": "Motion JPEG"}.get(fourcc, fourcc)
        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._w.isOpened():
            raise EdgeferError(f"cannot open {path} for writing video")

    def write(self, image: np.ndarray) -> None:
        self._w.write(image)

    def release(self) -> None:
        self._w.release()


class _H264Writer:
    """H.264 (libx264, yuv420p) through PyAV's bundled FFmpeg: plays in browsers and every player,
    and, unlike cv2.VideoWriter, raises on write errors (a full disk)."""

    codec = "H.264"

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import av
        from fractions import Fraction

        self._av = av
        w, h = size
        self._pad = (w % 2, h % 2)  # yuv420p needs even sides
        try:
            self._c = av.open(str(path), mode="w")
            self._s = self._c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            self._s.width, self._s.height = w + self._pad[0], h + self._pad[1]
            self._s.pix_fmt = "yuv420p"
            # ultrafast on one thread: about OpenCV mp4v's CPU per frame (measured at 720p: 7.2 vs 6.1 ms)
            # in a smaller file (-30%); slower presets cost 1.5-2.5x the CPU for smaller files still
            self._s.codec_context.options = {"preset": "ultrafast", "crf": "23"}
            self._s.codec_context.thread_count = 1
        except (OSError, av.FFmpegError) as e:
            raise EdgeferError(f"cannot open {path} for writing video: {e}") from None
        self._n = 0
        self._failed = False

    def write(self, image: np.ndarray) -> None:
        if any(self._pad):
            image = cv2.copyMakeBorder(image, 0, self._pad[1], 0, self._pad[0], cv2.BORDER_CONSTANT, value=0)
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = self._n
        self._n += 1
        if self._failed:
            raise OSError(0, "an earlier write failed")
        try:
            for packet in self._s.encode(frame):
                self._c.mux(packet)
        except self._av.FFmpegError as e:
            self._failed = True
            raise OSError(getattr(e, "errno", None) or 0, getattr(e, "strerror", None) or str(e)) from None

    def release(self) -> None:
        try:
            # flushing the encoder after a failed write crashes libav (PyAV 18, seen with ENOSPC): only
            # close the container then, whose file the caller reports as incomplete anyway
            if not self._failed:
                for packet in self._s.encode(None):
                    self._c.mux(packet)
        except self._av.FFmpegError as e:
            self._failed = True
            raise OSError(getattr(e, "errno", None) or 0, getattr(e, "strerror", None) or str(e)) from None
        finally:
            try:
                self._c.close()
            except self._av.FFmpegError:
                pass


_H264_NOTICE = [False]


def open_video_writer(path: Path, fps: float, size: tuple[int, int]):
    """H.264 for .mp4/.m4v/.mov/.mkv where PyAV (a dependency) is importable, else OpenCV's mp4v
    with a one-time notice; Motion JPEG for .avi."""
    suffix = path.suffix.lower()
    if suffix != ".avi" and not os.environ.get("EDGEFER_MP4V"):
        try:
            import av  # noqa: F401
        except ImportError:
            if not _H264_NOTICE[0]:
                _H264_NOTICE[0] = True
                log.warning("PyAV is not installed: writing %s as MPEG-4 part 2 (mp4v), which browsers do not play; "
                            "pip install av for H.264", path.name)
        else:
            return _H264Writer(path, fps, size)
    return _OpenCVWriter(path, fps, size, AnnotatedOutput.FOURCC[suffix])


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (w, h) keeping its aspect ratio, centred on black."""
    w, h = size
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    resized = shrink(image, (nw, nh))
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized if resized.ndim == 3 else cv2.cvtColor(resized, cv2.COLOR_GRAY2BGR)
    return out


class AnnotatedOutput:
    """Where annotated frames go: a video file, one image, or a folder of images.

    A video takes the size of its first frame; later frames of another size (a folder of
    photos) are letterboxed to it and counted. After the last frame the video is reopened and
    its frame count checked, because OpenCV's writer reports no error when the disk fills.
    """

    FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
    #: below this much free space on the output's file system a video write is failing
    MIN_FREE_BYTES = 1 << 20

    def __init__(self, path: str | os.PathLike, source_kind: str, fps: float):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.writer: Any = None  # _H264Writer or _OpenCVWriter
        self.size: tuple[int, int] | None = None
        self.letterboxed = 0
        self._codec = None
        suffix = self.path.suffix.lower()
        if source_kind == "folder" and suffix in IMAGE_SUFFIXES:
            raise EdgeferError(
                f"cannot write {self.path}: a folder source writes a folder of images or one video "
                f"({', '.join(self.FOURCC)}), not one image"
            )
        if source_kind == "folder" and suffix not in VIDEO_SUFFIXES:
            self.mode = "folder"
        elif suffix in IMAGE_SUFFIXES:
            self.mode = "image"
        elif suffix in self.FOURCC:
            self.mode = "video"
        else:
            raise EdgeferError(
                f"cannot write {self.path}: use an image suffix ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                f"a video suffix ({', '.join(self.FOURCC)}) or, for a folder source, a folder"
            )
        if self.mode != "folder" and not self.path.parent.exists():
            raise EdgeferError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        if self.mode == "folder":
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise EdgeferError(f"cannot create output folder {self.path}: {e.strerror or e}") from None
        self.count = 0

    def write(self, image: np.ndarray, result: "FrameResult") -> None:
        if self.mode == "folder":
            name = Path(result.name or f"frame_{result.frame:06d}.jpg")
            self._imwrite(self.path / name.name, image)
        elif self.mode == "image":
            # an image output keeps the latest frame (one image in, one image out)
            self._imwrite(self.path, image)
        else:
            if self.writer is None:
                h, w = image.shape[:2]
                self.size = (w, h)
                self.writer = open_video_writer(self.path, self.fps, self.size)
                self._codec = self.writer.codec
            if (image.shape[1], image.shape[0]) != self.size or image.ndim != 3:
                image = letterbox(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), self.size)
                self.letterboxed += 1
            try:
                self.writer.write(image)
            except (OSError, RuntimeError) as e:
                raise EdgeferError(f"cannot write video {self.path}: {getattr(e, 'strerror', None) or e} "
                                   f"(after {self.count} frames)") from None
            self._check_space()
        self.count += 1

    def _check_space(self) -> None:
        """Stop while the file can still be finished: free space below 1 MiB or 8 frames plus the index.

        One statvfs per frame (microseconds, beside milliseconds of encoding); the average frame
        size is read off the file every 16 frames.
        """
        if self.count % 16 == 15:
            try:
                self._frame_bytes = os.stat(self.path).st_size / (self.count + 1)
            except OSError:
                pass
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return
        need = max(self.MIN_FREE_BYTES, 8 * getattr(self, "_frame_bytes", 0.0) + 32 * (self.count + 1))
        if st.f_bavail * st.f_frsize < need:
            raise EdgeferError(f"cannot write video {self.path}: no space left on the device; "
                               f"stopped after {self.count + 1} frames, which the file keeps")

    def _imwrite(self, path: Path, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(path.suffix or ".jpg", image)
        if not ok:
            raise EdgeferError(f"cannot encode {path}")
        try:
            buf.tofile(str(path))
        except OSError as e:
            raise EdgeferError(f"cannot write {path}: {e.strerror}") from None

    def describe(self) -> str:
        """What was written, for the summary: path, frames, size, and frames letterboxed."""
        if self.mode == "video" and self.size:
            extra = f", {self.letterboxed} letterboxed to fit" if self.letterboxed else ""
            codec = getattr(self.writer, "codec", None) or self._codec
            return f"{self.path} ({self.count} frames, {self.size[0]}x{self.size[1]}, {codec}{extra})"
        if self.mode == "folder":
            return f"{self.path}/ ({self.count} images)"
        return str(self.path)

    def close(self) -> None:
        """Finish the file; raise EdgeferError when the video on disk lacks frames that were written."""
        if self.writer is None:
            return
        w, self.writer = self.writer, None
        try:
            w.release()
        except (OSError, RuntimeError) as e:
            raise EdgeferError(f"cannot finish video {self.path}: {getattr(e, 'strerror', None) or e}") from None
        cap = cv2.VideoCapture(str(self.path))
        try:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        finally:
            cap.release()
        if n < self.count:
            raise EdgeferError(
                f"cannot write video {self.path}: {n} of {self.count} frames reached the file "
                "(disk full or write error)"
            )


class Display:
    def __init__(self, title: str = "edgefer"):
        self.title = title

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
