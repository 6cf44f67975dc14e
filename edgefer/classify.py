"""Opening a classifier: one artifact or an ensemble manifest, whichever a reference names.

This module sits above both kinds of classifier: :class:`edgefer.classifier.Classifier` (one
artifact on one backend) and :class:`edgefer.ensemble.EnsembleClassifier` (several of those,
combined). Callers that take "a classifier" from the user (``edgefer run --classifier``, the
bench, ``edgefer info``) construct :class:`EmotionClassifier` and get the right one; neither
kind needs to know the other exists, and the backend registry knows backends only.
"""

from __future__ import annotations

from typing import Any

from .artifact import DEFAULT_CLASSIFIER, Artifact, load
from .backends import Backend, open_backend
from .classifier import CAM_KEY, Classifier, cam_output, softmax
from .ensemble import EnsembleClassifier

__all__ = ["CAM_KEY", "Classifier", "EmotionClassifier", "EnsembleClassifier", "cam_output", "open_model", "softmax"]


class EmotionClassifier(Classifier):
    """A classifier artifact on a backend; an ensemble manifest (kind ``ensemble``) opens as an
    :class:`~edgefer.ensemble.EnsembleClassifier` instead: same methods, combined probabilities.

    The artifact is loaded (and checksummed) once, here, to read its kind.
    """

    def __new__(cls, artifact: Any = DEFAULT_CLASSIFIER, backend: str = "auto", **backend_options: Any):
        art = artifact if isinstance(artifact, Artifact) else load(artifact, kind="classifier")
        if cls is EmotionClassifier and art.manifest.kind == "ensemble":
            return EnsembleClassifier(art, backend, **backend_options)
        obj = super().__new__(cls)
        obj._artifact = art
        return obj


def open_model(ref: Any, backend: str = "auto", kind: str | None = None, **options: Any) -> Backend:
    """``edgefer.load``: an artifact on a backend (:func:`edgefer.backends.open_backend`), or for an
    ensemble manifest the ensemble's backend face (``run`` gives the combined probabilities,
    ``info`` the members), its members each on the backend that runs them."""
    art = ref if isinstance(ref, Artifact) else load(ref, kind=kind)
    if art.manifest.kind == "ensemble":
        return EnsembleClassifier(art, backend, **options).backend  # type: ignore[return-value]
    return open_backend(art, backend, kind=kind, **options)
