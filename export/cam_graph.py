"""The in-graph class activation map: finding a model's CAM head and the torch module that outputs it.

The graph half of :mod:`edgefer.export.cam` (whose module doc explains the method, which zoo
architectures qualify, and what was measured): :func:`find_cam_head` finds and verifies the
``conv-gap`` or ``gap-linear`` head, :class:`CamModel` computes ``(logits, cam)``,
:class:`ClassifierWithCam` is the export wrapper with the second output, :func:`export_cam_onnx`
writes it to ONNX and :func:`parity` checks ONNX Runtime against torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .wrappers import ClassifierWithPreprocess

CAM_OUTPUT = "cam"


class CamUnsupported(ValueError):
    """The model's head is not (conv ->) GAP (-> Linear): no exact in-graph CAM."""


@dataclass
class CamHead:
    """Where a model's class activation maps come from."""

    kind: str  # "conv-gap" | "gap-linear"
    module: str  # conv-gap: the class-map conv; gap-linear: the module whose output is the feature map
    linear: str | None = None  # gap-linear: the Linear applied after pooling
    shape: tuple[int, ...] = ()  # (C, h, w) of the map at the probed input size
    in_shape: tuple[int, ...] = ()  # conv-gap: (K, h, w) of the class-map conv's input
    input_side: bool = False  # conv-gap with a kernel wider than 1x1: attribute to the conv's input positions

    def describe(self) -> str:
        if self.kind == "conv-gap" and self.input_side:
            return (f"input-side decomposition of {self.module} (k x k class-map conv before global average pooling): "
                    f"sum over channels of its input times the constant per-position weight sums")
        if self.kind == "conv-gap":
            return f"output of {self.module} (1x1 class-map conv before global average pooling)"
        return f"{self.linear} weights as a 1x1 conv on the output of {self.module} (global average pooling + linear head)"


def _trace_modules(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, nn.Module, Any, Any]]]:
    """Run ``model`` once, recording (name, module, first input, output) in completion order."""
    calls: list[tuple[str, nn.Module, Any, Any]] = []
    hooks = []
    for name, mod in model.named_modules():
        if not name:
            continue
        hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: calls.append((n, m, i[0] if i else None, o))))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, calls


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + float(b.abs().max()))))


def find_cam_head(model: nn.Module, example: torch.Tensor) -> CamHead:
    """Find the CAM head of ``model`` (NCHW float in, logits out) and check it on ``example``.

    Raises :class:`CamUnsupported` with the reason when the logits are not a spatial mean of a
    per-class map computable in the graph.
    """
    model = model.eval()
    logits, calls = _trace_modules(model, example)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise CamUnsupported("the model does not return one logits tensor [N, C]")
    n_cls = logits.shape[1]
    # conv-gap: a conv whose output's spatial mean is the logits (the last such)
    for name, mod, _inp, out in reversed(calls):
        if isinstance(mod, nn.Conv2d) and isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[1] == n_cls:
            if _close(out.mean(dim=(2, 3)), logits):
                wide = tuple(mod.kernel_size) != (1, 1) or tuple(mod.stride) != (1, 1) or out.shape[2:] != _inp.shape[2:]
                return CamHead("conv-gap", name, None, (n_cls, *_inp.shape[2:]) if wide else tuple(out.shape[1:]),
                               tuple(_inp.shape[1:]), wide)
    # gap-linear: the last Linear gives the logits and its input is the GAP of a feature map
    linears = [(n, m, i, o) for n, m, i, o in calls if isinstance(m, nn.Linear)]
    if not linears:
        raise CamUnsupported("no linear head and no class-map convolution before global average pooling")
    lname, lin, lin_in, lin_out = linears[-1]
    if not _close(lin_out, logits):
        raise CamUnsupported(f"{lname} is the last linear layer but something follows it before the logits")
    feats = [
        (n, o) for n, _m, _i, o in calls
        if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[1] == lin.in_features and o.shape[2] * o.shape[3] > 1
    ]
    for fname, fmap in reversed(feats):
        if _close(fmap.mean(dim=(2, 3)), lin_in.reshape(lin_in.shape[0], -1)):
            return CamHead("gap-linear", fname, lname, (n_cls, *fmap.shape[2:]))
    if lin_in.dim() == 2 and any(o.dim() == 4 and o.numel() == lin_in.numel() for _n, _m, _i, o in calls if isinstance(o, torch.Tensor)):
        raise CamUnsupported(f"{lname} reads a flattened feature map (weights per position, no global average pooling)")
    raise CamUnsupported(f"the input of {lname} is not the global average pool of a feature map (the head is not linear after pooling)")


