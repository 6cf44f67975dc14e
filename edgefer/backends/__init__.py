"""Backends: one small protocol over ONNX Runtime, OpenVINO, TensorRT and Core ML.

A backend loads an artifact, says what it really runs (target, precision, device), and runs a
batch of inputs already laid out as the manifest's ``input`` spec, returning the graph outputs
as numpy arrays in a fixed order. ``open_backend`` picks one by name or ``auto``.

``auto``: the runtimes of ``AUTO_ORDER`` that can run the artifact's target; where more than one
is installed (ONNX Runtime and OpenVINO both run ``.onnx``), the faster on this machine, measured
once and cached (:mod:`edgefer.backends.autoselect`); ``EDGEFER_AUTO=first`` or the option
``auto="first"`` takes the first installed one instead. ``info()["auto"]`` says what was chosen
and why. A backend named explicitly never measures.
"""

from __future__ import annotations

from typing import Any

from ..artifact import Artifact, load
from ..errors import EdgeferError
from .autoselect import auto_mode, select
from .base import MAX_THREADS, Backend, check_threads
from .registry import ALIASES, AUTO_ORDER, REGISTRY, available, construct as _construct

__all__ = ["ALIASES", "AUTO_ORDER", "MAX_THREADS", "REGISTRY", "Backend", "available", "check_threads", "open_backend"]


def open_backend(ref: Any, backend: str = "auto", kind: str | None = None, **options: Any) -> Backend:
    """Load an artifact (reference or :class:`Artifact`) on the named backend.

    One model file on one runtime: an ensemble manifest (several models) is refused here and
    opened by :func:`edgefer.classify.open_model` (``edgefer.load``) or
    :class:`edgefer.classify.EmotionClassifier`, which sit above both.
    """
    art = ref if isinstance(ref, Artifact) else load(ref, kind=kind)
    if art.manifest.kind == "ensemble":
        raise EdgeferError(f"{art.describe()} is an ensemble of classifiers, not one model: open it with "
                           "edgefer.load() or edgefer.classify.EmotionClassifier")
    name = ALIASES.get(backend, backend)
    target = art.manifest.target
    auto_option = options.pop("auto", None)  # the auto rule; an explicit backend ignores it
    if name == "auto":
        mode = auto_mode(auto_option)
        candidates = AUTO_ORDER.get(target, ())
        if mode != "first" and len(candidates) > 1:
            chosen = select(art, candidates, mode, options)
            if chosen is not None:
                return chosen
        for cand in candidates:
            ok, _ = available(cand)
            if ok:
                name = cand
                break
        else:
            _, why = available(candidates[0]) if candidates else (False, "no runtime is registered for it")
            raise EdgeferError(f"no installed backend runs {target} artifacts ({art.describe()}): {why}")
        b = _construct(name, target, art, options)
        rule = "first installed" if mode == "first" else "only installed"
        b.auto = {"chosen": name, "rule": f"{rule} of {', '.join(candidates)}"}
        return b
    return _construct(name, target, art, options, backend)
