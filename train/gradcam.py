"""Grad-CAM (Selvaraju et al. 2017) for any torch zoo classifier: the reference explanation.

Grad-CAM weighs the channels of a convolutional feature map A (K, h, w) by the spatial mean
of the gradient of the target class score with respect to them, sums, and keeps the positive
part::

    alpha_k = mean_ij d y_c / d A_k[i, j]          cam_c = ReLU(sum_k alpha_k A_k)

It needs a backward pass, so it is a build-side tool (``edgefer explain``); the deployment
heatmap is the in-graph CAM of :mod:`edgefer.export.cam`, which this module is used to check.

Which layer: the last feature map *before* the classifier head (the convention of the paper).
For mini-XCEPTION that is the output of the last residual module (``blocks``, 128 x 4 x 4 at
64x64), not the final 3x3 conv to 7 channels: that conv's output is a class map already, the
gradient of its spatial mean is the constant 1/(h w) and Grad-CAM on it would be the CAM
itself (ReLU aside), which would make the comparison a tautology. :func:`default_layer` finds
the layer for any model: the last module to finish with a 4-D output of more than one pixel
that is not a class map (C channels whose mean is the logits); ``layer=`` overrides it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

#: zoo architectures whose Grad-CAM layer is known (others: :func:`default_layer`)
LAYERS = {
    "mini-xception": "blocks",
    "edgenet": "blocks",
    "resnet18": "layers",
}


def default_layer(model: nn.Module, example: torch.Tensor, arch: str | None = None) -> str:
    """Name of the module whose output Grad-CAM explains (see the module docstring)."""
    if arch in LAYERS and LAYERS[arch] in dict(model.named_modules()):
        return LAYERS[arch]
    done: list[tuple[str, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: done.append((n, o)))
        for n, m in model.named_modules() if n
    ]
    try:
        with torch.no_grad():
            logits = model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    for name, out in reversed(done):
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[2] * out.shape[3] <= 1:
            continue
        if out.shape[1] == logits.shape[1] and torch.allclose(out.mean(dim=(2, 3)), logits, atol=1e-4):
            continue  # a class map (conv -> GAP head): Grad-CAM there is the CAM itself
        return name
    raise ValueError("the model has no 4-D feature map for Grad-CAM")


class GradCAM:
    """Grad-CAM maps of ``model`` (NCHW float in, logits out) at ``layer``.

    ``cams, logits = GradCAM(model, "blocks")(x, classes=None)`` returns (N, h, w) maps at the
    layer's resolution for the predicted classes (or the given ones) and the logits.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.model = model.eval()
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"no layer {layer!r} in the model; layers: {', '.join(n for n in modules if n)[:300]}")
        self.layer = layer
        self.module = modules[layer]

    def __call__(self, x: torch.Tensor, classes: Sequence[int] | None = None, relu: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        acts: list[torch.Tensor] = []
        hook = self.module.register_forward_hook(lambda _m, _i, o: acts.append(o))
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # a graph exists even through frozen modules
                logits = self.model(x)
                target = logits.argmax(1) if classes is None else torch.as_tensor(classes, dtype=torch.long)
                score = logits.gather(1, target.view(-1, 1)).sum()
                a = acts[-1]
                # only the head is differentiated (score -> a): faster than a full backward, leaves
                # parameter .grad untouched, and avoids the backward of the early layers (on
                # torch 2.13 CPU the full backward through mini-XCEPTION's ceil-mode max pools
                # corrupted the heap on some inputs: "double free or corruption")
                (grad,) = torch.autograd.grad(score, a)
        finally:
            hook.remove()
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = (weights * a).sum(dim=1)
        if relu:
            cam = torch.relu(cam)
        return cam.detach(), logits.detach()


def upsample(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(N, h, w) maps -> (N, H, W), bilinear with pixel centres aligned (as cv2.resize)."""
    import cv2

    h, w = int(size[0]), int(size[1])
    return np.stack([cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for m in maps])


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample Pearson correlation of two (N, ...) arrays (nan where one map is constant)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / den


def _normalised_input(wrapper, faces_u8: np.ndarray) -> torch.Tensor:
    """uint8 faces laid out as the export wrapper's input -> the NCHW float the torch model takes."""
    x = torch.from_numpy(np.ascontiguousarray(faces_u8)).to(torch.float32)
    if wrapper.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    return (x - wrapper.mean) / wrapper.std


def explain_faces(wrapper, faces_u8: np.ndarray, classes: Sequence[int] | None = None, layer: str | None = None,
                  arch: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Grad-CAM of uint8 faces laid out as the export wrapper's input: (probs, maps (N, h, w), layer).

    ``classes``: one class index per face to explain (default: the predicted class).
    """
    model = getattr(wrapper.model, "model", wrapper.model)
    x = _normalised_input(wrapper, faces_u8)
    layer = layer or default_layer(model, x[:2], arch)
    maps, logits = GradCAM(model, layer)(x, classes=classes, relu=True)
    return torch.softmax(logits, dim=1).numpy(), maps.numpy(), layer


def compare_cam_gradcam(wrapper, onnx_path, n: int = 200, layer: str | None = None, seed: int = 0) -> dict:
    """Pearson correlation between the in-graph CAM of ``onnx_path`` (ONNX Runtime) and Grad-CAM.

    ``wrapper`` is the export wrapper (:class:`~edgefer.export.cam.ClassifierWithCam` or a plain
    :class:`~edgefer.export.wrappers.ClassifierWithPreprocess`) holding the same weights. Both
    maps are taken for the class the model predicts, upsampled to the input size and compared
    per face; returns mean / median / 10th percentile, and the same for the pre-ReLU Grad-CAM.
    """
    import onnxruntime as ort

    from edgefer.export.cam import publictest_faces

    torch_model = getattr(wrapper.model, "model", wrapper.model)  # CamModel wraps the zoo module
    size = None
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = inp.shape
    size = (shape[1], shape[2]) if wrapper.layout == "NHWC" else (shape[2], shape[3])
    faces, _labels, desc = publictest_faces(n, size, wrapper.color, seed=seed)
    feed = faces if wrapper.layout == "NHWC" else faces.transpose(0, 3, 1, 2).copy()
    names = [o.name for o in sess.get_outputs()]
    if "cam" not in names:
        raise ValueError(f"{onnx_path} has no cam output")
    outs = [sess.run(None, {inp.name: feed[i : i + 64]}) for i in range(0, len(feed), 64)]
    probs = np.concatenate([o[0] for o in outs])
    cams = np.concatenate([o[names.index("cam")] for o in outs])
    pred = probs.argmax(1)
    cam_c = cams[np.arange(len(cams)), pred]
    x = _normalised_input(wrapper, feed)
    layer = layer or default_layer(torch_model, x[:2], None)
    gc = GradCAM(torch_model, layer)
    g_relu, logits = gc(x, classes=pred.tolist(), relu=True)
    g_lin, _ = gc(x, classes=pred.tolist(), relu=False)
    up = lambda m: upsample(np.asarray(m), size)  # noqa: E731
    r = pearson(up(cam_c), up(g_relu.numpy()))
    r_lin = pearson(up(cam_c), up(g_lin.numpy()))
    ok = np.isfinite(r)

    def stats(v: np.ndarray) -> dict:
        v = v[np.isfinite(v)]
        return {"mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
                "p10": round(float(np.percentile(v, 10)), 4)}

    return {
        "faces": int(len(faces)),
        "on": desc,
        "gradcam_layer": layer,
        "class": "predicted",
        "resolution": f"{cams.shape[2]}x{cams.shape[3]} maps upsampled to {size[0]}x{size[1]}",
        "pearson_vs_gradcam": stats(r),
        "pearson_vs_gradcam_pre_relu": stats(r_lin),
        "gradcam_all_zero": int((~ok).sum()),
        "same_prediction": round(float((logits.numpy().argmax(1) == pred).mean()), 4),
    }
