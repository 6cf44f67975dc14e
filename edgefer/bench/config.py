"""What a bench run is asked to do (:class:`BenchConfig`) and the vocabulary of its rows.

The names here (targets, precisions, statuses) are shared by the runner, the JSON schema and the
renderers, so they live below all three: one place defines each, nothing imports upward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR

#: p90/p10 of a row's per-round medians above which the bench warns that its latency is noisy
SPREAD_WARN = 1.2
TARGETS = ("onnx", "openvino", "trt", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino", "trt": "tensorrt", "coreml": "coreml"}
STATUSES = ("ok", "export-failed", "run-failed", "unavailable", "skipped")


@dataclass
class BenchConfig:
    """Every knob of one bench run (the CLI's flags, one field each), so the runner takes one object."""

    model: str = DEFAULT_CLASSIFIER
    detector: str = DEFAULT_DETECTOR
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    artifacts: list[str] = field(default_factory=list)
    data: str | None = None
    data_usage: str | None = "PublicTest"
    data_size: int | None = None
    calib: str | None = None
    calib_size: int = 300
    calib_method: str = "minmax"
    arch: str | None = None
    video: str | None = None
    video_frames: int | None = 300
    explain: bool = False  # --video rows run the loop with CAM heatmaps and report their cost
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: int | None = None
    warmup: int = 10
    min_runs: int = 50  # per batch size, over all repeats
    min_seconds: float = 1.0  # per batch size, over all repeats
    max_seconds: float = 5.0
    repeats: int = 3  # timing rounds per batch size, interleaved across rows (spread = p10-p90 of their medians)
    workdir: str | None = None
    progress: bool = True
    # --through-detector: pasted face sizes (px) for accuracy through the detector loop; empty: off
    through_sizes: list[int] = field(default_factory=list)
    through_noise: float = 0.0  # per-pixel camera noise (gray levels) over each pasted frame, face included

