"""`edgefer train adjust`: logit adjustment chosen on the run's own carve, folded exactly into the weights."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import shared_file
from edgefer.errors import EdgeferError
from edgefer.train.adjust import adjust, choose, decide, sweep
from edgefer.train.engine import TrainConfig, load_trained, train

from edgefer.classes import FER2013


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = np.load(shared_file("data/fer2013/publictest.npz"))
    idx = np.sort(np.concatenate([np.flatnonzero(d["labels"] == c)[:n] for c, n in enumerate((40, 12, 40, 60, 40, 30, 40))]))
    root = tmp_path_factory.mktemp("adjust")
    data = root / "train.npz"
    np.savez(data, images=d["images"][idx], labels=d["labels"][idx], classes=np.array(FER2013))
    out = root / "run"
    train(TrainConfig(arch="edgenet", data=str(data), out=str(out), epochs=3, batch=32, warmup=0, threads=1,
                      quiet=True, val_split=0.25, tta="flip"))
    return out / "best.pth", data


def test_adjusted_weights_shift_logits_by_the_recorded_bias(tmp_path, run):
    ckpt, _ = run
    rec = adjust(ckpt, tmp_path / "adj.pth", tau=1.0, threads=1)
    prior = np.array(list(rec["prior"].values()))
    np.testing.assert_allclose(list(rec["bias"].values()), -np.log(prior), atol=1e-5)
    m0, side0 = load_trained(ckpt)
    m1, side1 = load_trained(tmp_path / "adj.pth")
    x = torch.from_numpy(np.load(shared_file("data/fer2013/publictest.npz"))["images"][-16:, None].astype(np.float32))
    x = (x - 128.0) / 64.0
    with torch.no_grad():
        np.testing.assert_allclose(m1(x).numpy(), m0(x).numpy() + np.array(list(rec["bias"].values()), np.float32), atol=1e-4)
    assert side1["adjust"]["tau"] == 1.0 and side1["selected_on"] == side0["selected_on"] and "report" not in side1
    # tau 0 of the sweep is the model as trained: the carve top-1 its run recorded
    assert rec["carve_before"]["top1"] == pytest.approx(side0["metrics"]["val_top1"], abs=1e-9)
    assert side1["metrics"]["val_top1"] == rec["carve_after"]["top1"]
    assert (tmp_path / "adj.adjust.png").stat().st_size > 1000


def test_the_chosen_tau_is_the_best_macro_f1_on_the_carve(tmp_path, run):
    ckpt, _ = run
    rec = adjust(ckpt, tmp_path / "auto.pth", threads=1)
    best = max(r["macro_f1"] for r in rec["sweep"])
    assert rec["carve_after"]["macro_f1"] == best and rec["chosen_by"].startswith("best macro-F1")
    assert min(r["tau"] for r in rec["sweep"] if r["macro_f1"] == best) == rec["tau"]


def test_decide_follows_the_flip_graph_and_raising_a_prior_class_costs_it():
    rng = np.random.default_rng(0)
    plain, mirror = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    labels = rng.integers(0, 3, 200)
    assert np.array_equal(decide(plain, None, np.zeros(3)), plain.argmax(1))
    p = np.exp(plain) / np.exp(plain).sum(1, keepdims=True) + np.exp(mirror) / np.exp(mirror).sum(1, keepdims=True)
    assert np.array_equal(decide(plain, mirror, np.zeros(3)), p.argmax(1))
    rows = sweep(plain, None, labels, np.array([0.8, 0.1, 0.1]), ["a", "b", "c"], [0.0, 2.0])
    # a larger tau pushes predictions away from the frequent class
    assert rows[1]["recall"]["a"] < rows[0]["recall"]["a"]
    assert choose([{"tau": 0.5, "macro_f1": 0.4}, {"tau": 0.2, "macro_f1": 0.4}, {"tau": 0.0, "macro_f1": 0.3}])["tau"] == 0.2


def test_errors_are_one_line(tmp_path, run, capsys):
    from edgefer.cli import main

    ckpt, data = run
    with pytest.raises(EdgeferError, match="must not overwrite"):
        adjust(ckpt, ckpt)
    # a model selected on an external --val has no carve to choose on
    ext = tmp_path / "ext"
    train(TrainConfig(arch="edgenet", data=str(data), val=str(data), out=str(ext), epochs=1, batch=64, warmup=0,
                      threads=1, quiet=True))
    assert main(["train", "adjust", str(ext / "best.pth"), "-o", str(tmp_path / "x.pth")]) == 2
    assert "not selected on a carve" in capsys.readouterr().err
    assert main(["train", "adjust", str(tmp_path / "none.pth"), "-o", str(tmp_path / "x.pth")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
