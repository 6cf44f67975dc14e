"""edgefer bench: rows per target x precision, accuracy matched by class name, outputs, gate."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from edgefer import bench as B
from edgefer.artifact import load
from edgefer.classes import FER2013

from conftest import shared_file

FAST = ["--batch", "1", "--min-seconds", "0.05"]


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefer", "-q", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_test(tmp_path_factory, publictest):
    """A fixed, class-stratified 700-face slice of PublicTest as .npz (with its class names)."""
    rng = np.random.default_rng(0)
    idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(publictest["labels"] == c))[:100] for c in range(7)]))
    p = tmp_path_factory.mktemp("data") / "pt.npz"
    np.savez(p, images=publictest["images"][idx], labels=publictest["labels"][idx], classes=np.array(FER2013))
    return p


def test_accuracy_metrics_hand_computed():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.5, 0.3]], np.float32)
    sc = B.Scoring(None, np.array([0, 2, 1, 1]), ["a", "b", "c"], "x").for_model(["a", "b", "c"])
    acc = B.accuracy(probs, sc)
    assert acc["top1"] == pytest.approx(75.0)  # 0 ok, 2 ok, 0 != 1, 1 ok
    assert acc["top2"] == pytest.approx(100.0)
    assert acc["recall"] == pytest.approx({0: 100.0, 1: 50.0, 2: 100.0})
    # F1: a: p 1/2 r 1 -> 2/3; b: p 1 r 1/2 -> 2/3; c: 1
    assert acc["macro_f1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1) / 3)
    assert B.kl_div(probs, probs) == pytest.approx(0.0, abs=1e-7)
    assert B.kl_div(probs[:1], probs[1:2]) > 0


def test_class_matching_by_name_and_shared_classes():
    # data in another order, with one class the model lacks; model has one the data lacks
    data = B.Scoring(None, np.array([0, 1, 2, 3]), ["neutral", "happy", "contempt", "angry"], "x")
    sc = data.for_model(["angry", "happy", "sad", "calm"])  # "calm" is EmoTorch's name for neutral
    assert sc["shared"] == ["angry", "happy", "calm"]
    assert list(sc["keep"]) == [0, 1, 3] and list(sc["y"]) == [3, 1, 0]
    assert sc["dropped_classes"] == ["contempt"] and sc["unscored_classes"] == ["sad"]
    probs = np.array([[0, 0, 0.9, 0.1], [0, 1, 0, 0], [1, 0, 0, 0], [0.6, 0, 0.4, 0]], np.float32)
    acc = B.accuracy(probs, sc)
    assert acc["top1"] == pytest.approx(100.0)  # the "sad" mass is masked: face 0 is calm
    with pytest.raises(Exception, match="share none"):
        B.Scoring(None, np.array([0]), ["contempt"], "x").for_model(["angry", "happy"])


def validate(res: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(res, B.JSON_SCHEMA)


def test_schema_rejects_what_it_should():
    jsonschema = pytest.importorskip("jsonschema")
    good = {"schema": 1, "machine": {"cpu": "x", "cores": 2, "os": "Linux", "versions": {}}, "model": {"ref": "m"},
            "settings": {"batches": [1]}, "notes": [], "rows": [B._row("trt", "int8", "unavailable", "no tensorrt")]}
    validate(good)
    for bad_row in (B._row("trt", "int8", "unavailable"),  # no reason
                    B._row("onnx", "int4", "ok"),  # unknown precision
                    {**B._row("onnx", "fp32", "ok"), "size_mb": 1.0, "load_s": 0.1, "throughput": 1.0,
                     "latency_ms": {"b1": {"p50": 1.0}}}):  # latency without p90/p99
        with pytest.raises(jsonschema.ValidationError):
            validate({**good, "rows": [bad_row]})
    with pytest.raises(jsonschema.ValidationError):
        validate({**good, "schema": 2})


def test_gate():
    res = {"rows": [
        {"target": "onnx", "precision": "fp32", "status": "ok", "top1_drop": 0.0},
        {"target": "onnx", "precision": "int8", "status": "ok", "top1_drop": 1.3},
        {"target": "openvino", "precision": "fp16", "status": "ok", "top1_drop": 0.2},
        {"target": "trt", "precision": "int8", "status": "unavailable", "top1_drop": None},
    ]}
    assert B.gate(res, 0.5) == ["onnx/int8 loses 1.30 points (> 0.5)"]
    assert B.gate(res, 1.5) == []


def test_no_data_fresh_machine_rows_and_unavailable(tmp_path):
    out = tmp_path / "b.json"
    r = cli("bench", "--targets", "onnx,trt,coreml", "--precisions", "fp32,int8", "--json", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    validate(res)
    assert res["schema"] == 1 and res["machine"]["cores"] >= 1 and "onnxruntime" in res["machine"]["versions"]
    rows = {(x["target"], x["precision"]): x for x in res["rows"]}
    ok = rows[("onnx", "fp32")]
    assert ok["status"] == "ok" and ok["size_mb"] > 0.1 and ok["latency_ms"]["b1"]["p50"] > 0
    assert ok["latency_ms"]["b1"]["p50"] <= ok["latency_ms"]["b1"]["p90"] <= ok["latency_ms"]["b1"]["p99"]
    assert ok["top1"] is None and any("--data" in n for n in res["notes"])
    assert rows[("onnx", "int8")]["status"] == "skipped" and "--calib" in rows[("onnx", "int8")]["reason"]
    for t in ("trt", "coreml"):  # ok where TensorRT / macOS exist, else a row saying why not
        assert rows[(t, "fp32")]["status"] in ("unavailable", "ok")
        if rows[(t, "fp32")]["status"] == "unavailable":
            assert rows[(t, "fp32")]["reason"]
    assert "unavailable" in r.stdout and "onnx" in r.stdout


def test_accuracy_drop_csv_plot_and_gate(tmp_path, small_test):
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    train = shared_file("data/fer2013/train.npz")
    js, cs, png = tmp_path / "b.json", tmp_path / "b.csv", tmp_path / "b.png"
    r = cli("bench", "--targets", "onnx,openvino", "--precisions", "fp32,int8", "--data", str(small_test),
            "--calib", str(train), "--json", str(js), "--csv", str(cs), "--plot", str(png), "--max-drop", "100", *FAST)
    assert r.returncode == 0, r.stderr
    res = json.loads(js.read_text())
    validate(res)
    rows = {(x["target"], x["precision"]): x for x in res["rows"]}
    assert all(x["status"] == "ok" for x in rows.values()), [x["reason"] for x in rows.values()]
    ref = rows[("onnx", "fp32")]
    assert 55 < ref["top1"] < 80 and ref["top2"] > ref["top1"] and ref["top1_drop"] == 0 and ref["agreement"] == 100
    assert rows[("openvino", "fp32")]["top1"] == pytest.approx(ref["top1"], abs=0.3)
    for t in ("onnx", "openvino"):
        q = rows[(t, "int8")]
        base = rows[(t, "fp32")]
        assert q["top1_drop"] == pytest.approx(base["top1"] - q["top1"], abs=1e-2)
        assert 90 <= q["agreement"] < 100.0001 and q["kl"] >= 0  # the exporter picked a variant that runs right
        assert set(q["per_class_drop"]) == set(FER2013)
        assert q["per_class_drop"][q["worst_class"]] == max(q["per_class_drop"].values()) if q["worst_class"] else True
    with open(cs) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {"top1_drop", "latency_b1_p99", "drop_disgust"} <= set(table[0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the gate: a bound below the INT8 row's measured drop fails with exit 1 and says which row
    drop = rows[("onnx", "int8")]["top1_drop"]
    if drop > 0:
        r2 = cli("bench", "--targets", "onnx", "--precisions", "fp32,int8", "--data", str(small_test), "--calib", str(train),
                 "--max-drop", f"{drop / 2:.4f}", *FAST)
        assert r2.returncode == 1 and "accuracy gate failed: onnx/int8 loses" in r2.stderr


def test_class_order_of_data_does_not_matter(tmp_path, small_test):
    d = np.load(small_test)
    perm = np.array([6, 3, 0, 5, 1, 4, 2])  # new index i holds old class perm[i]
    inv = np.argsort(perm)
    shuffled = tmp_path / "shuffled.npz"
    np.savez(shuffled, images=d["images"], labels=inv[d["labels"]], classes=np.array(FER2013)[perm])
    tops = []
    for p in (small_test, shuffled):
        js = tmp_path / f"{p.stem}.json"
        r = cli("bench", "--targets", "onnx", "--precisions", "fp32", "--data", str(p), "--json", str(js), *FAST)
        assert r.returncode == 0, r.stderr
        tops.append(json.loads(js.read_text())["rows"][0]["top1"])
    assert tops[0] == tops[1] and tops[0] > 55


def test_four_class_model_scored_on_shared_classes(tmp_path, small_test):
    pytest.importorskip("torch")
    ckpt = shared_file("weights/emotorch/enhanced_v2_4class.pth")
    art = tmp_path / "emo4"
    r = cli("export", str(ckpt), "--arch", "emotorch-enhanced-v2", "--target", "onnx", "-o", str(art))
    assert r.returncode == 0, r.stderr
    js = tmp_path / "b.json"
    r = cli("bench", "--model", str(art), "--targets", "onnx", "--precisions", "fp32", "--data", str(small_test),
            "--json", str(js), *FAST)
    assert r.returncode == 0, r.stderr
    res = json.loads(js.read_text())
    row = res["rows"][0]
    assert row["status"] == "ok" and row["scored_on"]["faces"] == 400  # 100 each of angry, fear, surprise, neutral
    assert set(row["scored_on"]["dropped_data_classes"]) == {"disgust", "happy", "sad"}
    assert any("shared classes" in n for n in res["notes"]) and "shared classes" in r.stdout
    assert row["top1"] > 50  # EmoTorch enhanced-v2 scores about 75% on these four classes


def test_video_row_reports_ratio(tmp_path, videos_dir):
    js = tmp_path / "b.json"
    r = cli("bench", "--targets", "onnx", "--precisions", "fp32", "--video", str(videos_dir / "frown_512.mp4"),
            "--video-frames", "40", "--json", str(js), *FAST)
    assert r.returncode == 0, r.stderr
    row = json.loads(js.read_text())["rows"][0]
    assert row["video_frames"] == 40 and row["video_faces"] >= 30
    assert row["e2e_fps"] > 0 and row["decode_fps"] > row["e2e_fps"]
    assert row["e2e_ratio"] == pytest.approx(row["e2e_fps"] / row["decode_fps"], rel=1e-2)
    assert row["e2e_p99_ms"] >= row["e2e_p50_ms"] > 0


def test_ensemble_row_and_explain_cost(tmp_path, small_test, videos_dir):
    pytest.importorskip("onnx")
    from edgefer.ensemble import write_ensemble

    fp16 = tmp_path / "fp16"
    r = cli("export", "mini-xception", "--target", "onnx", "--fp16", "-o", str(fp16))
    assert r.returncode == 0, r.stderr
    ens = write_ensemble(["mini-xception", str(fp16)], "mean", tmp_path / "ens")
    js = tmp_path / "b.json"
    r = cli("bench", "--model", "mini-xception", "--targets", "onnx", "--precisions", "fp32", "--artifact", str(ens),
            "--data", str(small_test), "--video", str(videos_dir / "frown_512.mp4"), "--video-frames", "30", "--explain", "--json", str(js), *FAST)
    assert r.returncode == 0, r.stderr
    res = json.loads(js.read_text())
    validate(res)
    single, both = res["rows"]
    assert both["target"] == "ensemble" and both["status"] == "ok" and len(both["members"]) == 2
    assert both["size_mb"] == pytest.approx(single["size_mb"] + B.artifact_size_mb(load(str(fp16))), abs=2e-3)
    # two near-identical members: the mean is the FP32 model to within FP16 noise
    assert abs(both["top1_drop"]) < 0.5 and both["agreement"] > 99
    assert single["explain_ms"] > 0 and 0 < single["explain_pct"] < 100 and both["explain_ms"] is None


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent.npz"], "no such file"),
    (["--targets", "onnx,gpu"], "--targets must be"),
    (["--batch", "0"], "--batch sizes must be"),
    (["--max-drop", "1"], "--max-drop needs --data"),
    (["--explain"], "pass --video too"),
    (["--model", "/nonexistent/model.onnx", "--targets", "onnx", "--precisions", "fp32"], "no row ran"),
])
def test_bad_input_one_line_exit_2(args, message):
    r = cli("bench", *FAST, *args)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_clear_expressions_benchmark(tmp_path):
    """benchmarks/clear_expressions.py: faces kept by annotator agreement on one of six emotions, and
    the 6-way reading (argmax without neutral) never scores below the 7-way one on the same faces."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import clear_expressions as C
    finally:
        sys.path.pop(0)
    cols = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]
    votes = np.array([[5, 5, 0, 0, 0, 0, 0, 0, 0, 0],   # 5 happy: kept at 5, not at 6
                      [6, 0, 0, 0, 0, 0, 4, 0, 0, 0],   # neutral's majority: never kept
                      [0, 0, 0, 0, 0, 3, 0, 7, 0, 0],   # contempt is not one of the six
                      [0, 0, 0, 0, 0, 0, 9, 0, 1, 0]])  # fear
    rows, names = C.clear_rows(votes, cols, 5)
    assert rows.tolist() == [0, 3] and names.tolist() == ["happy", "fear"]
    assert C.clear_rows(votes, cols, 6)[0].tolist() == [3]
    probs = np.array([[0.1, 0.0, 0.0, 0.3, 0.0, 0.0, 0.6], [0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.7]])  # neutral first
    six, seven = (C.score(probs, FER2013, np.array(["happy", "fear"]), w) for w in (True, False))
    assert six["hits"].tolist() == [True, True] and seven["hits"].tolist() == [False, False]

    data = shared_file("data/fer2013/publictest.npz")
    out = tmp_path / "c.json"
    run = subprocess.run([sys.executable, "benchmarks/clear_expressions.py", "--models", "edgenet3", "--data", str(data),
                          "--agree", "8", "--out", str(out)], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    z = np.load(data)
    assert res["faces"] == len(C.clear_rows(z["ferplus_votes"], [str(c) for c in z["ferplus_columns"]], 8)[0]) > 500
    for m in ("edgenet3", "mini-xception"):  # the baseline is always scored
        assert res["models"][m]["6-way"]["top1"] >= res["models"][m]["7-way"]["top1"] > 50
    bad = subprocess.run([sys.executable, "benchmarks/clear_expressions.py", "--agree", "11"], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--agree 11" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "benchmarks/clear_expressions.py", "--models", str(tmp_path)], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not an edgefer artifact" in bad.stderr and "Traceback" not in bad.stderr
    novotes = tmp_path / "novotes.npz"
    np.savez(novotes, images=z["images"][:10], labels=z["labels"][:10])
    (tmp_path / "cut.npz").write_bytes(novotes.read_bytes()[:200])  # a truncated archive
    for d in (novotes, tmp_path / "missing.npz", tmp_path / "cut.npz"):
        bad = subprocess.run([sys.executable, "benchmarks/clear_expressions.py", "--data", str(d)], cwd=root,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "needs images and FERPlus votes" in bad.stderr and "Traceback" not in bad.stderr


def test_robustness_benchmark(tmp_path):
    """benchmarks/robustness.py: identity shifts leave faces alone, the 6-emotion balanced accuracy
    is the mean recall with neutral left out (argmax over the six), and a real run on PublicTest
    faces writes a cell per model and shift, plain scores matching the model's own top-1."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import robustness as R
    finally:
        sys.path.pop(0)
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    assert np.array_equal(R.gamma(1.0)(faces), faces) and np.array_equal(R.contrast(1.0)(faces), faces)
    assert np.abs(R.zoom(1.0)(faces).astype(int) - faces).max() <= 1
    assert not np.array_equal(R.zoom(1.3)(faces), faces) and R.jpeg(30)(faces).shape == faces.shape
    # classes angry, neutral, fear in the data; the model has FER2013's 7. Neutral faces are left
    # out, and the answer is the argmax over the emotions both have (angry, fear): a fear face the
    # model calls neutral first counts as its next best of those.
    probs = np.full((4, 7), 0.01)
    probs[0, 0] = probs[1, 6] = probs[2, 2] = 0.9
    probs[1, 2] = 0.5  # fear face called neutral first, fear second
    probs[3, 6] = 0.9
    probs[3, 3] = 0.95  # an angry face called happy (not a class of the data), neutral, then fear: wrong
    probs[3, 2] = 0.5
    got = R.balanced_without_neutral(probs, np.array([0, 2, 2, 0]), ["angry", "neutral", "fear"], FER2013)
    assert got == pytest.approx(100 * (0.5 + 1.0) / 2)

    data = shared_file("data/fer2013/publictest.npz")
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "benchmarks/robustness.py", "edgenet3", "mini-xception", "--data", str(data),
                          "--data-size", "120", "--json", str(out), "--plot", str(tmp_path / "r.png")],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"edgenet3", "mini-xception"} and all(len(v) == len(R.SHIFTS) for v in res.values())
    sc = B.load_scoring(str(data), None, 120)
    from edgefer.classify import EmotionClassifier

    p = EmotionClassifier("edgenet3", backend="onnxruntime").predict_images(sc.images)
    assert res["edgenet3"]["plain"]["top1"] == pytest.approx(100 * float((p.argmax(1) == sc.labels).mean()), abs=0.01)
    # a set with no emotion but neutral: nothing to balance, so the cells say so instead of 0 or NaN
    z = np.load(data)
    keep = np.flatnonzero(z["labels"] == 6)[:20]
    neutral = tmp_path / "neutral.npz"
    np.savez(neutral, images=z["images"][keep], labels=np.zeros(len(keep), np.int64), classes=np.array(["neutral"]))
    run = subprocess.run([sys.executable, "benchmarks/robustness.py", "edgenet3", "--data", str(neutral), "--json", str(out),
                          "--plot", str(tmp_path / "n.png")], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert all(c["balanced6"] is None for c in json.loads(out.read_text())["results"]["edgenet3"].values())
    assert run.stdout.strip().splitlines()[-1].endswith("| - |")
    bad = subprocess.run([sys.executable, "benchmarks/robustness.py", "no-such-model", "--data", str(data)],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
