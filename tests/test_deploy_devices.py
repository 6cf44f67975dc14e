"""Deployment device options: TensorRT DLA / workspace / timing cache, Core ML compute units,
ONNX Runtime's CoreML EP, GStreamer camera pipelines, Jetson platform detection.

The checks that need the device (a Jetson's DLA and CSI camera, a Mac's Core ML) run there and
skip here with the reason; the option validation, the pipeline strings and the one-line errors
run everywhere, on the real modules (no stand-ins for TensorRT, Core ML or OpenCV).
"""

from __future__ import annotations

import platform
import shutil

import numpy as np
import pytest

from edgefer.errors import EdgeferError

MAC = platform.system() == "Darwin"


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


# ----------------------------------------------------------------------------- TensorRT options
def test_trt_device_names_parse(monkeypatch):
    from edgefer.backends.tensorrt import parse_device

    monkeypatch.delenv("EDGEFER_TRT_DEVICE", raising=False)
    assert parse_device(None) == (0, None)
    assert parse_device("gpu") == (0, None)
    assert parse_device("1") == (1, None)
    assert parse_device("cuda:1") == (1, None)
    assert parse_device("dla0") == (0, 0)
    assert parse_device("DLA1") == (0, 1)
    assert parse_device("dla:1") == (0, 1)
    assert parse_device("dla") == (0, 0)


@pytest.mark.parametrize("bad", ["dla7", "dla2", "npu", "gpu:x", "dla-1", "cuda:0:1"])
def test_trt_bad_device_is_one_line(bad):
    from edgefer.backends.tensorrt import parse_device

    with pytest.raises(EdgeferError) as e:
        parse_device(bad)
    assert bad in _one_line(e)


def test_trt_device_from_environment(monkeypatch):
    from edgefer.backends.tensorrt import parse_device

    monkeypatch.setenv("EDGEFER_TRT_DEVICE", "dla1")
    assert parse_device(None) == (0, 1)
    monkeypatch.setenv("EDGEFER_TRT_DEVICE", "dla9")
    with pytest.raises(EdgeferError):
        parse_device(None)


def test_trt_export_options_checked_without_tensorrt():
    from edgefer.export.targets.trt import build_options

    assert build_options("dla1", 512)["dla_core"] == 1
    with pytest.raises(EdgeferError) as e:
        build_options("dla7")
    assert "dla7" in _one_line(e)
    with pytest.raises(EdgeferError) as e:
        build_options("dla0", workspace_mb=0)
    assert "workspace" in _one_line(e)


@pytest.mark.parametrize("bad", [0, -5, "lots", 10**9, True])
def test_trt_workspace_range(bad):
    from edgefer.backends.tensorrt import check_workspace

    with pytest.raises(EdgeferError) as e:
        check_workspace(bad)
    _one_line(e)


def test_trt_workspace_default_and_env(monkeypatch):
    from edgefer.backends.tensorrt import DEFAULT_WORKSPACE_MB, check_workspace

    monkeypatch.delenv("EDGEFER_TRT_WORKSPACE_MB", raising=False)
    assert check_workspace(None) == DEFAULT_WORKSPACE_MB
    monkeypatch.setenv("EDGEFER_TRT_WORKSPACE_MB", "256")
    assert check_workspace(None) == 256
    assert check_workspace("2048") == 2048


def test_trt_dla_refuses_fp32_and_trt11():
    from edgefer.backends.tensorrt import check_dla

    check_dla(None, "fp32", 10)  # the GPU takes anything
    check_dla(0, "fp16", 10)
    check_dla(1, "int8", 10)
    with pytest.raises(EdgeferError) as e:
        check_dla(0, "fp32", 10)
    assert "FP16" in _one_line(e)
    with pytest.raises(EdgeferError) as e:
        check_dla(0, "int8", 11)
    assert "11" in _one_line(e)


def test_trt_timing_cache_path(tmp_path, monkeypatch):
    from edgefer.backends.tensorrt import timing_cache_path

    monkeypatch.delenv("EDGEFER_TRT_TIMING_CACHE", raising=False)
    here = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    a = timing_cache_path(None, tmp_path, here)
    assert a.parent == tmp_path and "8.7" in a.name and "10.3.0" in a.name and " " not in a.name
    other = timing_cache_path(None, tmp_path, {**here, "tensorrt": "10.7.0"})
    assert other != a  # a cache is per device and TensorRT version, shared between models
    assert timing_cache_path("off", tmp_path, here) is None
    assert timing_cache_path(str(tmp_path / "t.cache"), tmp_path, here) == tmp_path / "t.cache"
    with pytest.raises(EdgeferError):
        timing_cache_path(str(tmp_path), tmp_path, here)  # a folder is not a cache file
    monkeypatch.setenv("EDGEFER_TRT_TIMING_CACHE", "off")
    assert timing_cache_path(None, tmp_path, here) is None


def _dla_cores() -> int:
    try:
        import tensorrt as trt

        from edgefer.backends.tensorrt import _Logger

        return int(trt.Builder(_Logger.get()).num_DLA_cores)
    except Exception:
        return 0


