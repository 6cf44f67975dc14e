"""Outputs of a run: annotated frames (video, image, folder), JSON Lines events, a window.

Every sink writes as it goes (events are flushed per frame, video frames appended), so an
interrupted or failing run keeps what was processed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .errors import EdgeferError
from .sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES

if TYPE_CHECKING:
    from .pipeline import FrameResult

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


def annotate(image: np.ndarray, result: "FrameResult", fps: float | None = None) -> np.ndarray:
    """Draw box, emotion, confidence and track id of every face (in place, returns the image)."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h = img.shape[0]
    thick = max(1, round(h / 360))
    fscale = max(0.4, h / 1100)
    for f in result.faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        col = COLORS.get(f.emotion, (0, 220, 0))
        cv2.rectangle(img, (x1, y1), (x2, y2), col, thick, cv2.LINE_AA)
        label = f"{f.emotion} {f.confidence:.2f}  #{f.track}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fscale, thick)
        ty = y1 - 4 if y1 - th - base - 4 > 0 else y2 + th + 4
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw + 4, ty + base // 2), col, -1)
        cv2.putText(img, label, (x1 + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, fscale, (0, 0, 0), thick, cv2.LINE_AA)
    if fps is not None:
        cv2.putText(img, f"{fps:.1f} fps", (8, int(24 * fscale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, fscale, (0, 255, 0), thick, cv2.LINE_AA)
    return img


class EventWriter:
    """JSON Lines, one line per frame: {"frame", "time_s", "faces": [...]}."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if str(path) == "-":
            self.f = sys.stdout
        else:
            if p.parent and not p.parent.exists():
                raise EdgeferError(f"cannot write events to {p}: folder {p.parent} does not exist")
            try:
                self.f = open(p, "w", encoding="utf-8")
            except OSError as e:
                raise EdgeferError(f"cannot write events to {p}: {e.strerror}") from None
        self.lines = 0

    def write(self, result: "FrameResult") -> None:
        self.f.write(json.dumps(result.to_event(), separators=(",", ":")) + "\n")
        self.f.flush()
        self.lines += 1

    def close(self) -> None:
        if self.f is not sys.stdout:
            self.f.close()


class AnnotatedOutput:
    """Where annotated frames go: a video file, one image, or a folder of images."""

    FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}

    def __init__(self, path: str | os.PathLike, source_kind: str, fps: float):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.writer: cv2.VideoWriter | None = None
        suffix = self.path.suffix.lower()
        if source_kind == "folder" and suffix not in VIDEO_SUFFIXES:
            self.mode = "folder"
            self.path.mkdir(parents=True, exist_ok=True)
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
                fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()])
                self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (w, h))
                if not self.writer.isOpened():
                    raise EdgeferError(f"cannot open {self.path} for writing video")
            self.writer.write(image)
        self.count += 1

    def _imwrite(self, path: Path, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(path.suffix or ".jpg", image)
        if not ok:
            raise EdgeferError(f"cannot encode {path}")
        try:
            buf.tofile(str(path))
        except OSError as e:
            raise EdgeferError(f"cannot write {path}: {e.strerror}") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def screen_available() -> bool:
    """Whether a window can be shown: a display exists and OpenCV was built with a GUI."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        info = cv2.getBuildInformation()
    except Exception:
        return False
    gui = [ln for ln in info.splitlines() if ln.strip().startswith("GUI:")]
    return bool(gui) and "NONE" not in gui[0].upper()


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
