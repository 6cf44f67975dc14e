"""Emotion classification of face crops: one artifact, one batched backend call per frame.

The layer below both single classifiers and ensembles: :class:`Classifier` runs one artifact;
:mod:`edgefer.ensemble` composes several; :mod:`edgefer.classify` opens whichever a reference
names. The manifest's class activation map entry (``extra.cam``) is read here because the
classifier returns the maps from the same inference (:mod:`edgefer.explain` draws them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .align import crop_faces, layout, resize_faces
from .artifact import DEFAULT_CLASSIFIER
from .backends import open_backend
from .errors import EdgeferError

#: the manifest key (``extra.cam``) that declares a class activation map output
CAM_KEY = "cam"


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cam_output(manifest) -> str | None:
    """Name of the CAM output a manifest declares (``extra.cam.output``), or None."""
    entry = (manifest.extra or {}).get(CAM_KEY)
    if isinstance(entry, dict) and entry.get("output"):
        return str(entry["output"])
    return None


class Classifier:
    """One classifier artifact on one backend, fed straight from frames or from dataset crops.

    The base of every classifier: :class:`edgefer.ensemble.EnsembleClassifier` is one made of
    several of these, and :class:`edgefer.classify.EmotionClassifier` (what callers use) opens
    either from an artifact reference.

    A classifier whose manifest declares a class activation map output (``extra.cam``, see
    :mod:`edgefer.explain`) also returns the maps: ``probs, cams = clf.predict(batch, with_cam=True)``
    with ``cams`` (K, C, h, w) float32 in logit units (their spatial mean is the logits).
    """

    def __init__(self, artifact: Any = DEFAULT_CLASSIFIER, backend: str = "auto", **backend_options: Any):
        art = getattr(self, "_artifact", None) or artifact
        self.backend = open_backend(art, backend, kind="classifier", **backend_options)
        self.manifest = self.backend.manifest
        self.spec = self.manifest.input
        self.classes: list[str] = list(self.manifest.classes)
        self.crop = self.manifest.crop or {}
        self._buf: np.ndarray | None = None
        self._cam_index = self._find_cam_output()
        self._probs_index = next(i for i in range(max(1, len(self.backend.output_names))) if i != self._cam_index)
        from .selfcheck import check_classifier  # one synthetic inference: input fits, outputs finite
        check_classifier(self)

    def _find_cam_output(self) -> int | None:
        name = cam_output(self.manifest)
        names = list(self.backend.output_names)
        if name is None:
            return None
        if name in names:
            return names.index(name)
        # some converters rename outputs; a two-output graph whose manifest declares a CAM has it second
        return 1 if len(names) == 2 else None

    @property
    def has_cam(self) -> bool:
        """Whether one inference also yields class activation maps (``predict(..., with_cam=True)``)."""
        return self._cam_index is not None

    def predict(self, batch: np.ndarray, with_cam: bool = False):
        """Probabilities (K, C) float32 for a batch already laid out as the manifest's input.

        With ``with_cam=True``: ``(probs, cams)``, cams (K, C, h, w) from the same inference.
        """
        if with_cam and not self.has_cam:
            raise EdgeferError(f"{self.backend.artifact.describe()} has no class activation map output")
        if len(batch) == 0:
            empty = np.zeros((0, len(self.classes)), np.float32)
            if with_cam:
                shape = (self.manifest.extra or {}).get("cam", {}).get("shape") or [len(self.classes), 1, 1]
                return empty, np.zeros((0, *shape), np.float32)
            return empty
        outs = self.backend.run(batch)
        out = np.asarray(outs[self._probs_index], np.float32).reshape(len(batch), -1)
        probs = softmax(out) if self.manifest.output == "logits" else out
        if with_cam:
            return probs, np.asarray(outs[self._cam_index], np.float32)
        return probs

    def crops(self, frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None, color_cache: dict | None = None) -> np.ndarray:
        """Aligned crops of the faces in ``frame``, reusing one buffer across frames."""
        k = len(boxes)
        if self._buf is None or self._buf.shape[0] < k:
            h, w = self.spec.size
            self._buf = np.empty((max(2 * k, 8), h, w, self.spec.channels), np.uint8)
        return crop_faces(frame, boxes, landmarks, self.spec, self.crop, out=self._buf, color_cache=color_cache)

    def face_crops(self, frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None,
                   color_cache: dict | None = None) -> np.ndarray:
        """uint8 NHWC crops (K, H, W, C), exactly the pixels the classifier sees, before layout.

        A view of a buffer reused by the next call: copy what must outlive it. The adaptive loop
        compares these with each face's previous crop and classifies only those that changed
        (:meth:`predict_faces`); ``predict_faces(face_crops(...))`` equals ``self(...)``.
        """
        k = len(boxes)
        if self._buf is None or self._buf.shape[0] < k:
            h, w = self.spec.size
            self._buf = np.empty((max(2 * k, 8), h, w, self.spec.channels), np.uint8)
        return crop_faces(frame, boxes, landmarks, self.spec, self.crop, out=self._buf, color_cache=color_cache, raw=True)

    def predict_faces(self, crops: np.ndarray, with_cam: bool = False):
        """:meth:`predict` on uint8 NHWC crops from :meth:`face_crops` (laid out here)."""
        return self.predict(layout(crops, self.spec), with_cam=with_cam)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None = None, color_cache: dict | None = None,
                 with_cam: bool = False):
        return self.predict(self.crops(frame, boxes, landmarks, color_cache), with_cam=with_cam)

    def predict_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities for dataset face images (already cropped, any size): accuracy checks."""
        outs = [self.predict(resize_faces(images[i : i + batch_size], self.spec)) for i in range(0, len(images), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, len(self.classes)), np.float32)