@pytest.mark.skipif(_dla_cores() == 0, reason="DLA build needs TensorRT 10.x on a Jetson with DLA cores (none here)")
def test_dla_engine_builds_and_deserializes_on_the_core(tmp_path):
    import tensorrt as trt

    from edgefer.artifact import load
    from edgefer.backends.tensorrt import _Logger, build_engine

    art = load("mini-xception")
    blob, meta = build_engine(art.model_path, "fp16", max_batch=8, opt_batch=4, onnx_fp32=art.model_path, dla_core=0,
                              timing_cache=tmp_path / "t.cache")
    assert blob and meta["device_type"] == "dla0" and "DLA0+GPU_FALLBACK" in meta["builder_flags"]
    assert meta["dla_layers"] and not meta["dla_layers"].startswith("0 of")  # some layers really run on the DLA
    assert (tmp_path / "t.cache").stat().st_size > 0
    rt = trt.Runtime(_Logger.get())
    rt.DLA_core = 0
    engine = rt.deserialize_cuda_engine(blob)
    assert engine is not None and engine.num_io_tensors == 2
    with pytest.raises(EdgeferError):  # FP32 never reaches the builder with a DLA core
        build_engine(art.model_path, "fp32", dla_core=0)


# ----------------------------------------------------------------------------- Core ML
@pytest.mark.parametrize("name,units", [
    (None, "ALL"), ("all", "ALL"), ("cpu", "CPU_ONLY"), ("gpu", "CPU_AND_GPU"), ("ane", "CPU_AND_NE"),
    ("npu", "CPU_AND_NE"), ("CPU_AND_NE", "CPU_AND_NE"), ("cpu_and_gpu", "CPU_AND_GPU"),
])
def test_coreml_compute_unit_names(name, units):
    from edgefer.backends.coreml import compute_units

    assert compute_units(name) == units


def test_coreml_compute_units_match_coremltools_names():
    from edgefer.backends.coreml import ORT_UNITS, UNITS

    ct = pytest.importorskip("coremltools", reason="coremltools not installed")
    members = set(ct.ComputeUnit.__members__)
    assert set(UNITS.values()) <= members and set(ORT_UNITS) <= members


@pytest.mark.parametrize("bad", ["tpu", "dla0", "cpu+gpu"])
def test_coreml_bad_compute_units_one_line(bad):
    from edgefer.backends.coreml import compute_units

    with pytest.raises(EdgeferError) as e:
        compute_units(bad)
    assert bad in _one_line(e)


def test_ort_coreml_provider_options():
    from edgefer.backends.coreml import ort_coreml_provider_options

    o = ort_coreml_provider_options("ane", cache_dir="/tmp/x")
    assert o == {"ModelFormat": "MLProgram", "MLComputeUnits": "CPUAndNeuralEngine", "ModelCacheDirectory": "/tmp/x"}
    assert ort_coreml_provider_options("cpu")["MLComputeUnits"] == "CPUOnly"
    assert ort_coreml_provider_options(None, "NeuralNetwork")["ModelFormat"] == "NeuralNetwork"
    with pytest.raises(EdgeferError):
        ort_coreml_provider_options("all", "mlpackage")


def _has_coreml_ep() -> bool:
    import onnxruntime as ort

    return "CoreMLExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(_has_coreml_ep(), reason="this onnxruntime has the CoreML EP (see the macOS test)")
def test_ort_coreml_backend_refused_in_one_line_without_the_provider():
    from edgefer.backends import open_backend

    with pytest.raises(EdgeferError) as e:
        open_backend("mini-xception", "ort-coreml")
    assert "CoreMLExecutionProvider" in _one_line(e)


@pytest.mark.skipif(not _has_coreml_ep(), reason="ONNX Runtime's CoreML EP runs on macOS only (not this machine)")
@pytest.mark.parametrize("units", ["all", "cpu", "ane"])
def test_ort_coreml_ep_matches_cpu(units, tmp_path):
    from edgefer.backends import open_backend

    x = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 1), dtype=np.uint8)
    ref = open_backend("mini-xception", "onnxruntime", providers="CPUExecutionProvider").run(x)[0]
    b = open_backend("mini-xception", "ort-coreml", device=units, coreml_cache_dir=str(tmp_path))
    assert b.info()["providers"][0] == "CoreMLExecutionProvider"
    got = b.run(x)[0]
    assert np.abs(got - ref).max() < 2e-2 and (got.argmax(1) == ref.argmax(1)).mean() >= 0.875


