"""`--backend auto` picks between ONNX Runtime and OpenVINO by measurement, cached per machine.

Real sessions on the bundled models, a real cache file in tmp_path (``EDGEFER_CACHE``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgefer.artifact import load
from edgefer.backends import open_backend
from edgefer.backends import autoselect
from edgefer.errors import EdgeferError

pytest.importorskip("openvino")  # auto has nothing to choose between without a second runtime

ROOT = Path(__file__).resolve().parents[1]
CLF = "edgenet"


@pytest.fixture
def quick(monkeypatch):
    """A shorter timing budget where a test is about the cache, not the numbers (MIN_SAMPLES
    calls per runtime and input are still made)."""
    monkeypatch.setattr(autoselect, "BUDGET_S", 0.05)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache folder, and no auto rule or thread setting inherited from the caller."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEFER_CACHE", str(d))
    for var in ("EDGEFER_AUTO", "EDGEFER_THREADS", "EDGEFER_OV_PINNING", "EDGEFER_ORT_SPIN"):
        monkeypatch.delenv(var, raising=False)
    return d / autoselect.CACHE_NAME


def _entries(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert data["version"] == autoselect.CACHE_VERSION
    return data["entries"]


def test_measures_once_then_reads_the_cache(cache):
    t0 = time.perf_counter()
    first = open_backend(CLF, kind="classifier")
    t_first = time.perf_counter() - t0
    auto = first.info()["auto"]
    assert auto["cached"] is False and auto["rule"] == "measured"
    assert auto["chosen"] == first.name
    assert set(auto["measured_ms"]) == {"onnxruntime", "openvino"}
    assert all(v > 0 for v in auto["measured_ms"].values())
    assert set(auto["per_input_ms"]) == {"1x48x48x1", "8x48x48x1"}  # batch 1 and a typical batch

    # the cache file holds one entry under the right key
    entries = _entries(cache)
    assert len(entries) == 1
    (entry,) = entries.values()
    art = load(CLF, kind="classifier")
    assert entry["key"]["model"] == art.manifest.checksums["edgenet.onnx"]
    assert entry["key"]["machine"] == autoselect.cpu_identity()
    assert set(entry["key"]["versions"]) == {"onnxruntime", "openvino"}
    assert entry["chosen"] == first.name
    assert min(c for per in entry["calls"].values() for c in per.values()) >= autoselect.MIN_SAMPLES
    mtime = cache.stat().st_mtime_ns

    t0 = time.perf_counter()
    second = open_backend(CLF, kind="classifier")
    t_second = time.perf_counter() - t0
    assert second.info()["auto"]["cached"] is True
    assert second.name == first.name
    assert second.info()["auto"]["measured_ms"] == auto["measured_ms"]
    assert cache.stat().st_mtime_ns == mtime  # read, not rewritten
    assert t_second < t_first  # no second runtime loaded, nothing timed


def test_the_cached_choice_is_followed(cache, quick):
    """What the cache says is what runs: flip the stored winner and the next load follows it."""
    b = open_backend(CLF, kind="classifier")
    entries = _entries(cache)
    (key_id,) = entries
    other = "openvino" if b.name == "onnxruntime" else "onnxruntime"
    entries[key_id]["chosen"] = other
    cache.write_text(json.dumps({"version": autoselect.CACHE_VERSION, "entries": entries}))
    again = open_backend(CLF, kind="classifier")
    assert again.name == other
    assert again.info()["auto"]["chosen"] == other and again.info()["auto"]["cached"] is True


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff{not json",
        b'{"version": 2, "entries": [1, 2]}',
        b'{"version": 2, "entries": {"KEY": {"chosen": "tensorrt", "measured_ms": {}}}}',
        b'{"version": 2, "entries": {"KEY": {"chosen": "onnxruntime", "measured_ms": {"onnxruntime": "fast"}}}}',
        b'{"version": 2, "entries": {}, "n": ' + b"9" * 5000 + b"}",
        b"[" * 100000,
    ],
    ids=["binary", "wrong-shape", "foreign-winner", "non-numeric", "huge-int", "deep-nesting"],
)
def test_a_corrupt_cache_file_is_ignored_and_rewritten(cache, quick, content):
    cache.parent.mkdir(parents=True)
    art = load(CLF, kind="classifier")
    key_id, _ = autoselect.cache_key(art, ["onnxruntime", "openvino"], {}, [lb for lb, _ in autoselect.probe_inputs(art)])
    cache.write_bytes(content.replace(b"KEY", key_id.encode()))
    b = open_backend(CLF, kind="classifier")
    assert b.info()["auto"]["cached"] is False
    entries = _entries(cache)  # rewritten as valid JSON, with this model's entry
    assert entries[key_id]["chosen"] == b.name


def test_an_unusable_cache_folder_costs_only_the_measurement(tmp_path, monkeypatch, quick):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("EDGEFER_CACHE", str(blocker))  # mkdir under a file fails
    monkeypatch.delenv("EDGEFER_AUTO", raising=False)
    b = open_backend(CLF, kind="classifier")
    assert b.info()["auto"]["chosen"] == b.name
    assert "not written" in b.info()["auto"]["cache"]


def test_thread_setting_is_part_of_the_key(cache, quick):
    open_backend(CLF, kind="classifier")
    one = open_backend(CLF, kind="classifier", threads=1)
    assert one.info()["auto"]["cached"] is False
    keys = [e["key"]["threads"] for e in _entries(cache).values()]
    assert sorted(keys) == [0, 1]


def test_first_rule_gives_onnxruntime_and_measures_nothing(cache, monkeypatch):
    monkeypatch.setenv("EDGEFER_AUTO", "first")
    b = open_backend(CLF, kind="classifier")
    assert b.name == "onnxruntime"
    assert b.info()["auto"]["chosen"] == "onnxruntime" and "first" in b.info()["auto"]["rule"]
    assert not cache.exists()
    monkeypatch.delenv("EDGEFER_AUTO")
    b = open_backend(CLF, kind="classifier", auto="first")  # the same as a backend option
    assert b.name == "onnxruntime" and not cache.exists()


def test_bad_auto_rule_is_one_line(cache, monkeypatch):
    monkeypatch.setenv("EDGEFER_AUTO", "fastest")
    with pytest.raises(EdgeferError, match="EDGEFER_AUTO must be one of measure, first, remeasure"):
        open_backend(CLF, kind="classifier")


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "ort", "ov"])
def test_an_explicit_backend_never_measures(cache, name):
    b = open_backend(CLF, name, kind="classifier")
    assert b.name == {"ort": "onnxruntime", "ov": "openvino"}.get(name, name)
    assert "auto" not in b.info()
    assert not cache.exists()


def test_remeasure_overwrites_the_entry(cache, monkeypatch, quick):
    open_backend(CLF, kind="classifier")
    (before,) = _entries(cache).values()
    monkeypatch.setenv("EDGEFER_AUTO", "remeasure")
    b = open_backend(CLF, kind="classifier")
    assert b.info()["auto"]["cached"] is False
    (after,) = _entries(cache).values()
    assert after["key"] == before["key"] and after["when"] >= before["when"]


def test_detector_is_timed_on_a_camera_frame_at_full_and_half_size(cache, quick):
    b = open_backend("retinaface-mnet025", kind="detector", spin=False)
    auto = b.info()["auto"]
    assert set(auto["per_input_ms"]) == {"1x360x640x3", "1x180x320x3"}
    (entry,) = _entries(cache).values()
    assert entry["key"]["options"] == {"spin": False}  # measured as the video loop runs it


def test_decision_keeps_the_reference_inside_the_margin():
    order = ["onnxruntime", "openvino"]
    assert autoselect.decide({"onnxruntime": 10.0, "openvino": 9.7}, order) == "onnxruntime"  # 3%: noise
    assert autoselect.decide({"onnxruntime": 10.0, "openvino": 9.0}, order) == "openvino"
    assert autoselect.decide({"onnxruntime": 9.0, "openvino": 10.0}, order) == "onnxruntime"
    assert autoselect.score({"a": 1.0, "b": 100.0}) == pytest.approx(10.0)


def test_run_summary_says_what_ran(cache, tmp_path, videos_dir):
    video = videos_dir / "webcam_720p.mp4"
    if not video.exists():
        pytest.skip("webcam_720p.mp4 not in the shared videos")
    summary = tmp_path / "s.json"
    env = {**os.environ, "EDGEFER_CACHE": str(cache.parent)}
    p = subprocess.run([sys.executable, "-m", "edgefer", "-q", "run", str(video), "--no-display", "--max-frames", "3",
                        "--summary", str(summary)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    s = json.loads(summary.read_text())
    for stage in ("detector", "classifier"):
        assert s[stage]["auto"]["chosen"] == s[stage]["backend"]
        assert set(s[stage]["auto"]["measured_ms"]) == {"onnxruntime", "openvino"}
    assert len(_entries(cache)) == 2

    bad = subprocess.run([sys.executable, "-m", "edgefer", "run", str(video), "--no-display", "--max-frames", "1"],
                         capture_output=True, text=True, env={**env, "EDGEFER_AUTO": "bogus"}, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "EDGEFER_AUTO" in bad.stderr


def test_a_model_too_slow_to_time_keeps_the_reference(cache, monkeypatch):
    """Start-up never stalls on timing a huge model: past the deadline the reference runtime runs
    it, and that outcome is cached so the next start does not try again."""
    monkeypatch.setattr(autoselect, "BUDGET_S", 0.0)
    monkeypatch.setattr(autoselect, "MAX_MEASURE_S", 0.0)
    b = open_backend(CLF, kind="classifier")
    assert b.name == "onnxruntime"
    assert b.info()["auto"]["rule"].startswith("not measured: timing took over")
    assert open_backend(CLF, kind="classifier").info()["auto"]["cached"] is True


def test_without_openvino_auto_is_onnxruntime_silently(cache, monkeypatch, caplog):
    """OpenVINO hidden from the import system (its module name pointed at one that does not exist):
    nothing to compare, so no measurement, no cache file, no warning."""
    monkeypatch.setitem(autoselect.RUNTIME_MODULE, "openvino", "edgefer_no_such_runtime")
    with caplog.at_level("WARNING"):
        b = open_backend(CLF, kind="classifier")
    assert b.name == "onnxruntime" and b.info()["auto"]["rule"].startswith("only installed")
    assert not cache.exists() and not caplog.records
