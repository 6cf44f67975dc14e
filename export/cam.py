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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgefer.artifact import Manifest, write_artifact

from .cam_graph import (  # noqa: F401
    CAM_OUTPUT,
    CamHead,
    CamModel,
    CamUnsupported,
    ClassifierWithCam,
    cam_extra,
    export_cam_onnx,
    find_cam_head,
    parity,
    tap_sums,
    with_cam,
)
from .wrappers import ClassifierWithPreprocess

log = logging.getLogger(__name__)

#: agreement required between torch and ONNX Runtime (probs and cam) when exporting
PARITY_LIMIT = 1e-4
#: architectures that are not in the zoo registry but users ask about (documented, not probed)
KNOWN_UNSUPPORTED = {
    "mobilenetv3-small": "GAP -> Linear -> Hardswish -> Linear: the head is not linear after the pool",
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

    from .source import (
        CHECKPOINT_SUFFIXES,
        build_from_checkpoint,
        read_training_sidecar,
    )

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