@pytest.mark.skipif(not MAC, reason="Core ML prediction needs macOS (not this machine)")
@pytest.mark.parametrize("units", ["cpu", "gpu", "ane", "all"])
def test_coreml_compute_units_predict_batched(units, tmp_path):
    pytest.importorskip("torch", reason="the Core ML export converts the torch module")
    from edgefer.backends import open_backend
    from edgefer.export.api import export_model

    res = export_model("mini-xception", "coreml", "fp16", output=tmp_path / "pkg", progress=False)
    b = open_backend(res.path, "coreml", device=units)
    assert b.info()["compute_units"] == {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "all": "ALL"}[units]
    x = np.random.default_rng(0).integers(0, 256, (12, 64, 64, 1), dtype=np.uint8)
    ref = open_backend("mini-xception", "onnxruntime").run(x)[0]
    got = b.run(x)[0]
    assert got.shape == ref.shape and (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


# ----------------------------------------------------------------------------- GStreamer
def test_csi_pipeline_string():
    from edgefer.gstreamer import csi_pipeline, is_pipeline

    p = csi_pipeline(1, 1920, 1080, 30)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=1920,height=1080,framerate=30/1" in p
    assert "nvvidconv" in p and "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR" in p
    assert p.endswith("appsink drop=1 max-buffers=1 sync=false")
    assert is_pipeline(p)
    with pytest.raises(EdgeferError):
        csi_pipeline(0, 1280, 720, 0)
    with pytest.raises(EdgeferError):
        csi_pipeline(99)


def test_rtsp_hw_pipeline_string():
    from edgefer.gstreamer import is_pipeline, rtsp_hw_pipeline

    p = rtsp_hw_pipeline("rtsp://cam.local:554/stream1")
    assert p.startswith('rtspsrc location="rtsp://cam.local:554/stream1" latency=200 ! rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv')
    assert "appsink drop=1 max-buffers=1" in p and is_pipeline(p)
    assert "rtph265depay ! h265parse" in rtsp_hw_pipeline("rtsp://x/y", codec="h265")
    for bad in ("http://cam/stream", 'rtsp://x/"! filesink location=/etc/passwd', "rtsp://a b"):
        with pytest.raises(EdgeferError) as e:
            rtsp_hw_pipeline(bad)
        _one_line(e)


@pytest.mark.parametrize("s,want", [
    ("clip.mp4", False), ("rtsp://cam/stream", False), ("0", False), ("my!file.mp4", False),
    ("videotestsrc ! videoconvert ! appsink", True), ("v4l2src device=/dev/video0 ! appsink", True),
])
def test_is_pipeline(s, want):
    from edgefer.gstreamer import is_pipeline

    assert is_pipeline(s) is want


@pytest.mark.skipif(__import__("edgefer.gstreamer", fromlist=["x"]).gstreamer_available(),
                    reason="this OpenCV has GStreamer (the refusal is for builds without it)")
def test_open_gstreamer_refused_in_one_line_without_gstreamer():
    from edgefer.gstreamer import csi_pipeline, open_gstreamer

    with pytest.raises(EdgeferError) as e:
        open_gstreamer(csi_pipeline())
    assert _one_line(e).startswith("this OpenCV has no GStreamer: ")


def test_gstreamer_available_reads_the_build_info():
    import cv2

    from edgefer.gstreamer import gstreamer_available

    line = [x for x in cv2.getBuildInformation().splitlines() if x.strip().startswith("GStreamer:")]
    assert gstreamer_available() is bool(line and "YES" in line[0])


def _has_argus() -> bool:
    from edgefer.gstreamer import gstreamer_available

    if not gstreamer_available() or not shutil.which("gst-inspect-1.0"):
        return False
    import subprocess

    return subprocess.run(["gst-inspect-1.0", "nvarguscamerasrc"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_argus(), reason="CSI capture needs a Jetson with OpenCV+GStreamer and nvarguscamerasrc (not here)")
def test_csi_camera_gives_bgr_frames():
    from edgefer.gstreamer import csi_pipeline, open_gstreamer

    cap = open_gstreamer(csi_pipeline(0, 1280, 720, 30))
    try:
        ok, frame = cap.read()
        assert ok and frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
    finally:
        cap.release()


# ----------------------------------------------------------------------------- platform info
def test_platform_info_here_is_not_a_jetson():
    from edgefer.platform_info import platform_info, summary_line

    info = platform_info()
    if info["jetson"]:
        pytest.skip("running on a Jetson")
    assert info["machine"] == platform.machine() and info["cpus"] >= 1 and "nvpmodel" not in info
    assert platform.machine() in summary_line(info)


def test_platform_info_reads_a_jetson_root(tmp_path):
    from edgefer.platform_info import parse_nvpmodel, platform_info, summary_line

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: Fri Jul 19 23:24:25 UTC 2024\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    for i, (lo, hi) in enumerate([("2201600", "2201600"), ("2201600", "2201600")]):
        d = tmp_path / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(lo)
        (d / "scaling_max_freq").write_text(hi)
    info = platform_info(tmp_path, run_commands=False)
    assert info["jetson"] and info["l4t"] == "R36.3.0"
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit" and info["jetson_clocks"] == "on"
    (tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq").write_text("729600")
    info = platform_info(tmp_path, run_commands=False)
    assert info["jetson_clocks"] == "off"
    info["nvpmodel"] = parse_nvpmodel("NV Power Mode: MAXN\n0\n")
    assert info["nvpmodel"] == {"name": "MAXN", "id": 0}
    assert summary_line(info) == "NVIDIA Jetson AGX Orin Developer Kit, L4T R36.3.0, nvpmodel MAXN (0), jetson_clocks off"
