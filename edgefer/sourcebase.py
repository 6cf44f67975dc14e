"""The frame source protocol: :class:`Frame`, :class:`Source`, the bounded hand-over, in-memory frames.

Kept apart from :mod:`edgefer.sources` (which opens what the user named) so that the capture
reader (:mod:`edgefer.capture`) and the sources module can both build on it without importing
each other.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np


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