def tap_sums(conv: nn.Conv2d, in_shape: Sequence[int]) -> torch.Tensor:
    """T (C, K, h, w) with ``mean(conv(A)[c]) == sum_k mean(T[c, k] * A[k]) + b[c]`` for every A of that shape.

    The gradient of a convolution's spatial sum with respect to its input does not depend on the
    input (the layer is linear), so it is computed once, at export, and stored as a constant.
    """
    k, h, w = (int(v) for v in in_shape)
    x = torch.zeros(1, k, h, w, requires_grad=True)
    with torch.enable_grad():
        y = conv(x)
        rows = [torch.autograd.grad(y[0, c].sum(), x, retain_graph=True)[0][0] for c in range(y.shape[1])]
    ho, wo = y.shape[2:]
    return (torch.stack(rows) * (h * w) / (ho * wo)).detach()


class CamModel(nn.Module):
    """NCHW float in, ``(logits, cam)`` out, for a model with a :class:`CamHead`.

    Every map satisfies ``cam.mean((2, 3)) == logits`` (exact decomposition of the logits):

    * ``gap-linear``: ``cam = W F + b`` (a 1x1 conv with the linear weights on the pooled map F);
    * ``conv-gap`` with a 1x1 class conv: the conv's output itself;
    * ``conv-gap`` with a k x k class conv (mini-XCEPTION: 3x3): the logits decomposed over the
      conv's *input* positions, ``cam[c, i, j] = sum_k T[c, k, i, j] A[k, i, j] + b[c]`` with T the
      constant per-position sums of the kernel taps (:func:`tap_sums`). The conv's own output
      would attribute each feature to every output cell its 3x3 kernel reaches; on the bundled
      mini-XCEPTION the off-centre taps outweigh the centre, which moves the heat one cell away
      from the feature that caused it (Pearson with Grad-CAM -0.14 on 300 PublicTest faces; the
      input-side map: +0.86). This is Gradient x Activation at the conv's input, which for a
      spatially constant gradient (1x1 conv, linear head) is Grad-CAM before its ReLU.
    """

    def __init__(self, model: nn.Module, head: CamHead):
        super().__init__()
        self.model = model
        self.head = head
        modules = dict(model.named_modules())
        self._source = modules[head.module]
        self.linear = modules[head.linear] if head.linear else None
        if head.kind == "conv-gap" and head.input_side:
            conv = self._source
            self.register_buffer("taps", tap_sums(conv, head.in_shape)[None])  # (1, C, K, h, w)
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
            self.register_buffer("tap_bias", bias.reshape(1, -1, 1, 1).clone())
        else:
            self.taps = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the hook lives for one forward only: the wrapped module stays hook-free for other users
        captured: list[torch.Tensor] = []
        if self.taps is not None:
            hook = self._source.register_forward_hook(lambda m, i, o: captured.append(i[0]))
        else:
            hook = self._source.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            logits = self.model(x)
        finally:
            hook.remove()
        fmap = captured[-1]
        if self.taps is not None:
            cam = (fmap.unsqueeze(1) * self.taps).sum(dim=2) + self.tap_bias
        elif self.linear is None:
            cam = fmap
        else:
            w = self.linear.weight[:, :, None, None]
            cam = nn.functional.conv2d(fmap, w, self.linear.bias)
        return logits, cam


class ClassifierWithCam(ClassifierWithPreprocess):
    """uint8 pixels in, ``(probs or logits, cam)`` out: the export wrapper with a CAM output."""

    def __init__(self, model: nn.Module, head: CamHead, mean, std, color: str = "gray", softmax: bool = True,
                 layout: str = "NHWC", tta: str | None = None):
        super().__init__(CamModel(model, head), mean, std, color=color, softmax=softmax, layout=layout, tta=tta)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalise(image)
        if self.tta == "flip":  # the mirror image's map is mirrored back and averaged with the face's
            logits, cam = self.model(torch.cat([x, torch.flip(x, [3])], 0))
            probs = torch.softmax(logits, dim=1).reshape(2, -1, logits.shape[1]).mean(0)
            cam = cam.reshape(2, -1, *cam.shape[1:])
            cam = (cam[0] + torch.flip(cam[1], [3])) / 2
            return (probs if self.softmax else torch.log(probs)), cam
        logits, cam = self.model(x)
        return (torch.softmax(logits, dim=1) if self.softmax else logits), cam


