"""Class activation maps (CAM) as a second ONNX output: heatmaps on every backend, one inference.

Users add the output with ``edgefer export MODEL --cam [--target T --int8 ...]``
(:mod:`edgefer.export.cam_cli`: the bundled twin, or this module's CAM graph exported on to the
target). This module's own entry point is the maintainers' tool that also measures and lays out
the bundled twins:

    python -m edgefer.export.cam mini-xception -o DIR [--gradcam-check 200]
    python -m edgefer.export.cam runs/edgenet/best.pth [--arch edgenet] -o DIR
    python -m edgefer.export.cam --list          # which zoo architectures support it, and why

A classifier whose last spatial layer is followed only by global average pooling (GAP) and a
linear map has an exact, free explanation: apply the linear map at every position of the last
feature map instead of after pooling and you get one map per class, ``cam`` (N, C, h, w), whose
spatial mean *is* the logits (Zhou et al. 2016, "Learning Deep Features for Discriminative
Localization"). Computed in the graph, it comes out of the same single inference as ``probs``
on every runtime that runs the graph (ONNX Runtime, OpenVINO, TensorRT; Core ML with the
matching converter change), and survives FP16 and QDQ INT8 conversion like any other tensor.

Two head shapes qualify, found and *verified numerically* by :func:`find_cam_head` (so a model
that merely looks right is never exported with a wrong map):

``conv-gap``
    the last layer is a convolution to C channels and the logits are its spatial mean
    (mini-XCEPTION: 3x3 conv to 7 channels, then GAP). With a 1x1 kernel the map is that
    convolution's output (already in the graph). With a wider kernel the map is the logits
    decomposed over the conv's *input* positions, ``sum_k T[c,k] * A[k] + b[c]`` with T the
    constant per-position kernel-tap sums (:func:`tap_sums`): the conv's own output spreads
    each feature over every cell the kernel reaches and, on the bundled mini-XCEPTION, whose
    off-centre taps outweigh the centre, disagreed with Grad-CAM (mean Pearson -0.14 on 300
    PublicTest faces) where the input-side map agrees (+0.86). Cost: C*K*h*w MACs
    (mini-XCEPTION: 7*128*4*4 = 14 k, about 0.01 ms per face on ONNX Runtime here).
``gap-linear``
    GAP of a feature map F (K, h, w), optional dropout, then one Linear (C x K) (ResNet-18,
    EdgeNet). The map is ``W F + b`` as a 1x1 convolution on F: C*K*h*w extra MACs (EdgeNet:
    7*256*3*3 = 16 k MACs, 0.06% of its 28 MMACs).

Zoo support (``--list`` measures it on randomly initialised modules):

====================  =======  =========================================================
mini-xception         yes      3x3 conv to 7 channels, then GAP (conv-gap, input side)
edgenet               yes      GAP -> dropout -> Linear (gap-linear)
resnet18              yes      GAP -> dropout -> Linear (gap-linear)
emotorch-baseline     no       flatten -> Linear: the weights are per position, no GAP
emotorch-enhanced-v2  no       GAP -> fc1 -> BN -> ReLU -> fc2: not linear after the pool
deep-emotion          no       flatten -> fc1 -> fc2 (and a spatial transformer in front)
mobilenetv3-small     no       GAP -> Linear -> Hardswish -> Linear: not linear after the pool
====================  =======  =========================================================

Measured agreement with Grad-CAM (``--gradcam-check 300``, mean Pearson on 300 PublicTest
faces, predicted class, maps upsampled to the input): mini-XCEPTION 0.863 (median 0.904),
EdgeNet 0.999 (1.000 before Grad-CAM's ReLU: with a linear head the two are the same map).
The output survives conversion: ``edgefer export CAM_ARTIFACT --target openvino --fp16``
keeps it (maps within 1% of FP32 on this CPU, which runs it in bf16). TensorRT and Core ML
run the same graph but were not validated here.

For the "no" rows, Grad-CAM on the torch module (:mod:`edgefer.train.gradcam`, ``edgefer
explain``) is the explanation; it needs gradients, so it is not a deployment output.

The map is in logit units (before softmax). A probs graph gives ``softmax(mean(cam)) == probs``;
a logits graph ``mean(cam) == logits``. The manifest records the output under
``extra.cam`` (schema 1 unchanged; runtimes that do not know it ignore the second output).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from edgefer.artifact import Manifest, write_artifact

from .wrappers import ClassifierWithPreprocess

log = logging.getLogger(__name__)

CAM_OUTPUT = "cam"
#: agreement required between torch and ONNX Runtime (probs and cam) when exporting
PARITY_LIMIT = 1e-4
#: architectures that are not in the zoo registry but users ask about (documented, not probed)
KNOWN_UNSUPPORTED = {
    "mobilenetv3-small": "GAP -> Linear -> Hardswish -> Linear: the head is not linear after the pool",
}


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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = wrapper.eval()
    example = wrapper.example_input(size, batch=2)
    out_name = wrapper.output_name
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[input_name], output_names=[out_name, CAM_OUTPUT],
            dynamic_axes={input_name: {0: "batch"}, out_name: {0: "batch"}, CAM_OUTPUT: {0: "batch"}},
            do_constant_folding=True,
        )
    from .wrappers import finish_onnx

    return finish_onnx(Path(path), metadata)


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


def publictest_faces(n: int, size: Sequence[int], color: str = "gray", seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, str]:
    """uint8 NHWC faces from FER2013 PublicTest (shared data) resized to ``size``; noise without it."""
    import cv2

    import edgefer

    root = Path(edgefer.__file__).resolve().parents[1]
    npz = Path(os.environ.get("EDGEFER_SHARED", root.parent / "shared")) / "data" / "fer2013" / "publictest.npz"
    h, w = int(size[0]), int(size[1])
    if npz.exists():
        d = np.load(npz)
        idx = np.sort(np.random.default_rng(seed).permutation(len(d["labels"]))[:n])
        imgs = [cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in d["images"][idx]]
        faces = np.stack(imgs)[..., None]
        if color != "gray":
            faces = np.repeat(faces, 3, axis=3)
        return faces, d["labels"][idx], f"{len(faces)} FER2013 PublicTest faces (seed {seed}), 48->{h} bilinear"
    rng = np.random.default_rng(seed)
    c = 1 if color == "gray" else 3
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), None, f"{n} uniform-noise images (seed {seed})"


# ----------------------------------------------------------------------------- sources
def _torch_source(ref: str, arch: str | None) -> tuple[ClassifierWithPreprocess, Manifest, str]:
    """(export wrapper with weights, FP32 manifest to start from, what it was) for a name, artifact or checkpoint."""
    import tempfile

    from .source import CHECKPOINT_SUFFIXES, resolve_source

    p = Path(ref).expanduser()
    if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES:
        with tempfile.TemporaryDirectory(prefix="edgefer-cam-") as tmp:
            src = resolve_source(ref, "onnx", arch=arch, workdir=Path(tmp))
            return src.torch_factory(), src.manifest, "checkpoint"
    src = resolve_source(ref, "onnx", arch=arch)
    if src.torch_factory is None:
        from edgefer.errors import EdgeferError

        raise EdgeferError(f"no torch module is known for {src.manifest.name}: export its checkpoint with --arch")
    return src.torch_factory(), src.manifest, src.origin


def torch_classifier(ref: str, arch: str | None = None) -> tuple[ClassifierWithPreprocess, Any, dict, list[str], str | None]:
    """(export wrapper, InputSpec, crop, classes, arch) of a checkpoint, bundled name or FP32 artifact.

    What ``edgefer explain --method gradcam`` runs Grad-CAM on. A checkpoint is built straight
    from the zoo (no ONNX export); an artifact needs known torch weights (bundled mini-XCEPTION).
    """
    from edgefer.errors import EdgeferError

    from .source import CHECKPOINT_SUFFIXES, build_from_checkpoint, read_training_sidecar

    p = Path(ref).expanduser()
    if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES:
        model, arch, meta, _obj = build_from_checkpoint(p, arch, None, read_training_sidecar(p))
        if meta["kind"] != "classifier" or not meta["size"]:
            raise EdgeferError(f"{p.name} is a {arch} {meta['kind']}, not a classifier with a fixed input size")
        wrapper = ClassifierWithPreprocess(model, meta["mean"], meta["std"], color=meta["color"], softmax=True,
                                           tta=meta.get("tta")).eval()
        with torch.no_grad():
            n = int(model(torch.zeros(1, wrapper.channels, *meta["size"])).shape[-1])
        names = list(meta["classes"] or [])
        if len(names) != n:
            names = [f"class{i}" for i in range(n)]
        from edgefer.align import DEFAULT_CROP

        return wrapper, wrapper.input_spec(meta["size"]), meta.get("crop") or dict(DEFAULT_CROP), names, arch
    wrapper, man, _origin = _torch_source(ref, arch)
    return wrapper, man.input, man.crop or {}, list(man.classes or []), man.arch


def export_cam_artifact(ref: str, out_dir: str | os.PathLike, arch: str | None = None, gradcam_check: int = 0,
                        command: str | None = None, stem: str | None = None) -> Path:
    """Write a CAM-enabled FP32 ONNX artifact of ``ref`` (bundled name, FP32 artifact or checkpoint).

    ``stem`` names the files ``<stem>.onnx`` and ``<stem>.json`` (how the bundled assets are laid
    out) instead of ``model.onnx`` and ``manifest.json``.
    """
    import onnx
    import onnxruntime as ort

    from edgefer.errors import EdgeferError

    wrapper, man0, origin = _torch_source(ref, arch)
    spec = man0.input
    try:
        cw = with_cam(wrapper, spec.size)
    except CamUnsupported as e:
        raise EdgeferError(f"{man0.arch or man0.name} has no in-graph class activation map: {e}; use Grad-CAM (edgefer explain)") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / (f"{stem}.onnx" if stem else "model.onnx")
    export_cam_onnx(cw, onnx_path, spec.size, input_name=spec.name,
                    metadata={"edgefer.name": man0.name, "edgefer.classes": ",".join(man0.classes or []), "edgefer.cam": CAM_OUTPUT})
    faces, _labels, desc = publictest_faces(256, spec.size, spec.color)
    par = parity(onnx_path, cw, faces if spec.layout == "NHWC" else faces.transpose(0, 3, 1, 2).copy())
    log.info("parity on %s: %s", desc, par)
    if max(par.values()) > PARITY_LIMIT:
        raise EdgeferError(f"the CAM export does not reproduce the torch module: {par}")
    measured: dict[str, Any] = {"parity": {**{k: float(f"{v:.3g}") for k, v in par.items()}, "on": desc}}
    if gradcam_check:
        from edgefer.train.gradcam import compare_cam_gradcam

        measured["gradcam_pearson"] = compare_cam_gradcam(cw, onnx_path, gradcam_check)
    man = Manifest.from_dict(man0.to_dict())
    man.files = {"model": onnx_path.name}
    man.name = man0.name
    man.extra = {**(man0.extra or {}), "cam": cam_extra(cw.model.head, cw, **measured)}
    man.provenance = {
        **{k: v for k, v in (man0.provenance or {}).items() if k not in ("command", "tools")},
        "cam_source": {"ref": ref, "kind": origin},
        "command": command or f"python -m edgefer.export.cam {ref} -o {out_dir}",
        "tools": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                  "python": ".".join(map(str, sys.version_info[:3]))},
    }
    return write_artifact(man, out_dir, manifest_name=f"{stem}.json" if stem else "manifest.json")


def support_table() -> list[dict[str, Any]]:
    """Whether each zoo architecture has an in-graph CAM, probed on a randomly initialised module."""
    from edgefer.train import zoo

    from .source import arch_meta

    rows = []
    for name in zoo.names():
        meta = arch_meta(name)
        if meta["kind"] != "classifier" or not meta["size"]:
            continue
        torch.manual_seed(0)
        model = zoo.build(name).eval()
        c = 1 if meta["color"] == "gray" else 3
        x = torch.randn(2, c, *meta["size"])
        try:
            head = find_cam_head(model, x)
            rows.append({"arch": name, "cam": True, "why": head.describe(), "shape": list(head.shape)})
        except CamUnsupported as e:
            rows.append({"arch": name, "cam": False, "why": str(e)})
    for name, why in KNOWN_UNSUPPORTED.items():
        if name not in zoo.REGISTRY:
            rows.append({"arch": name, "cam": False, "why": why + " (not in this zoo)"})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgefer.export.cam", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="bundled name, FP32 ONNX artifact of a zoo arch, or a checkpoint")
    ap.add_argument("-o", "--output", type=Path, help="output artifact folder")
    ap.add_argument("--arch", help="zoo architecture of a checkpoint (default: from its sidecar or by trying)")
    ap.add_argument("--gradcam-check", type=int, default=0, metavar="N",
                    help="also measure the Pearson correlation with Grad-CAM on N PublicTest faces")
    ap.add_argument("--list", action="store_true", help="print which zoo architectures support an in-graph CAM")
    ap.add_argument("--stem", default=None, help="write STEM.onnx + STEM.json instead of model.onnx + manifest.json "
                    "(the bundled layout: --stem mini_xception_cam -o edgefer/assets)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[cam] %(message)s")
    if args.list:
        for r in support_table():
            print(f"{r['arch']:22s} {'yes' if r['cam'] else 'no ':4s} {r['why']}")
        return 0
    if not args.model or not args.output:
        ap.error("give MODEL and -o DIR (or --list)")
    from edgefer.errors import EdgeferError

    argv = sys.argv[1:] if argv is None else argv
    try:
        path = export_cam_artifact(args.model, args.output, args.arch, args.gradcam_check,
                                   command=" ".join(["python -m edgefer.export.cam", *argv]), stem=args.stem)
    except EdgeferError as e:
        print(f"edgefer: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
