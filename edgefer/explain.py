"""Heatmaps on the device: the in-graph class activation map (CAM), overlaid on each face.

Why not Grad-CAM here: it needs gradients, which no deployed engine has (and torch is not a
runtime dependency). A classifier that ends in global average pooling and a linear map (or a
class-map convolution, as mini-XCEPTION) has an exact explanation that is a plain tensor of
the graph: :mod:`edgefer.export.cam` exports it as a second output ``cam`` (N, C, h, w) whose
spatial mean is the logits, recorded in the manifest as ``extra.cam``. It comes out of the same
single inference as the probabilities, on every backend that runs the graph; Grad-CAM on the
torch model (``edgefer explain --classifier CHECKPOINT``) is the reference it is checked
against (``edgefer.train.gradcam``).

The bundled mini-XCEPTION ships a CAM twin (``mini-xception-cam``: same weights, same
probabilities, one more output) as a second file rather than a second output of the main
graph, so normal inference keeps its single output; ``--explain`` swaps the twin in. Any other
artifact needs its own CAM export: the command that made it with ``--cam`` added (``edgefer
export MODEL --cam ...``, :func:`cam_export_advice` writes it out); exports of that artifact to
other precisions and backends keep the output.

What is drawn: the map of the class shown on the face's label, min-max scaled over the face
(relative evidence: where the model looked *for that class*), upsampled bilinearly to the crop
and warped back into the frame through the inverse of the crop's own affine transform, so the
heat lands on the pixels the classifier saw, rotation included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .align import DEFAULT_CROP, face_affine
from .artifact import ASSETS, BUNDLED, Artifact, load
from .classifier import CAM_KEY, Classifier, cam_output  # noqa: F401  (CAM_KEY, cam_output: read here too)
from .classify import EmotionClassifier
from .errors import EdgeferError
from .results import FrameResult
#: zoo architectures whose head has no exact in-graph CAM (flatten -> linear, or not linear after
#: the pool), as measured by ``python -m edgefer.export.cam --list``; for them the advice is Grad-CAM
NO_CAM_ARCHS = ("emotorch-baseline", "emotorch-enhanced-v2", "deep-emotion", "mobilenetv3-small")
#: blend weight of the heat colour over the face (0: invisible, 1: opaque)
ALPHA = 0.45
# OpenCV's JET colour map as a 256-entry BGR table, built once: cv2.applyColorMap rebuilds its
# table on every call (0.3-0.45 ms here, more than the rest of a small face's overlay)
JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET).reshape(256, 3)


def cam_twin(art: Artifact) -> Artifact | None:
    """The bundled CAM twin of a bundled classifier (``mini-xception`` -> ``mini-xception-cam``)."""
    if art.manifest_path is None or art.manifest_path.parent.resolve() != ASSETS.resolve():
        return None
    for name, rel in BUNDLED.items():
        if rel == art.manifest_path.name and f"{name}-cam" in BUNDLED:
            return load(f"{name}-cam", kind="classifier")
    return None


def cam_classifier(ref: Any, backend: str = "auto", **backend_options: Any) -> EmotionClassifier:
    """A classifier that outputs CAMs: ``ref`` itself when it has the output, else its bundled twin.

    Raises a one-line :class:`EdgeferError` naming the export command when there is neither.
    """
    art = ref if isinstance(ref, Artifact) else load(ref, kind="classifier")
    if art.manifest.kind == "ensemble":
        raise EdgeferError(f"{art.describe()} is an ensemble: heatmaps come from single classifiers; "
                           "pass one member with --classifier to explain it")
    if cam_output(art.manifest) is None:
        twin = cam_twin(art)
        if twin is None:
            raise EdgeferError(f"{art.describe()} has no class activation map output; {cam_export_advice(art, ref)}")
        art = twin
    clf = EmotionClassifier(art, backend=backend, **backend_options)
    if not clf.has_cam:
        raise EdgeferError(f"{art.describe()} declares a '{cam_output(art.manifest)}' output but the graph on "
                           f"{clf.backend.name} has none (outputs: {', '.join(clf.backend.output_names)})")
    return clf


def cam_export_command(art: Artifact, ref: Any = None) -> str | None:
    """The ``edgefer export ... --cam`` command that rebuilds ``art`` with a CAM output, or None.

    Preferably the command recorded in the manifest (same source, target, precision and
    calibration) with ``--cam`` added and the output beside the artifact; else one built from the
    recorded source; else, for an FP32 ONNX artifact of a zoo architecture, the artifact itself
    with ``--cam``; None when nothing says where the torch weights are.
    """
    import shlex

    m = art.manifest
    where = str(ref) if ref is not None and not isinstance(ref, Artifact) else str(art.root)
    if Path(where).is_file():  # a manifest or model file: the advice names its folder
        where = str(Path(where).parent)
    out = where.rstrip("/\\") + "-cam"
    bundled = [n for n, rel in BUNDLED.items() if art.manifest_path is not None
               and art.manifest_path.parent.resolve() == ASSETS.resolve() and rel == art.manifest_path.name]
    if bundled:  # a bundled model without a twin (edgenet-fast): its torch weights are known
        return f"edgefer export {bundled[0]} --cam -o {shlex.quote(Path(out).name)}"
    prov = m.provenance or {}
    cmd = prov.get("command")
    if isinstance(cmd, str) and cmd.startswith("edgefer export "):
        try:
            words = shlex.split(cmd)
        except ValueError:
            words = []
        if len(words) >= 3 and "--cam" not in words:
            keep: list[str] = []
            skip = False
            for w in words:
                if skip:
                    skip = False
                    continue
                if w in ("-o", "--output", "--json"):
                    skip = w != "--json"
                    continue
                if w.startswith("--output="):
                    continue
                keep.append(w)
            return " ".join(shlex.quote(w) for w in keep + ["--cam", "-o", out])
    src = prov.get("source") if isinstance(prov.get("source"), dict) else {}
    src_ref = src.get("ref") if isinstance(src.get("ref"), str) else None
    if src_ref:
        parts = ["edgefer", "export", src_ref, "--cam", "--target", m.target]
        if m.precision == "fp16":
            parts.append("--fp16")
        elif m.precision == "int8":
            calib = (m.calibration or {}).get("source")
            parts += ["--int8", "--calib", str(calib) if calib else "DATA"]
        return " ".join(shlex.quote(w) for w in parts + ["-o", out])
    if m.target == "onnx" and m.precision == "fp32" and m.arch:  # its zoo module may rebuild it in torch
        return " ".join(shlex.quote(w) for w in ["edgefer", "export", where, "--cam", "-o", out])
    return None


def cam_export_advice(art: Artifact, ref: Any = None) -> str:
    """One sentence: how to get heatmaps from ``art`` (a command that works, or why there is none)."""
    m = art.manifest
    if m.arch in NO_CAM_ARCHS:
        return (f"its architecture {m.arch} has no exact in-graph map (the head is not global average pooling + "
                "linear); use Grad-CAM on its torch checkpoint: edgefer explain IMAGE --classifier CHECKPOINT.pth")
    cmd = cam_export_command(art, ref)
    if cmd is None:
        return ("export it again from its checkpoint with the map added: edgefer export CHECKPOINT.pth --cam "
                f"--target {m.target}" + {"fp16": " --fp16", "int8": " --int8 --calib DATA"}.get(m.precision, "")
                + " -o DIR, then pass --classifier DIR")
    out = shlex_last(cmd)
    return f"export it with the map added: `{cmd}`, then pass --classifier {out}"


def shlex_last(cmd: str) -> str:
    """The last word of a shell command (the output folder of the advice)."""
    import shlex

    return shlex.split(cmd)[-1]


# ----------------------------------------------------------------------------- maps
def normalise(m: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1] (a flat map becomes all zeros: nothing stands out)."""
    m = np.asarray(m, np.float32)
    lo, hi = float(m.min()), float(m.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-6:
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def face_affines(classifier: Classifier, boxes: np.ndarray, landmarks: np.ndarray | None) -> list[np.ndarray]:
    """The frame -> crop matrices the classifier used for each face (to warp heat back)."""
    return crop_affines(classifier.crop, classifier.spec.size, boxes, landmarks)


def crop_affines(crop: dict | None, size, boxes: np.ndarray, landmarks: np.ndarray | None) -> list[np.ndarray]:
    """The frame -> crop matrices of :func:`edgefer.align.crop_faces` for ``crop`` and input ``size``."""
    crop = {**DEFAULT_CROP, **(crop or {})}
    size = (int(size[0]), int(size[1]))
    align = crop.get("align", "eyes") == "eyes"
    return [face_affine(boxes[i], None if landmarks is None else landmarks[i], size, float(crop["scale"]), align)
            for i in range(len(boxes))]


def where(heat: np.ndarray) -> str:
    """Where a map peaks, in words relative to the face crop ("upper left", "centre", ...)."""
    h, w = heat.shape
    i, j = np.unravel_index(int(np.argmax(heat)), heat.shape)
    v = ("upper", "middle", "lower")[min(2, int(3 * (i + 0.5) / h))]
    u = ("left", "centre", "right")[min(2, int(3 * (j + 0.5) / w))]
    if v == "middle" and u == "centre":
        return "centre"
    return f"{v} {u}" if v != "middle" else f"middle {u}"


def overlay(image: np.ndarray, heat: np.ndarray, affine: np.ndarray, crop_size: tuple[int, int], alpha: float = ALPHA) -> None:
    """Blend a (h, w) map in [0, 1], given in crop coordinates, onto ``image`` (BGR, in place).

    Only the bounding box of the face's crop square is touched, in three OpenCV passes over
    uint8: the map is upsampled and coloured at up to half the box's size (cheap), one
    nearest-neighbour ``warpAffine`` with a transparent border carries the colours into a copy
    of the box (pixels outside the rotated square keep the image's own values), and
    ``addWeighted`` blends the copy back, which leaves those outside pixels unchanged
    (x (1 - a) + x a = x). Nearest-neighbour from a map at half the box's resolution is as
    smooth to the eye as bilinear from the crop's 64 px, and 3-7x cheaper: the warp was 2.7 ms
    of a 480 x 480 box with bilinear, 0.4 ms with this.
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    inv = cv2.invertAffineTransform(affine.astype(np.float64))
    corners = np.array([[0, 0, 1], [cw, 0, 1], [0, ch, 1], [cw, ch, 1]], np.float64) @ inv.T
    H, W = image.shape[:2]
    x0, y0 = max(0, int(np.floor(corners[:, 0].min()))), max(0, int(np.floor(corners[:, 1].min())))
    x1, y1 = min(W, int(np.ceil(corners[:, 0].max()))), min(H, int(np.ceil(corners[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return
    res = int(min(256, max(cw, ch, (x1 - x0) // 2)))  # the coloured map's side
    up = cv2.resize(np.asarray(heat, np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR)
    colour = JET[cv2.convertScaleAbs(up, alpha=255.0)]  # at crop size: cheap
    if res != cw or res != ch:
        colour = cv2.resize(colour, (res, res), interpolation=cv2.INTER_LINEAR)
    m = affine.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # box pixel -> crop pixel
    m[0] *= res / cw  # crop pixel -> coloured-map pixel
    m[1] *= res / ch
    roi = image[y0:y1, x0:x1]
    painted = roi.copy()
    cv2.warpAffine(colour, m, (x1 - x0, y1 - y0), dst=painted, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                   borderMode=cv2.BORDER_TRANSPARENT)
    cv2.addWeighted(roi, 1.0 - alpha, painted, alpha, 0.0, dst=roi)


def draw_heatmaps(image: np.ndarray, result: FrameResult, alpha: float = ALPHA) -> np.ndarray:
    """Overlay every face's heatmap (faces carry ``heat``, ``affine``, ``crop_size``); returns BGR."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    for f in result.faces:
        if f.heat is not None and f.affine is not None:
            overlay(img, f.heat, f.affine, f.crop_size, alpha)
    return img


def pick_maps(cams: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(K, C, h, w) maps, (K,) class indices -> (K, h, w) normalised maps of those classes."""
    if len(cams) == 0:
        return np.zeros((0, *cams.shape[2:]), np.float32)
    return np.stack([normalise(cams[i, int(c)]) for i, c in enumerate(classes)])
