"""The torch model zoo: every classifier exports to one ONNX file that ONNX Runtime and OpenVINO
run with the torch module's numbers, and the EmoTorch checkpoints reproduce their logits."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from conftest import shared_file  # noqa: E402

from edgefer.classes import EMOTORCH4, FER2013, canonical  # noqa: E402
from edgefer.export.wrappers import ClassifierWithPreprocess, export_classifier_onnx  # noqa: E402
from edgefer.train import zoo  # noqa: E402

OURS = ("edgenet", "deep-emotion", "resnet18", "emotorch-baseline", "emotorch-enhanced-v2")


def module(arch):
    return importlib.import_module(zoo.REGISTRY[arch].split(":")[0])


def export(arch, model, path, softmax=False):
    mod = module(arch)
    w = ClassifierWithPreprocess(model.eval(), mod.MEAN, mod.STD, color=mod.COLOR, softmax=softmax).eval()
    export_classifier_onnx(w, path, mod.INPUT_SIZE)
    return w


def ov_compile(path):
    ov = pytest.importorskip("openvino")
    # f32: the CPU plugin otherwise runs FP32 models in bf16 on CPUs with AVX512-BF16 or AMX
    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def faces(n, size=(48, 48), color="gray"):
    """Real FER2013 PublicTest faces, uint8 NHWC (gray, or the gray face in 3 channels)."""
    d = np.load(shared_file("data/fer2013/publictest.npz"))
    imgs = d["images"][:n]
    if tuple(size) != (48, 48):
        import cv2

        imgs = np.stack([cv2.resize(i, size[::-1]) for i in imgs])
    imgs = imgs[..., None]
    return np.ascontiguousarray(np.repeat(imgs, 3, axis=-1)) if color != "gray" else imgs


def test_registry_and_module_constants():
    for arch in OURS:
        assert arch in zoo.names()
        mod = module(arch)
        assert tuple(mod.INPUT_SIZE) == (48, 48) and mod.COLOR == "gray"
        assert len(mod.MEAN) == 1 and len(mod.STD) == 1
        m = zoo.build(arch).eval()
        out = m(torch.zeros(2, 1, 48, 48))
        assert out.shape == (2, len(mod.CLASSES))
    assert tuple(module("emotorch-baseline").CLASSES) == EMOTORCH4
    assert tuple(module("edgenet").CLASSES) == FER2013
    # other class counts build too (FERPlus' 8, a 4-class subset)
    for arch in ("edgenet", "deep-emotion", "resnet18"):
        assert zoo.build(arch, num_classes=8).eval()(torch.zeros(1, 1, 48, 48)).shape == (1, 8)
    # the seed live demo's classifier: 224 px RGB by default, grayscale 64 px through build kwargs
    mnv3 = module("mobilenetv3-small")
    assert tuple(mnv3.INPUT_SIZE) == (224, 224) and mnv3.COLOR == "rgb" and len(mnv3.MEAN) == 3
    m = zoo.build("mobilenetv3-small").eval()
    assert m(torch.zeros(2, 3, 224, 224)).shape == (2, len(mnv3.CLASSES))
    assert sum(p.numel() for p in zoo.build("mobilenetv3-small", num_classes=1000).parameters()) == 2_542_856
    gray = zoo.build("mobilenetv3-small", in_channels=mnv3.GRAY64["in_channels"], num_classes=8).eval()
    assert gray(torch.zeros(1, 1, *mnv3.GRAY64["size"])).shape == (1, 8)
    sd, kw = mnv3.load_checkpoint({"state_dict": gray.state_dict()})
    assert kw == {"num_classes": 8, "in_channels": 1}
    zoo.build("mobilenetv3-small", **kw).load_state_dict(sd, strict=True)


@pytest.mark.parametrize("arch", ["edgenet", "deep-emotion", "resnet18", "mobilenetv3-small"])
def test_export_runs_on_ort_and_openvino(arch, tmp_path):
    torch.manual_seed(0)
    model = zoo.build(arch).eval()
    if arch == "deep-emotion":  # a non-identity transform, so the grid sampling is exercised
        with torch.no_grad():
            model.fc_loc[2].weight.normal_(0, 0.05)
    mod = module(arch)
    x = faces(5, tuple(mod.INPUT_SIZE), mod.COLOR)
    if arch == "mobilenetv3-small":
        # at init its logits are ~1e-9 (so any graph would match): give it BatchNorm statistics of
        # real faces and a head at torch's default init, so the comparison below means something
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative average: one batch sets the statistics
                m.reset_running_stats()
        for lin in (model.classifier[0], model.classifier[3]):
            lin.reset_parameters()
        with torch.no_grad():
            ClassifierWithPreprocess(model.train(), mod.MEAN, mod.STD, color=mod.COLOR)(
                torch.from_numpy(faces(16, tuple(mod.INPUT_SIZE), mod.COLOR)))
        model.eval()
    w = export(arch, model, tmp_path / "m.onnx")
    ref = w(torch.from_numpy(x)).detach().numpy()
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)
    got_ov = ov_compile(tmp_path / "m.onnx")(x)[0]
    np.testing.assert_allclose(got_ov, ref, atol=2e-3, rtol=1e-3)
    assert np.abs(ref).max() > 1e-2, "logits near 0: the comparison would not test the graph"


def test_deep_emotion_grid_matches_affine_grid():
    import torch.nn.functional as F

    from edgefer.train.zoo.deep_emotion import AffineGrid

    theta = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1))
    ref = F.affine_grid(theta, [4, 1, 48, 48], align_corners=False)
    assert torch.allclose(AffineGrid(48, 48)(theta), ref, atol=1e-5)
    # the identity initialisation leaves the face as it is
    m = zoo.build("deep-emotion").eval()
    x = torch.rand(2, 1, 48, 48)
    assert torch.allclose(m.transform(x), x, atol=1e-5)


def test_edgenet_is_plain_ops(tmp_path):
    import onnx

    export("edgenet", zoo.build("edgenet"), tmp_path / "e.onnx", softmax=True)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "e.onnx")).graph.node}
    assert ops <= {"Cast", "Sub", "Div", "Transpose", "Conv", "BatchNormalization", "Relu", "Add",
                   "GlobalAveragePool", "Flatten", "Gemm", "Softmax", "Reshape", "Constant", "Identity"}, sorted(ops)


# ----------------------------------------------------------------------------- EmoTorch
@pytest.fixture(scope="module")
def emotorch_public():
    """PublicTest faces of the 4 classes EmoTorch shares with FER2013, labels in EmoTorch order."""
    d = np.load(shared_file("data/fer2013/publictest.npz"))
    mod = module("emotorch-baseline")
    fer = [canonical(str(c)) for c in d["classes"]]
    to_emo = {fer.index(mod.FER2013_MAP[c]): i for i, c in enumerate(mod.CLASSES)}
    keep = np.isin(d["labels"], list(to_emo))
    return d["images"][keep], np.asarray([to_emo[v] for v in d["labels"][keep]])


@pytest.mark.parametrize("arch,min_acc", [("emotorch-baseline", 0.50), ("emotorch-enhanced-v2", 0.70)])
def test_emotorch_checkpoint_reproduces_logits(arch, min_acc, tmp_path, emotorch_public):
    mod = module(arch)
    path = shared_file(f"weights/emotorch/{mod.CHECKPOINTS[arch]}")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    sd, kw = mod.load_checkpoint(obj)
    assert kw["num_classes"] == 4
    model = zoo.build(arch, **kw)
    model.load_state_dict(sd, strict=True)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == {"emotorch-baseline": 6964, "emotorch-enhanced-v2": 321892}[arch]

    images, labels = emotorch_public
    x = images[..., None]
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0).numpy()
    acc = float((logits.argmax(1) == labels).mean())
    assert acc >= min_acc, f"{arch}: {acc:.3f} on the 4 shared PublicTest classes; architecture misread?"

    export(arch, model, tmp_path / "m.onnx", softmax=False)
    sub = x[:256]
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": sub})[0]
    np.testing.assert_allclose(got, logits[:256], atol=1e-4, rtol=1e-4)
    got_ov = ov_compile(tmp_path / "m.onnx")(sub)[0]
    np.testing.assert_allclose(got_ov, logits[:256], atol=1e-3, rtol=1e-3)


def test_emotorch_through_edgefer_export(tmp_path):
    """`edgefer export CKPT --arch emotorch-...` keeps the 4 EmoTorch classes end to end."""
    source = pytest.importorskip("edgefer.export.source")
    path = shared_file("weights/emotorch/enhanced_v2_4class.pth")
    src = source.resolve_source(str(path), "onnx", arch="emotorch-enhanced-v2", workdir=tmp_path)
    assert src.manifest.classes == list(EMOTORCH4)
    assert src.manifest.input.size == [48, 48] and src.manifest.input.std == [255.0]
    x = faces(3)
    probs = ort.InferenceSession(str(src.onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert probs.shape == (3, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
