"""Emotion classification of face crops: one batched backend call per frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from .align import crop_faces, resize_faces
from .artifact import DEFAULT_CLASSIFIER
from .backends import open_backend


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class EmotionClassifier:
    """A classifier artifact on a backend, fed straight from frames or from dataset crops."""

    def __init__(self, artifact: Any = DEFAULT_CLASSIFIER, backend: str = "auto", **backend_options: Any):
        self.backend = open_backend(artifact, backend, kind="classifier", **backend_options)
        self.manifest = self.backend.manifest
        self.spec = self.manifest.input
        self.classes: list[str] = list(self.manifest.classes)
        self.crop = self.manifest.crop or {}
        self._buf: np.ndarray | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (K, C) float32 for a batch already laid out as the manifest's input."""
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        out = self.backend.run(batch)[0]
        out = np.asarray(out, np.float32).reshape(len(batch), -1)
        return softmax(out) if self.manifest.output == "logits" else out

    def crops(self, frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None, color_cache: dict | None = None) -> np.ndarray:
        """Aligned crops of the faces in ``frame``, reusing one buffer across frames."""
        k = len(boxes)
        if self._buf is None or self._buf.shape[0] < k:
            h, w = self.spec.size
            self._buf = np.empty((max(2 * k, 8), h, w, self.spec.channels), np.uint8)
        return crop_faces(frame, boxes, landmarks, self.spec, self.crop, out=self._buf, color_cache=color_cache)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None = None, color_cache: dict | None = None) -> np.ndarray:
        return self.predict(self.crops(frame, boxes, landmarks, color_cache))

    def predict_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities for dataset face images (already cropped, any size): accuracy checks."""
        outs = [self.predict(resize_faces(images[i : i + batch_size], self.spec)) for i in range(0, len(images), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)
