"""`edgefer export` from torch checkpoints, and its command line: bad input -> one line, exit 2;
the --max-drop gate -> exit 1."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pip install 'edgefer[export]')")

from edgefer.align import resize_faces  # noqa: E402
from edgefer.backends import open_backend  # noqa: E402
from edgefer.cli import main  # noqa: E402
from edgefer.export.quantize import cpu_profile, overflow_risk  # noqa: E402

from conftest import shared_file  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A plain state dict, a wrapped one, a pickled module, a foreign net, and junk."""
    from edgefer.train.zoo import build

    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = build("mini-xception").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the export is really checked
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), d / "plain.pth")
    torch.save({"model_state_dict": model.state_dict(), "epoch": 7, "classes": ["a", "b", "c", "d", "e", "f", "g"]},
               d / "wrapped.pt")
    torch.save(model, d / "pickled.pth")
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)).state_dict(), d / "linear.pth")
    (d / "junk.pth").write_bytes(b"definitely not a checkpoint")
    return d, model


def test_plain_state_dict_exports_and_matches_torch(tmp_path, checkpoints, publictest, capsys):
    d, model = checkpoints
    out = tmp_path / "art"
    rc = main(["-q", "export", str(d / "plain.pth"), "--arch", "mini-xception", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    b = open_backend(out, "onnxruntime")
    m = b.manifest
    assert (m.arch, m.target, m.precision, m.input.dtype) == ("mini-xception", "onnx", "fp32", "uint8")
    assert m.classes[0] == "angry" and m.provenance["source"]["kind"] == "checkpoint"
    x = resize_faces(publictest["images"][:64], m.input)
    got = b.run(x)[0]
    with torch.no_grad():
        t = torch.from_numpy(x).float().permute(0, 3, 1, 2)
        want = torch.softmax(model((t - 127.5) / 127.5), 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_wrapped_checkpoint_arch_guessed_classes_from_checkpoint(tmp_path, checkpoints, capsys):
    d, _ = checkpoints
    out = tmp_path / "art"
    rc = main(["-q", "export", str(d / "wrapped.pt"), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = open_backend(out, "onnxruntime").manifest
    assert m.arch == "mini-xception" and m.classes == list("abcdefg")


@pytest.mark.parametrize(
    "args, message",
    [
        (["{d}/plain.pth", "--target", "tflite"], "unknown target 'tflite'"),
        (["{d}/linear.pth", "--arch", "mini-xception"], "does not fit --arch mini-xception"),
        (["{d}/plain.pth", "--arch", "no-such-net"], "unknown architecture"),
        (["{d}/pickled.pth", "--arch", "mini-xception"], "not a plain state dict"),
        (["{d}/junk.pth", "--arch", "mini-xception"], "not a PyTorch checkpoint"),
        (["{d}/plain.pth", "--arch", "mini-xception", "--classes", "a,b"], "--classes lists 2 names"),
        (["mini-xception", "--int8"], "--int8 needs calibration data: pass --calib"),
        (["mini-xception", "--int8", "--calib", "{d}/junk.pth"], "unsupported file type"),
        (["mini-xception", "--int8", "--calib", "{d}/missing.csv"], "not found"),
        (["mini-xception", "--int8", "--calib", "{d}/broken.csv"], "not a FER2013 CSV"),
        (["mini-xception", "--int8", "--fp16", "--calib", "x"], "exclude each other"),
        (["mini-xception", "--nncf"], "--nncf quantizes OpenVINO models"),
        (["mini-xception", "--max-drop", "1"], "--max-drop needs labeled validation data"),
        (["no-such-model"], "not found"),
        (["retinaface-mnet025", "--int8", "--calib", "{d}/broken.csv"], ""),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, checkpoints, capsys, args, message):
    d, _ = checkpoints
    (d / "broken.csv").write_text("x,y\n1,2\n")
    argv = ["-q", "export"] + [a.format(d=d) for a in args] + ["-o", str(tmp_path / "out")]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_max_drop_gate_exits_1(tmp_path, publictest, capsys):
    """Full-range S8S8 on ONNX Runtime without VNNI loses points: --max-drop catches it."""
    if not overflow_risk(cpu_profile()):
        pytest.skip("this CPU has VNNI: full-range S8S8 does not overflow here")
    calib = shared_file("data/fer2013/train.npz")
    val = tmp_path / "val.npz"
    idx = np.random.default_rng(2).choice(len(publictest["labels"]), 500, replace=False)
    np.savez(val, images=publictest["images"][idx], labels=publictest["labels"][idx])
    out = tmp_path / "s8s8"
    rc = main(["-q", "export", "mini-xception", "--int8", "--int8-variant", "s8s8", "--calib", str(calib),
               "--calib-size", "200", "--val", str(val), "--max-drop", "0.5", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert "drop" in err and "--max-drop 0.5" in err and len(err.splitlines()) == 1
    assert (out / "manifest.json").exists()  # written, and flagged


def test_training_sidecar_supplies_arch_classes_and_input(tmp_path, checkpoints, capsys):
    """`edgefer train` writes best.pth + best.pth.json: export needs no --arch or --classes."""
    import shutil

    from edgefer.train.checkpoint import write_sidecar

    d, _ = checkpoints
    ck = tmp_path / "best.pth"
    shutil.copy(d / "plain.pth", ck)
    names = ["w", "x", "y", "z", "u", "v", "t"]
    write_sidecar(ck, {"arch": "mini-xception", "build": {"num_classes": 7}, "classes": names,
                       "input": {"size": [64, 64], "color": "gray", "mean": [127.5], "std": [127.5]},
                       "metrics": {"val_top1": 0.5}})
    out = tmp_path / "art"
    rc = main(["-q", "export", str(ck), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = open_backend(out, "onnxruntime").manifest
    assert (m.name, m.arch, m.classes) == ("mini-xception", "mini-xception", names)
    assert m.provenance["base"]["training"]["metrics"]["val_top1"] == 0.5
