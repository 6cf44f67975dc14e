"""Load-time self-check: one small inference before a model is trusted with frames.

A manifest can be valid and its checksums right while the model is still wrong for edgefer:
weights that are NaN or Inf (every answer garbage, and bare ``NaN`` in event JSON), an input
colour whose channel count is not the graph's, prior boxes that do not match the detector's
heads. Each of those shows on the first inference, so the detector and the classifier run one
when they are constructed (and ``edgefer info`` constructs them): a batch of one synthetic
face, or one small synthetic frame, costing about a millisecond. Any failure is one line
(:class:`EdgeferError`, exit 2) naming the artifact, before the first frame is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import EdgeferError

#: side of the synthetic frame the detector check runs on, in multiples of its largest stride
DETECTOR_STRIDES = 4


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


def sample_image(h: int, w: int, channels: int) -> np.ndarray:
    """A smooth, deterministic uint8 image (h, w, channels): a lit oval on a gradient.

    Not all zeros: a constant input can hide a broken path (a zero product times NaN weights
    is still NaN, but a degenerate normalisation or a mask can hide behind a flat image).
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    r = ((yy - cy) / max(h / 2.0, 1.0)) ** 2 + ((xx - cx) / max(w / 2.0, 1.0) * 1.25) ** 2
    img = 60.0 + 120.0 * np.exp(-2.0 * r) + 40.0 * xx / max(w - 1, 1)
    out = np.clip(img, 0, 255).astype(np.uint8)[..., None]
    if channels == 1:
        return out
    return np.concatenate([out, np.clip(out.astype(np.int16) + 10, 0, 255).astype(np.uint8), out // 2 + 40], axis=2)


def graph_input_shape(backend: Any) -> list[int | None] | None:
    """The graph's input shape as the runtime reports it (None for a dynamic axis), or None
    when this backend cannot say (the inference then catches a misfit)."""
    try:
        sess = getattr(backend, "session", None)  # ONNX Runtime
        if sess is not None:
            return [d if isinstance(d, int) else None for d in sess.get_inputs()[0].shape]
        compiled = getattr(backend, "compiled", None)  # OpenVINO
        if compiled is not None:
            ps = compiled.inputs[0].get_partial_shape()
            if ps.rank.is_dynamic:
                return None
            return [d.get_length() if d.is_static else None for d in ps]
        engine = getattr(backend, "engine", None)  # TensorRT
        if engine is not None:
            return [int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(backend.manifest.input.name)]
    except Exception:  # a runtime that cannot report shapes: the inference below decides
        return None
    return None


def check_channels(backend: Any) -> None:
    """Refuse a manifest whose input colour does not fit the graph's channel count."""
    spec = backend.manifest.input
    shape = graph_input_shape(backend)
    if not shape or len(shape) != 4:
        return
    n = shape[3] if spec.layout == "NHWC" else shape[1]
    if n is not None and n != spec.channels:
        raise EdgeferError(
            f"{backend.artifact.describe()} does not fit its manifest: input.color {spec.color!r} means "
            f"{spec.channels} channel{'s' if spec.channels > 1 else ''} ({spec.layout}), the graph's input has {n}"
        )


def _run(backend: Any, batch: np.ndarray, what: str) -> list[np.ndarray]:
    try:
        outs = backend.run(batch)
    except EdgeferError:
        raise
    except Exception as e:  # runtimes raise their own types; the user gets one line
        raise EdgeferError(f"{backend.artifact.describe()}: one inference on {what} failed: {_one_line(e)}") from None
    return [np.asarray(o) for o in outs]


def require_finite(outputs: list[np.ndarray], names: list[str], who: str, what: str) -> None:
    """Refuse outputs holding NaN or Inf (weights or arithmetic gone non-finite)."""
    for i, o in enumerate(outputs):
        if o.dtype.kind in "fc" and not np.isfinite(o).all():
            bad = int(o.size - np.isfinite(o).sum())
            name = names[i] if i < len(names) else f"#{i}"
            raise EdgeferError(
                f"{who}: output {name!r} has {bad} non-finite value{'s' if bad > 1 else ''} (NaN/Inf) on {what}; "
                "the model's weights or arithmetic are broken, refusing it"
            )


def check_classifier(clf: Any) -> None:
    """One batch-1 inference of a synthetic face through ``clf``'s backend: the input fits, the
    outputs are finite, and the probability output has one value per class."""
    from .align import layout

    b = clf.backend
    spec = clf.spec
    check_channels(b)
    h, w = spec.size
    what = f"a synthetic {h}x{w} {spec.color} face"
    outs = _run(b, layout(sample_image(h, w, spec.channels)[None], spec), what)
    who = b.artifact.describe()
    require_finite(outs, list(b.output_names), who, what)
    if clf._probs_index >= len(outs):
        raise EdgeferError(f"{who} does not fit its manifest: the graph has {len(outs)} outputs")
    n = outs[clf._probs_index].size
    if n != len(clf.classes):
        raise EdgeferError(f"{who} does not fit its manifest: the graph gives {n} values per face, the manifest lists "
                           f"{len(clf.classes)} classes")


def check_detector(det: Any) -> None:
    """One inference of a small synthetic frame through ``det``: the input fits, the outputs
    are finite, and the manifest's prior boxes match the heads' anchor count."""
    b = det.backend
    check_channels(b)
    side = int(min(max(32, max(det.steps) * DETECTOR_STRIDES), 1024))
    frame = sample_image(side, side, 3)
    what = f"a synthetic {side}x{side} frame"
    blob, scale = det.preprocess(frame)
    outs = _run(b, blob, what)
    who = b.artifact.describe()
    require_finite(outs, list(b.output_names), who, what)
    if len(outs) < 3:
        raise EdgeferError(f"{who} does not fit its manifest: a RetinaFace detector has 3 outputs "
                           f"(boxes, scores, landmarks), the graph has {len(outs)}")
    hw = blob.shape[1:3] if det.spec.layout == "NHWC" else blob.shape[2:4]
    try:
        det.postprocess(outs, hw, scale, frame.shape[:2])
    except EdgeferError:
        raise
    except Exception as e:
        raise EdgeferError(f"{who} does not fit its manifest: decoding its outputs failed: {_one_line(e)}") from None
