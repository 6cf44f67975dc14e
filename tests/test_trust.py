"""Numbers people can trust and advice that works (issue 14, items 5-6 and the should-fix list).

Each test runs the real command or function: exports through the real exporter, the bench on
the bundled model, `edgefer info` on crafted TensorRT / Core ML folders, the advice's command
executed as printed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgefer
from edgefer import bench as B
from edgefer.artifact import BUNDLED, Manifest, load, write_artifact
from edgefer.classes import FER2013

from conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def edgefer_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`edgefer ARGS` as a user runs it, stdout and stderr to pipes (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=ENV)


def run_printed(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a command exactly as edgefer printed it (its leading `edgefer` is this interpreter's)."""
    words = shlex.split(command)
    assert words[0] == "edgefer", command
    return edgefer_cli(*words[1:], cwd=cwd)


# ----------------------------------------------------------------------------- API surface
def test_pipeline_is_listed_by_dir():
    names = dir(edgefer)
    for n in ("Pipeline", "FrameResult", "Face", "load", "load_artifact", "EdgeferError"):
        assert n in names, n
    assert edgefer.Pipeline.__name__ == "Pipeline"


def test_export_help_lists_every_bundled_name():
    r = edgefer_cli("export", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    for name in BUNDLED:
        assert name in text, name
    assert "--cam" in text


# ----------------------------------------------------------------------------- progress in logs
def test_progress_to_a_pipe_has_no_carriage_returns(tmp_path):
    r = edgefer_cli("export", "mini-xception", "--target", "onnx", "-o", str(tmp_path / "mx"))
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "\r" not in r.stdout
    assert re.search(r"export onnx fp32: \d/\d step", r.stderr), r.stderr  # still a progress report, as lines


def test_calibration_on_one_video_counts_frames(videos_dir, capsys):
    from edgefer.artifact import load as load_art
    from edgefer.calibration.samples import collect

    spec = load_art("mini-xception").manifest.input
    cs = collect(str(videos_dir / "frown_512.mp4"), spec, count=6, progress=True)
    err = capsys.readouterr().err
    assert len(cs) > 0 and "\r" not in err
    m = re.search(r"calibration: detecting faces: (\d+)/(\d+) frame", err)
    assert m, err  # counted in frames (not "0/1 file" for the whole run)
    assert int(m.group(1)) == int(m.group(2)) == cs.provenance["frames_searched"] > 1


# ----------------------------------------------------------------------------- the export's check
def _fer_csv(path: Path, pub: dict, n_train: int = 120, n_test: int = 120) -> Path:
    """A FER2013-format CSV (emotion,pixels,Usage) from PublicTest arrays: the first rows labelled
    Training, the next PublicTest (the pixels' origin does not matter to which split is reported)."""
    rows = ["emotion,pixels,Usage"]
    for i in range(n_train + n_test):
        usage = "Training" if i < n_train else "PublicTest"
        rows.append(f"{int(pub['labels'][i])},{' '.join(map(str, pub['images'][i].ravel()))},{usage}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_int8_check_uses_and_names_the_test_split(tmp_path, publictest):
    from edgefer.export.api import export_model

    csv_path = _fer_csv(tmp_path / "fer2013.csv", publictest)
    res = export_model("mini-xception", "onnx", "int8", calib=str(csv_path), calib_size=40, check_size=80,
                       output=tmp_path / "mx8", progress=False)
    v = res.validation
    assert v["split"] == "PublicTest" and "PublicTest split" in v["on"], v["on"]
    assert "top1" in v  # labelled: an accuracy, on faces of the test split
    assert "held_out_checked" not in res.manifest.calibration  # the check did not come from the calibration rows
    assert res.manifest.extra["check_data"] == v["on"]


def test_check_on_training_faces_says_so_and_points_to_val(tmp_path, publictest):
    from edgefer.export.api import check_split, export_model

    train = tmp_path / "solo" / "train.npz"
    train.parent.mkdir()
    np.savez(train, images=publictest["images"][:200], labels=publictest["labels"][:200], classes=np.array(FER2013))
    res = export_model("mini-xception", "onnx", "fp32", calib=str(train), check_size=60, output=tmp_path / "mx",
                       progress=False)
    v = res.validation
    assert v["split"] == "Training" and "Training split" in v["on"], v["on"]
    assert any("--val" in m for m in res.messages), res.messages
    # a publictest.npz beside train.npz is the split the check prefers
    np.savez(train.parent / "publictest.npz", images=publictest["images"][200:300],
             labels=publictest["labels"][200:300], classes=np.array(FER2013))
    cs = check_split(str(train), "Training")
    assert cs.calib_split == "Training" and cs.split == "PublicTest" and cs.name == "publictest.npz"


# ----------------------------------------------------------------------------- bench spread
def test_bench_json_has_repeats_and_spread_and_fits_the_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "b.json"
    r = edgefer_cli("-q", "bench", "--targets", "onnx", "--precisions", "fp32", "--batch", "1,4", "--min-seconds",
                    "0.06", "--repeats", "3", "--json", str(out), "--csv", str(tmp_path / "b.csv"))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    jsonschema.validate(res, B.JSON_SCHEMA)
    assert res["settings"]["repeats"] == 3
    lat = res["rows"][0]["latency_ms"]
    for b in ("b1", "b4"):
        e = lat[b]
        assert e["repeats"] == 3 and len(e["p50_repeats"]) == 3
        assert 0 < e["spread"]["p10"] <= e["spread"]["p90"] and e["spread"]["ratio"] >= 1
    assert "spread" in r.stdout  # the table's column
    header = (tmp_path / "b.csv").read_text().splitlines()[0].split(",")
    assert "latency_b1_repeats" in header and "latency_b1_p50_p90" in header
    # the schema refuses a malformed spread
    bad = json.loads(json.dumps(res))
    bad["rows"][0]["latency_ms"]["b1"]["spread"] = {"p10": 1.0}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, B.JSON_SCHEMA)


def test_wide_spread_between_rounds_is_warned():
    bench = B.Bench(B.BenchConfig(repeats=3))
    steady = B._row("onnx", "fp32", "ok", artifact="a", size_mb=1.0, load_s=0.1)
    steady["_rounds"] = {1: [[1.0] * 20, [1.02] * 20, [0.99] * 20]}
    noisy = B._row("openvino", "fp32", "ok", artifact="b", size_mb=1.0, load_s=0.1)
    noisy["_rounds"] = {1: [[1.0] * 20, [1.6] * 20, [1.1] * 20]}  # one round 60% slower: the case
    bench.rows = [steady, noisy]
    bench.more_rounds()  # no live classifier: summarises the rounds it has
    assert B.spread_ratio(steady) < B.SPREAD_WARN < B.spread_ratio(noisy)
    assert len(bench.notes) == 1 and "openvino/fp32" in bench.notes[0] and "onnx/fp32" not in bench.notes[0]
    assert noisy["latency_ms"]["b1"]["repeats"] == 3


def test_plot_axis_span_and_one_colour_per_row():
    lo, hi = B._padded(69.63, 69.66, B.MIN_ACC_SPAN)
    assert hi - lo >= B.MIN_ACC_SPAN and lo < 69.63 and hi > 69.66
    rows = [B._row("onnx", p, "ok") for p in ("fp32", "fp16", "int8")]
    c = B.row_colours(rows)
    assert len(set(c.values())) == 3 and c == B.row_colours(rows)


# ----------------------------------------------------------------------------- advice that works
def test_explain_advice_is_a_command_that_runs(tmp_path, publictest):
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), cv2.resize(publictest["images"][0], (96, 96)))
    r = edgefer_cli("export", "mini-xception", "--target", "onnx", "--fp16", "-o", "mx16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = edgefer_cli("explain", str(face), "--whole", "--classifier", "mx16", cwd=tmp_path)
    assert r.returncode == 2 and "no class activation map" in r.stderr
    m = re.search(r"`(edgefer export [^`]+)`, then pass --classifier (\S+)", r.stderr)
    assert m, r.stderr
    command, out = m.group(1), m.group(2)
    assert "--cam" in command and "--fp16" in command and "python -m" not in r.stderr
    r = run_printed(command, tmp_path)
    assert r.returncode == 0, r.stderr
    art = load(tmp_path / out)
    assert art.manifest.precision == "fp16" and "cam" in art.manifest.extra
    r = edgefer_cli("explain", str(face), "--whole", "--classifier", out, "-o", "heat.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "heat.png").stat().st_size > 0


def test_ensemble_subcommand_names_members_apart_with_checksums(tmp_path):
    r = edgefer_cli("export", "mini-xception", "--target", "onnx", "--fp16", "-o", "mx16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = edgefer_cli("ensemble", "-o", "ens", "--rule", "vote", "mini-xception", "mx16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    members = m["extra"]["ensemble"]["members"]
    names = [e["name"] for e in members]
    assert len(set(names)) == 2 and names == ["mini-xception-onnx-fp32", "mini-xception-onnx-fp16"]
    for e in members:
        assert e["sha256"] == m["checksums"][e["path"]] and e["files"]
    assert m["provenance"]["command"].startswith("edgefer ensemble ")
    # the old entry point is the same command
    r = subprocess.run([sys.executable, "-m", "edgefer.ensemble", "-o", "ens2", "mini-xception", "mx16"], cwd=tmp_path,
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ens2" / "manifest.json").is_file()
    # info prints it as text: members by name, no Python dicts
    r = edgefer_cli("info", "ens", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "member     mini-xception-onnx-fp16" in r.stdout and "{'" not in r.stdout and "['" not in r.stdout


def _crafted(tmp_path: Path, target: str) -> Path:
    """A TensorRT engine or Core ML package folder with a valid manifest (bytes that no runtime here loads)."""
    d = tmp_path / f"edgenet-{target}-fp16"
    d.mkdir()
    m = Manifest.from_dict(load("edgenet").manifest.to_dict())
    m.target, m.precision = target, "fp16"
    if target == "trt":
        m.files = {"model": "model.engine"}
        (d / "model.engine").write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        m.files = {"model": "model.mlpackage"}
        (d / "model.mlpackage" / "Data").mkdir(parents=True)
        (d / "model.mlpackage" / "Manifest.json").write_text("{}")
        (d / "model.mlpackage" / "Data" / "model.mlmodel").write_bytes(b"\0" * 64)
    write_artifact(m, d)
    return d


@pytest.mark.parametrize("target, runtime", [("trt", "tensorrt"), ("coreml", "coreml")])
def test_info_off_device_prints_the_manifest_and_the_device_checks(tmp_path, target, runtime):
    from edgefer.backends import available

    if available(runtime)[0]:
        pytest.skip(f"{runtime} runs here: this test is about a machine without it")
    d = _crafted(tmp_path, target)
    r = edgefer_cli("info", str(d))
    assert r.returncode == 0, r.stderr
    assert f"target     {target}   precision fp16" in r.stdout and "angry, disgust" in r.stdout
    assert "on device" in r.stdout and "checksums  ok" in r.stdout and "{'" not in r.stdout
    r = edgefer_cli("info", str(d), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["device_checks"][0]["runtime"] == runtime
    # a tampered file is still refused off-device: the checks that can run here do run
    victim = d / ("model.engine" if target == "trt" else "model.mlpackage/Data/model.mlmodel")
    victim.write_bytes(victim.read_bytes()[::-1] + b"x")
    assert edgefer_cli("info", str(d)).returncode == 2


def test_info_names_backend_device_precision_threads():
    r = edgefer_cli("info", "edgenet", "--backend", "onnxruntime")
    assert r.returncode == 0, r.stderr
    assert re.search(r"runs on +onnxruntime, device cpu, precision fp32, threads ", r.stdout), r.stdout
    assert "{'" not in r.stdout


def test_info_prints_the_model_card(tmp_path):
    """The default's card (what it was trained and selected on, what it scores) is in `edgefer
    info`, read from its manifest; a card of the wrong shapes in a user's manifest prints what it
    can and never a traceback."""
    from edgefer.artifact import DEFAULT_CLASSIFIER, load

    art = load(DEFAULT_CLASSIFIER)
    card = art.manifest.extra["card"]
    r = edgefer_cli("info", DEFAULT_CLASSIFIER, "--no-load")
    assert r.returncode == 0, r.stderr
    assert f"selected on {card['selected_on']}" in r.stdout and "PublicTest never selected anything" in r.stdout
    assert f"PublicTest top-1 {card['publictest']['top1']:.2f}%" in r.stdout
    assert f"disgust recall {card['publictest']['recall']['disgust']:.1f}%" in r.stdout
    assert f"logit adjustment tau {card['adjust']['tau']}" in r.stdout
    d = json.loads(art.manifest_path.read_text())
    d["extra"]["card"] = {"trained_on": ["a", {"b": 1}], "publictest": {"top1": "high", "recall": [1]},
                          "through_loop": {"top1_found": 60.0, "gap": "x"}, "latency_ms_per_face_ort_1thread": {"b1": None},
                          "ferplus_majority": 3, "adjust": {"tau": True}}
    root = tmp_path / "m"
    root.mkdir()
    (root / art.model_path.name).write_bytes(art.model_path.read_bytes())
    (root / "manifest.json").write_text(json.dumps(d))
    r = edgefer_cli("info", str(root), "--no-load")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "trained on a, (b 1)" in r.stdout and "through the detector loop 60.00%" in r.stdout
    assert "PublicTest top-1" not in r.stdout and "logit adjustment" not in r.stdout and "{'" not in r.stdout


def test_trt_device_hint_names_no_path_of_this_machine(tmp_path):
    from edgefer.backends import available
    from edgefer.export.api import export_model

    if available("tensorrt")[0]:
        pytest.skip("TensorRT is here: the engine is built now, no device hint")
    res = export_model("mini-xception", "trt", "fp32", output=tmp_path / "deep" / "mx-trt", progress=False)
    assert res.next_command and str(tmp_path) not in res.next_command
    assert res.next_command.startswith("edgefer export mx-trt --target trt")


def test_train_with_missing_data_leaves_no_run_folder(tmp_path):
    pytest.importorskip("torch")
    r = edgefer_cli("train", "--arch", "edgenet", "--data", "missing.npz", cwd=tmp_path)
    assert r.returncode == 2 and "missing.npz" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")  # exists, fails inside the run: what it wrote is removed
    r = edgefer_cli("train", "--arch", "edgenet", "--data", str(bad), "-o", "run", cwd=tmp_path)
    assert r.returncode == 2
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run").exists()


def test_short_training_run_gets_a_warmup_it_can_finish():
    from edgefer.train.cli import _warmup

    assert _warmup(3.0, 60, True, True) == 3.0  # long runs: the default as it was
    assert _warmup(3.0, 1, True, True) == pytest.approx(1 / 3, abs=1e-3)  # a 1-epoch run reaches its peak rate
    assert _warmup(5.0, 2, False, True) == 5.0  # an explicit choice is kept (with a warning)
