"""Convert the seed RetinaFace MobileNet-0.25 checkpoint into the bundled ``retinaface-mnet025`` artifact.

    python -m edgefer.train.convert.retinaface --weights ../shared/weights/retinaface_mobilenet0.25.pth [-o DIR]

Loads the plain state dict (``torch.load(weights_only=True)``) into
:class:`edgefer.train.zoo.retinaface.RetinaFace`, wraps it so the graph takes uint8 NHWC BGR
frames of any size (mean subtraction in-graph, softmax face probability out), exports
``retinaface_mnet025.onnx`` (opset 17, dynamic batch, height and width, one file), checks that
onnxruntime reproduces torch at two input sizes, and writes ``retinaface_mnet025.json``.
Prior boxes, decoding and NMS stay in numpy (``edgefer/detect.py``): they are cheap once the
scores are thresholded, and keep the graph free of size-dependent constants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import edgefer
from edgefer.artifact import InputSpec, Manifest, sha256_file, write_artifact
from edgefer.train.zoo import retinaface as rf

ONNX_NAME = "retinaface_mnet025.onnx"
MANIFEST_NAME = "retinaface_mnet025.json"
UPSTREAM = (
    "emotion_xai seed project live demo (MIT); architecture of RetinaFace (Deng et al. 2019, "
    "arXiv 1905.00641) with a MobileNet-0.25 backbone as in biubug6/Pytorch_Retinaface (MIT), trained on WIDER FACE"
)
PARITY_LIMIT = 1e-3


def _log(msg: str) -> None:
    print(f"[convert_retinaface] {msg}", flush=True)


def export_onnx(model: rf.RetinaFace, path: Path) -> None:
    import onnx

    wrapper = rf.RetinaFaceExport(model).eval()
    example = torch.zeros(1, 320, 480, 3, dtype=torch.uint8)
    names = ["loc", "conf", "landms"]
    from edgefer.export.wrappers import trace_onnx

    trace_onnx(wrapper, example, path, ["image"], names,
               {"image": {0: "batch", 1: "height", 2: "width"}, **{n: {0: "batch", 1: "anchors"} for n in names}})
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)


def parity(model: rf.RetinaFace, path: Path) -> float:
    """Max abs difference of the three outputs, torch vs onnxruntime, at two input sizes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = rf.RetinaFaceExport(model).eval()
    rng = np.random.default_rng(0)
    worst = 0.0
    for h, w in ((240, 320), (361, 483)):
        img = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(torch.from_numpy(img))]
        got = sess.run(None, {"image": img})
        for a, b in zip(ref, got):
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgefer.train.convert.retinaface", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="retinaface_mobilenet0.25.pth (plain state dict)")
    ap.add_argument("-o", "--output", default=str(Path(edgefer.__file__).resolve().parent / "assets"))
    args = ap.parse_args(argv)
    weights = Path(args.weights)
    if not weights.exists():
        print(f"convert_retinaface: error: no such file {weights}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    _log(f"loading {weights} (weights_only=True)")
    model = rf.build(weights)
    onnx_path = out / ONNX_NAME
    _log(f"exporting {onnx_path}")
    export_onnx(model, onnx_path)
    diff = parity(model, onnx_path)
    _log(f"torch vs onnxruntime max abs difference: {diff:.2e}")
    if diff > PARITY_LIMIT:
        print(f"convert_retinaface: error: ONNX differs from torch by {diff:.2e}", file=sys.stderr)
        return 1
    import onnx

    manifest = Manifest(
        name="retinaface-mnet025",
        kind="detector",
        arch="retinaface-mnet025",
        target="onnx",
        precision="fp32",
        files={"model": ONNX_NAME},
        input=InputSpec(name="image", dtype="uint8", layout="NHWC", size=None, color="bgr",
                        mean=list(rf.MEAN_BGR), std=[1.0, 1.0, 1.0], batch="dynamic"),
        output="retinaface",
        detector={
            "min_sizes": rf.MIN_SIZES,
            "steps": rf.STEPS,
            "variances": rf.VARIANCES,
            "default_size": 640,
            "landmarks": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
        },
        provenance={
            "source": f"retinaface_mobilenet0.25.pth ({weights.name})",
            "source_sha256": sha256_file(weights),
            "upstream": UPSTREAM,
            "command": "python -m edgefer.train.convert.retinaface --weights ../shared/weights/retinaface_mobilenet0.25.pth",
            "tools": {"torch": torch.__version__, "onnx": onnx.__version__},
            "torch_parity_max_abs": diff,
        },
        license="MIT",
    )
    p = write_artifact(manifest, out, MANIFEST_NAME)
    _log(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
