"""`edgefer train`: dataset readers for every form, the loop, resume, checkpoints that export.

Datasets are written into a temporary folder from the shared FER2013 arrays, in the forms users
have them: fer2013.csv (+ FERPlus fer2013new.csv), class folders, .npz, RAF-DB's basic layout.
"""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import shared_file  # noqa: E402

from edgefer.classes import FER2013, FERPLUS, canonical  # noqa: E402
from edgefer.train import data as tdata  # noqa: E402
from edgefer.train.engine import TrainConfig, metrics_from, train  # noqa: E402


@pytest.fixture(scope="module")
def pt():
    """PublicTest arrays (images, labels, csv_row, ferplus_votes)."""
    d = np.load(shared_file("data/fer2013/publictest.npz"))
    return {k: d[k] for k in ("images", "labels", "csv_row", "ferplus_votes")}


def per_class(labels, n, offset=0):
    """Indices of ``n`` images of each class, in index order."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[offset : offset + n] for c in range(7)]))


def write_npz(path, pt, idx, votes=True, csv_row=True):
    arrays = {"images": pt["images"][idx], "labels": pt["labels"][idx], "classes": np.array(FER2013)}
    if votes:
        arrays["ferplus_votes"] = pt["ferplus_votes"][idx]
    if csv_row:
        arrays["csv_row"] = pt["csv_row"][idx]
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------- readers
def test_fer2013_csv_with_ferplus_votes(tmp_path, pt):
    tr, te = per_class(pt["labels"], 6), per_class(pt["labels"], 4, offset=6)
    rows = [(i, "Training") for i in tr] + [(i, "PublicTest") for i in te]
    with open(tmp_path / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for i, u in rows:
            w.writerow([int(pt["labels"][i]), " ".join(map(str, pt["images"][i].reshape(-1))), u])
    with open(tmp_path / "fer2013new.csv", "w", newline="") as f:  # row-aligned, as FERPlus ships it
        w = csv.writer(f)
        w.writerow(["Usage", "Image name", *tdata.FERPLUS_COLUMNS])
        for n, (i, u) in enumerate(rows):
            v = pt["ferplus_votes"][i]
            w.writerow([u, f"fer{n:07d}.png", *(v if v[0] >= 0 else [0] * 9 + [10])])

    ds = tdata.load_dataset(tmp_path / "fer2013.csv", usage="Training")
    assert ds.classes == list(FER2013) and len(ds) == len(tr)
    np.testing.assert_array_equal(ds.images, pt["images"][tr])
    np.testing.assert_array_equal(ds.labels, pt["labels"][tr])

    soft = tdata.load_dataset(tmp_path / "fer2013.csv", usage="Training", soft="ferplus")
    keep, s, major = tdata.votes_to_soft(pt["ferplus_votes"][tr])
    assert soft.classes == list(FERPLUS) and len(soft) == keep.sum() > 0
    np.testing.assert_allclose(soft.soft, s[keep])
    np.testing.assert_array_equal(soft.labels, major[keep])
    np.testing.assert_allclose(soft.soft.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(soft.images, pt["images"][tr][keep])
    val = tdata.load_dataset(tmp_path / "fer2013.csv", usage="PublicTest", soft=str(tmp_path / "fer2013new.csv"))
    assert len(val) == tdata.votes_to_soft(pt["ferplus_votes"][te])[0].sum()


def test_votes_rule():
    votes = np.array([[6, 2, 0, 0, 0, 0, 0, 0, 1, 1],   # kept: neutral majority
                      [0, 0, 0, 0, 0, 0, 0, 0, 2, 8],   # dropped: not a face
                      [1, 0, 0, 0, 0, 0, 0, 0, 5, 0],   # dropped: unknown majority
                      [-1] * 10])                       # dropped: no votes
    keep, soft, major = tdata.votes_to_soft(votes)
    assert keep.tolist() == [True, False, False, False]
    np.testing.assert_allclose(soft[0, :2], [0.75, 0.25])
    assert major[0] == 0


def test_npz_votes_inline_and_from_csv_rows(tmp_path, pt):
    idx = per_class(pt["labels"], 5)
    inline = tdata.load_dataset(write_npz(tmp_path / "a.npz", pt, idx), soft="ferplus")
    votes_csv = shared_file("data/ferplus/fer2013new.csv")
    via_rows = tdata.load_dataset(write_npz(tmp_path / "b.npz", pt, idx, votes=False), soft=str(votes_csv))
    np.testing.assert_allclose(inline.soft, via_rows.soft)
    np.testing.assert_array_equal(inline.labels, via_rows.labels)
    plain = tdata.load_dataset(tmp_path / "a.npz")
    assert plain.soft is None and plain.classes == list(FER2013) and len(plain) == len(idx)


def test_class_folders_kaggle_layout(tmp_path, pt):
    for split, offset in (("train", 0), ("test", 3)):
        for i in per_class(pt["labels"], 3, offset):
            d = tmp_path / split / FER2013[pt["labels"][i]]
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{i}.png"), pt["images"][i])
    ds = tdata.load_dataset(tmp_path, usage="Training")
    assert ds.classes == list(FER2013) and len(ds) == 21
    want = {int(i): pt["labels"][i] for i in per_class(pt["labels"], 3)}
    assert sorted(ds.labels.tolist()) == sorted(want.values())
    x = tdata.to_tensor(ds, (48, 48), "gray")
    assert x.shape == (21, 1, 48, 48) and x.dtype == torch.uint8
    test = tdata.load_dataset(tmp_path, usage="PublicTest")
    assert len(test) == 21
    tr, va = tdata.split_holdout(ds, 1 / 3, seed=0)  # no test split: a stratified holdout validates
    assert len(va) == 7 and sorted(va.labels.tolist()) == list(range(7)) and len(tr) == 14


def test_rafdb_basic_layout(tmp_path, pt):
    root = tmp_path / "RAF-DB" / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image" / "aligned").mkdir(parents=True)
    lines, want = [], {}
    for split, offset in (("train", 0), ("test", 2)):
        for n, i in enumerate(per_class(pt["labels"], 2, offset)):
            name = f"{split}_{n + 1:05d}"
            fer = FER2013[pt["labels"][i]]
            raf_label = [canonical(c) for c in tdata.RAF_CLASSES].index(fer) + 1
            lines.append(f"{name}.jpg {raf_label}")
            face = cv2.cvtColor(cv2.resize(pt["images"][i], (100, 100)), cv2.COLOR_GRAY2BGR)  # RAF: 100x100 colour
            cv2.imwrite(str(root / "Image" / "aligned" / f"{name}_aligned.jpg"), face)
            want[name] = (pt["labels"][i], pt["images"][i])
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")

    ds = tdata.load_dataset(tmp_path / "RAF-DB", usage="Training")  # the dataset root or basic/ itself
    assert ds.provenance["kind"] == "rafdb-basic" and ds.classes == list(FER2013) and len(ds) == 14
    names = [l.split()[0][:-4] for l in lines if l.startswith("train")]
    np.testing.assert_array_equal(ds.labels, [want[n][0] for n in names])
    x = tdata.to_tensor(ds, (48, 48), "gray").numpy()[:, 0].astype(np.float32)
    ref = np.stack([want[n][1] for n in names]).astype(np.float32)
    assert np.abs(x - ref).mean() < 6  # JPEG + resampling
    assert len(tdata.load_dataset(root, usage="PublicTest")) == 14


def test_metrics_from_confusion():
    m = metrics_from(np.array([[3, 1], [0, 4]]))
    assert m["top1"] == pytest.approx(7 / 8)
    assert m["recall"] == pytest.approx([0.75, 1.0])
    assert m["macro_f1"] == pytest.approx(np.mean([2 * 0.75 / 1.75, 2 * 0.8 / 1.8]))


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def small_sets(tmp_path_factory, pt):
    d = tmp_path_factory.mktemp("sets")
    train_idx = per_class(pt["labels"], 56, 0)  # 392 faces (disgust has 56)
    val_idx = per_class(pt["labels"], 20, 36)
    return write_npz(d / "train.npz", pt, train_idx), write_npz(d / "val.npz", pt, val_idx)


def test_train_loss_falls_and_checkpoint_exports(tmp_path, small_sets):
    ort = pytest.importorskip("onnxruntime")
    from edgefer.export.wrappers import ClassifierWithPreprocess, export_classifier_onnx
    from edgefer.train.checkpoint import read_sidecar
    from edgefer.train.engine import load_trained

    tr, va = small_sets
    cfg = TrainConfig(arch="edgenet", data=str(tr), val=str(va), out=str(tmp_path / "run"), epochs=5, batch=64,
                      opt="adamw", lr=3e-3, warmup=0.5, label_smoothing=0.0, flip=False, rotate=0, scale=0, translate=0, jitter=0,
                      erase=0.0, threads=2, quiet=True, ema=True, ema_decay=0.9)
    doc = train(cfg)
    losses = [h["train_loss"] for h in doc["history"]]
    assert losses[-1] < losses[0] - 0.15, losses
    out = tmp_path / "run"
    for name in ("best.pth", "best.pth.json", "last.pt", "metrics.json", "log.txt", "command.txt"):
        assert (out / name).exists(), name
    assert json.loads((out / "metrics.json").read_text())["status"] == "done"

    sd = torch.load(str(out / "best.pth"), map_location="cpu", weights_only=True)  # a plain state dict
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    side = read_sidecar(out / "best.pth")
    assert side["arch"] == "edgenet" and side["classes"] == list(FER2013)
    assert side["input"] == {"size": [48, 48], "color": "gray", "mean": [128.0], "std": [64.0]}
    assert side["data"]["train"]["count"] == 392 and side["data"]["train"]["sha256"].startswith("sha256:")
    assert 0 <= side["metrics"]["val_top1"] <= 1

    model, _ = load_trained(out / "best.pth")
    w = ClassifierWithPreprocess(model, side["input"]["mean"], side["input"]["std"], color="gray").eval()
    export_classifier_onnx(w, tmp_path / "m.onnx", side["input"]["size"])
    x = np.load(va)["images"][:8, :, :, None]
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, w(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    # the ONNX model agrees with the metric the run recorded
    v = np.load(va)
    probs = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"image": v["images"][:, :, :, None]})[0]
    assert float((probs.argmax(1) == v["labels"]).mean()) == pytest.approx(side["metrics"]["val_top1"], abs=1e-6)


def test_resume_continues_exactly(tmp_path, small_sets, monkeypatch):
    import edgefer.train.engine as eng

    tr, va = small_sets
    base = dict(arch="edgenet", data=str(tr), val=str(va), batch=64, limit=192, threads=2, quiet=True, epochs=3,
                mixup=0.2, cutmix=1.0, mix_prob=1.0, balanced=True, ema=True)
    straight = train(TrainConfig(**base, out=str(tmp_path / "a")))

    class Killed(Exception):
        pass

    real_plot = eng.plot_curves

    def plot_then_die(history, path):  # runs right after last.pt is written
        real_plot(history, path)
        if len(history) == 2:
            raise Killed

    monkeypatch.setattr(eng, "plot_curves", plot_then_die)
    with pytest.raises(Killed):
        train(TrainConfig(**base, out=str(tmp_path / "b")))
    monkeypatch.setattr(eng, "plot_curves", real_plot)
    state = torch.load(str(tmp_path / "b" / "last.pt"), map_location="cpu", weights_only=True)
    assert state["epoch"] == 2
    resumed = train(TrainConfig(arch="", data="", epochs=0, quiet=True), resume=tmp_path / "b")
    assert [(h["train_loss"], h["val_top1"]) for h in resumed["history"]] == \
        [(h["train_loss"], h["val_top1"]) for h in straight["history"]]


def test_soft_label_training(tmp_path, small_sets):
    from edgefer.train.checkpoint import read_sidecar

    tr, va = small_sets
    doc = train(TrainConfig(arch="edgenet", data=str(tr), val=str(va), soft_labels="ferplus", epochs=1, batch=64,
                            limit=128, threads=2, quiet=True, out=str(tmp_path / "s")))
    side = read_sidecar(tmp_path / "s" / "best.pth")
    assert side["classes"] == list(FERPLUS) and side["build"]["num_classes"] == 8
    assert side["data"]["train"]["soft_labels"] == "ferplus"
    assert np.isfinite(doc["history"][0]["train_loss"])


def test_cli_errors_are_one_line(tmp_path, small_sets, capsys):
    from edgefer.cli import main

    tr, _ = small_sets
    assert main(["train", "--arch", "nope", "--data", str(tr)]) == 2
    assert "unknown architecture 'nope'" in capsys.readouterr().err
    assert main(["train", "--arch", "edgenet", "--data", str(tmp_path / "missing.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--arch", "edgenet"]) == 2
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_init_starts_from_given_weights(tmp_path, small_sets, capsys):
    import torch

    from edgefer.cli import main
    from edgefer.train import zoo
    from edgefer.train.checkpoint import load_state_dict

    tr, va = small_sets
    torch.manual_seed(123)
    start = zoo.build("edgenet", num_classes=7).state_dict()
    torch.save(start, tmp_path / "start.pth")
    # lr ~ 0 and no EMA: the saved best.pth must be the --init weights (a fresh init would differ)
    cfg = TrainConfig(arch="edgenet", data=str(tr), val=str(va), out=str(tmp_path / "run"), epochs=1, batch=64,
                      lr=1e-12, weight_decay=0.0, limit=128, threads=2, quiet=True, init=str(tmp_path / "start.pth"))
    train(cfg)
    got = load_state_dict(tmp_path / "run" / "best.pth")
    for k, v in start.items():
        if v.dtype.is_floating_point and "running" not in k:
            torch.testing.assert_close(got[k], v, atol=1e-6, rtol=0)
    # weights of another architecture: one line, exit 2
    assert main(["train", "--arch", "mini-xception", "--data", str(tr), "--init", str(tmp_path / "start.pth"),
                 "--epochs", "1", "--limit", "64", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "does not fit mini-xception" in err[0]
    assert main(["train", "--arch", "edgenet", "--data", str(tr), "--init", str(tmp_path / "none.pth"),
                 "-o", str(tmp_path / "y")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_flip_tta_is_selected_on_and_exported_in_the_graph(tmp_path, small_sets):
    """--tta flip: validation scores the mean of face and mirror; the sidecar says so; export puts
    the flip in the ONNX graph, whose accuracy is the one the run recorded."""
    ort = pytest.importorskip("onnxruntime")
    from edgefer.cli import main
    from edgefer.train.checkpoint import read_sidecar

    tr, va = small_sets
    cfg = TrainConfig(arch="edgenet", data=str(tr), val=str(va), out=str(tmp_path / "run"), epochs=2, batch=64,
                      lr=3e-3, warmup=0.5, limit=256, threads=2, quiet=True, tta="flip")
    train(cfg)
    side = read_sidecar(tmp_path / "run" / "best.pth")
    assert side["tta"] == "flip"
    assert main(["-q", "export", str(tmp_path / "run" / "best.pth"), "--target", "onnx", "-o", str(tmp_path / "a")]) == 0
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["extra"]["tta"] == "flip"
    sess = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"), providers=["CPUExecutionProvider"])
    v = np.load(va)
    x = v["images"][:, :, :, None]
    probs = sess.run(None, {"image": x})[0]
    assert probs.shape == (len(x), 7)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert float((probs.argmax(1) == v["labels"]).mean()) == pytest.approx(side["metrics"]["val_top1"], abs=1e-6)
    # a face and its mirror image get the same probabilities from a flip-averaged graph
    mirrored = sess.run(None, {"image": np.ascontiguousarray(x[:16, :, ::-1])})[0]
    np.testing.assert_allclose(mirrored, probs[:16], atol=1e-5)
    # and the flip is really there: the plain network scores a face and its mirror differently
    plain = dict(side)
    plain.pop("tta")
    (tmp_path / "plain").mkdir()
    import shutil

    shutil.copy(tmp_path / "run" / "best.pth", tmp_path / "plain" / "best.pth")
    (tmp_path / "plain" / "best.pth.json").write_text(json.dumps(plain))
    assert main(["-q", "export", str(tmp_path / "plain" / "best.pth"), "--target", "onnx", "-o", str(tmp_path / "b")]) == 0
    sb = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"])
    pb, pbm = sb.run(None, {"image": x[:16]})[0], sb.run(None, {"image": np.ascontiguousarray(x[:16, :, ::-1])})[0]
    assert np.abs(pb - pbm).max() > 1e-3
    np.testing.assert_allclose((pb + pbm) / 2, probs[:16], atol=1e-5)


def test_distillation_learns_the_teacher_not_the_labels(tmp_path, small_sets, pt):
    """--teacher with --distill 1: the student keeps the teacher's answers (the committed stage-4
    EdgeNet, flip included) even when every label says 'angry', where the labels alone teach it
    'angry'; a teacher that does not see what the student sees is refused in one line."""
    from pathlib import Path

    from edgefer.errors import EdgeferError
    from edgefer.train.engine import load_trained

    teacher = Path(__file__).resolve().parents[1] / "train" / "runs" / "edgenet-fer2013-s4" / "best.pth"
    if not teacher.is_file():
        pytest.skip("train/runs/edgenet-fer2013-s4/best.pth not in this checkout")
    tr, _ = small_sets
    d = np.load(tr)
    wrong = tmp_path / "all_angry.npz"
    np.savez(wrong, images=d["images"], labels=np.zeros_like(d["labels"]), classes=np.array(FER2013))
    common = dict(arch="edgenet", data=str(wrong), val=str(wrong), epochs=1, batch=16, lr=3e-3, warmup=0.0,
                  init=str(teacher), label_smoothing=0.0, flip=False, rotate=0, scale=0, translate=0, jitter=0,
                  erase=0.0, threads=2, quiet=True)
    train(TrainConfig(out=str(tmp_path / "kd"), teacher=str(teacher), distill=1.0, distill_temp=1.0, **common))
    train(TrainConfig(out=str(tmp_path / "ce"), **common))

    tmodel, _ = load_trained(teacher)
    x = (torch.from_numpy(d["images"]).float()[:, None] - 128.0) / 64.0
    with torch.no_grad():
        t = ((torch.softmax(tmodel(x), 1) + torch.softmax(tmodel(torch.flip(x, [3])), 1)) / 2).argmax(1)
    agree = {}
    for name in ("kd", "ce"):
        m, _ = load_trained(tmp_path / name / "best.pth")
        with torch.no_grad():
            agree[name] = float((m(x).argmax(1) == t).float().mean())
    print(f"agreement with the teacher: distilled {agree['kd']:.3f}, labels only {agree['ce']:.3f}")
    assert agree["kd"] > 0.75 and agree["kd"] > agree["ce"] + 0.3, agree
    side = json.loads((tmp_path / "kd" / "best.pth.json").read_text())
    assert side["training"]["teacher"] == str(teacher) and side["training"]["distill"] == 1.0

    # refusals: other classes, other input
    bad = tmp_path / "bad"
    bad.mkdir()
    import shutil

    shutil.copy(teacher, bad / "best.pth")
    info = json.loads(Path(str(teacher) + ".json").read_text())
    (bad / "best.pth.json").write_text(json.dumps({**info, "classes": list(FER2013[:6]) + ["contempt"]}))
    with pytest.raises(EdgeferError, match="classes"):
        train(TrainConfig(out=str(tmp_path / "x"), teacher=str(bad / "best.pth"), **{**common, "epochs": 1}))
    (bad / "best.pth.json").write_text(json.dumps({**info, "input": {**info["input"], "size": [64, 64]}}))
    with pytest.raises(EdgeferError, match="input"):
        train(TrainConfig(out=str(tmp_path / "y"), teacher=str(bad / "best.pth"), **{**common, "epochs": 1}))
