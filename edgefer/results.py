"""What the video loop returns per frame: :class:`FrameResult` holding one :class:`Face` per face.

Plain data, below everything that makes or reads it: the pipeline (:mod:`edgefer.pipeline`)
fills it, explanation (:mod:`edgefer.explain`), the sinks and the publisher draw or send it, so
none of those needs the pipeline to name the type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Face:
    box: list[float]
    score: float
    track: int
    emotion: str
    confidence: float
    probs: dict[str, float]
    landmarks: list[list[float]] | None = None
    # --explain: the map of the labelled class in [0, 1] (crop coordinates, h x w), the
    # frame -> crop affine it is warped back with, and the crop size (edgefer.explain)
    heat: np.ndarray | None = field(default=None, repr=False)
    affine: np.ndarray | None = field(default=None, repr=False)
    crop_size: tuple[int, int] | None = None

    def to_event(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "track": self.track,
            "emotion": self.emotion,
            "confidence": round(self.confidence, 4),
            "probs": {k: round(v, 4) for k, v in self.probs.items()},
        }


@dataclass
class FrameResult:
    frame: int
    time_s: float
    faces: list[Face]
    image: np.ndarray | None = None
    name: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        return {"frame": self.frame, "time_s": round(self.time_s, 4), "faces": [f.to_event() for f in self.faces]}