def with_cam(wrapper: ClassifierWithPreprocess, size: Sequence[int]) -> ClassifierWithCam:
    """The CAM twin of an export wrapper (same weights, same preprocessing); raises CamUnsupported."""
    if isinstance(wrapper, ClassifierWithCam):
        return wrapper
    h, w = int(size[0]), int(size[1])
    example = torch.randn(2, wrapper.channels, h, w, generator=torch.Generator().manual_seed(0))
    head = find_cam_head(wrapper.model, example)
    cw = ClassifierWithCam(wrapper.model, head, wrapper.mean.flatten().tolist(), wrapper.std.flatten().tolist(),
                           color=wrapper.color, softmax=wrapper.softmax, layout=wrapper.layout,
                           tta=getattr(wrapper, "tta", None)).eval()
    with torch.no_grad():
        logits, cam = cw.model(example)
    if not _close(cam.mean(dim=(2, 3)), logits):  # the map must decompose the logits exactly
        raise CamUnsupported(f"the map from {head.describe()} does not average to the logits")
    return cw


def export_cam_onnx(wrapper: ClassifierWithCam, path: str | os.PathLike, size: Sequence[int], input_name: str = "image",
                    opset: int = 17, metadata: dict[str, str] | None = None) -> Path:
    """Export a :class:`ClassifierWithCam` to one self-contained ONNX file: outputs (probs|logits, cam)."""

    from .wrappers import finish_onnx, trace_onnx

    out_name = wrapper.output_name
    path = trace_onnx(wrapper, wrapper.example_input(size, batch=2), path, [input_name], [out_name, CAM_OUTPUT],
                      {input_name: {0: "batch"}, out_name: {0: "batch"}, CAM_OUTPUT: {0: "batch"}}, opset)
    return finish_onnx(path, metadata)


def cam_extra(head: CamHead, wrapper: ClassifierWithCam, **measured: Any) -> dict[str, Any]:
    """The manifest's ``extra.cam`` entry (what the runtime reads to find the map)."""
    return {
        "output": CAM_OUTPUT,
        "method": head.kind + (" input-side" if head.input_side else ""),
        "source": head.describe(),
        "shape": list(head.shape),
        "units": ("logits of the face and its mirror image, averaged (mean over h, w == the mean logits; probs are "
                  "the mean of the two softmaxes)") if getattr(wrapper, "tta", None) == "flip" else
                 "logits" if not wrapper.softmax else "logits (softmax(mean over h, w) == probs)",
        **measured,
    }


def parity(onnx_path: Path, wrapper: ClassifierWithCam, faces: np.ndarray) -> dict[str, float]:
    """max |ONNX Runtime - torch| of both outputs, and the GAP consistency of the ONNX cam."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: faces[i : i + 64]}) for i in range(0, len(faces), 64)]
    o_probs = np.concatenate([o[0] for o in outs])
    o_cam = np.concatenate([o[1] for o in outs])
    with torch.no_grad():
        t_probs, t_cam = (t.numpy() for t in wrapper(torch.from_numpy(faces)))
    gap = o_cam.mean(axis=(2, 3))
    if getattr(wrapper, "tta", None) == "flip":
        # the map is the mean of the face's and the (mirrored-back) mirror's maps, so its average is
        # the mean of the two logit vectors (the probs are the mean of the two softmaxes instead)
        with torch.no_grad():
            x = wrapper.normalise(torch.from_numpy(faces))
            ref = ((wrapper.model(x)[0] + wrapper.model(torch.flip(x, [3]))[0]) / 2).numpy()
    else:
        ref = o_probs
        if wrapper.softmax:
            e = np.exp(gap - gap.max(1, keepdims=True))
            gap = e / e.sum(1, keepdims=True)
    return {
        "probs_max_abs": float(np.abs(o_probs - t_probs).max()),
        "cam_max_abs": float(np.abs(o_cam - t_cam).max()),
        "gap_consistency_max_abs": float(np.abs(gap - ref).max()),
    }
