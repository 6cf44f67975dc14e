"""`edgefer explain`: where the classifier looked, as a heatmap over each face of an image.

Two methods, one picture:

* ``cam`` (artifacts, on any backend, no torch): the in-graph class activation map that comes
  out of the same inference as the probabilities (:mod:`edgefer.explain`);
* ``gradcam`` (torch checkpoints of the zoo, or the bundled mini-XCEPTION rebuilt in torch):
  Grad-CAM at the last feature map, the reference the in-graph CAM is checked against. Needs
  torch (``pip install 'edgefer[train]'``, from a clone ``pip install '.[train]'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import cv2
import numpy as np

from ..artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, bundled_names
from ..errors import EdgeferError

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".tar")
#: images at most this large with no detected face are taken as one face crop (FER2013 is 48x48)
CROP_MAX_SIDE = 160


def _read_image(path: str) -> np.ndarray:
    from ..sources import VIDEO_SUFFIXES

    p = Path(path)
    if p.suffix.lower() in VIDEO_SUFFIXES:
        raise EdgeferError(f"{path} is a video: explain takes one image (for videos: edgefer run {path} --explain)")
    if not p.is_file():
        raise EdgeferError(f"image {path} not found")
    img = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise EdgeferError(f"cannot read {path}: not an image OpenCV can decode")
    return img


class _Explainer:
    """Probabilities and one map per face for a batch of crops; CAM (runtime) or Grad-CAM (torch)."""

    def __init__(self, classifier: str, method: str, backend: str, arch: str | None):
        p = Path(classifier).expanduser()
        is_ckpt = p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES
        if method == "auto":
            method = "gradcam" if is_ckpt else "cam"
        if method == "cam" and is_ckpt:
            import shlex

            out = shlex.quote(f"{p.stem}-cam")
            raise EdgeferError(f"{classifier} is a torch checkpoint: use --method gradcam, or export it with the map added "
                               f"(`edgefer export {shlex.quote(classifier)} --cam -o {out}`) and pass --classifier {out}")
        self.method = method
        if method == "cam":
            from ..explain import cam_classifier

            self.clf = cam_classifier(classifier, backend=backend)
            self.spec, self.crop, self.classes = self.clf.spec, self.clf.crop, self.clf.classes
            self.what = f"in-graph CAM of {self.clf.backend.artifact.describe()} on {self.clf.backend.name}"
        else:
            try:
                from edgefer.export.cam import torch_classifier
            except ImportError as e:
                from ..extras import install_hint

                raise EdgeferError(f"Grad-CAM needs torch ({e.name or e}): {install_hint('train')}") from None
            self.wrapper, self.spec, self.crop, self.classes, self.arch = torch_classifier(classifier, arch)
            self.what = f"Grad-CAM of {self.arch or classifier} (torch)"

    def __call__(self, crops: np.ndarray, target: int | None) -> tuple[np.ndarray, np.ndarray]:
        if self.method == "cam":
            probs, cams = self.clf.predict(crops, with_cam=True)
            cls = probs.argmax(1) if target is None else np.full(len(probs), target)
            return probs, cams[np.arange(len(cams)), cls]
        from edgefer.train.gradcam import explain_faces

        classes = None if target is None else [target] * len(crops)
        probs, maps, layer = explain_faces(self.wrapper, crops, classes=classes, arch=self.arch)
        if "layer" not in self.what:
            self.what += f", layer {layer}"
        return probs, maps


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image")
@click.option("--classifier", default=DEFAULT_CLASSIFIER, show_default=True,
              help=f"Artifact (in-graph CAM; bundled: {bundled_names()}) or torch checkpoint .pth (Grad-CAM).")
@click.option("--method", type=click.Choice(["auto", "cam", "gradcam"]), default="auto", show_default=True,
              help="auto: gradcam for checkpoints, cam for artifacts.")
@click.option("--arch", default=None, help="Zoo architecture of a checkpoint (default: its sidecar or its keys).")
@click.option("--class", "target", default=None, metavar="NAME", help="Explain this class instead of the predicted one.")
@click.option("--detector", default=DEFAULT_DETECTOR, show_default=True, help="Face detector artifact.")
@click.option("--whole", is_flag=True, help="The image is one face crop (FER2013-style): skip detection.")
@click.option("--backend", default="auto", show_default=True, help="Backend for artifacts (auto, onnxruntime, openvino...).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Overlay image (default: IMAGE_STEM-explain.png in the current folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the faces, classes and heat peaks as JSON.")
def explain(image, classifier, method, arch, target, detector, whole, backend, output, as_json):
    """Overlay a heatmap of where the classifier looked on each face of IMAGE.

    \b
    Examples:
      edgefer explain photo.jpg                                   # default classifier, in-graph CAM
      edgefer explain photo.jpg --classifier runs/edgenet/best.pth  # Grad-CAM (torch)
      edgefer explain face48.png --whole --class happy -o heat.png
    """
    from ..explain import crop_affines, draw_heatmaps, normalise, where
    from ..align import crop_faces
    from ..results import Face, FrameResult
    from ..sinks import annotate

    frame = _read_image(image)
    ex = _Explainer(classifier, method, backend, arch)
    tidx = None
    if target is not None:
        from ..classes import canonical

        names = [canonical(c) for c in ex.classes]
        if canonical(target) not in names:
            raise EdgeferError(f"--class {target}: the classifier's classes are {', '.join(ex.classes)}")
        tidx = names.index(canonical(target))
    h, w = frame.shape[:2]
    crop = ex.crop
    note = ""
    if not whole:
        from ..detect import FaceDetector

        det = FaceDetector(detector, backend=backend)(frame)
        boxes, scores, lms = det.boxes, det.scores, det.landmarks
        if len(boxes) == 0:
            if max(h, w) > CROP_MAX_SIDE:
                raise EdgeferError(f"no face found in {image} (if it is a face crop, pass --whole)")
            whole, note = True, f"no face detected in a {w}x{h} image: taken as one face crop"
    if whole:
        boxes = np.array([[0, 0, w, h]], np.float32)
        scores, lms = np.ones(1, np.float32), None
        crop = {"scale": 1.0, "align": "none"}
    spec = ex.spec
    crops = crop_faces(frame, boxes, lms, spec, crop)
    probs, maps = ex(crops, tidx)
    affines = crop_affines(crop, spec.size, boxes, lms)
    faces, rows = [], []
    for i in range(len(boxes)):
        k = int(probs[i].argmax()) if tidx is None else tidx
        heat = normalise(maps[i])
        faces.append(Face(box=[float(v) for v in boxes[i]], score=float(scores[i]), track=i + 1,
                          emotion=ex.classes[k], confidence=float(probs[i, k]),
                          probs={c: float(v) for c, v in zip(ex.classes, probs[i])},
                          heat=heat, affine=affines[i], crop_size=tuple(spec.size)))
        rows.append({"face": i + 1, "box": [round(float(v), 1) for v in boxes[i]], "class": ex.classes[k],
                     "probability": round(float(probs[i, k]), 4), "predicted": ex.classes[int(probs[i].argmax())],
                     "heat_peak": where(heat), "map": np.round(np.asarray(maps[i], np.float64), 4).tolist()})
    result = FrameResult(0, 0.0, faces, image=frame)
    img = annotate(draw_heatmaps(frame.copy(), result), result)
    out = Path(output) if output else Path(f"{Path(image).stem}-explain.png")
    if not out.suffix:
        out = out.with_suffix(".png")
    if out.parent and not out.parent.exists():
        raise EdgeferError(f"cannot write {out}: folder {out.parent} does not exist")
    ok, buf = cv2.imencode(out.suffix, img)
    if not ok:
        raise EdgeferError(f"cannot encode {out} (use .png or .jpg)")
    buf.tofile(str(out))
    if as_json:
        click.echo(json.dumps({"image": image, "method": ex.what, "output": str(out), "note": note or None, "faces": rows}, indent=2))
        return
    if note:
        click.echo(f"note: {note}")
    for r in rows:
        extra = f" (predicted {r['predicted']})" if r["predicted"] != r["class"] else ""
        click.echo(f"face {r['face']} [{', '.join(str(int(v)) for v in r['box'])}]: {r['class']} {r['probability']:.2f}{extra}, "
                   f"heat peaks {r['heat_peak']} of the face crop")
    click.echo(f"{ex.what} -> {out}")
