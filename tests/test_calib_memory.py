"""INT8 calibration runs in bounded memory and gives the ranges ONNX Runtime gives in memory.

Issue 14: ONNX Runtime's histogram calibrators keep every activation of every sample, so the
README's 300-frame INT8 detector export peaked at 23 GB (about 75 MB per 640x360 frame).
Ranges are now accumulated batch by batch (edgefer.export.ranges). Peak memory is measured in
a fresh subprocess (ru_maxrss is a process-wide high-water mark) on real video frames through
the bundled RetinaFace graph.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = ROOT / "edgefer" / "assets" / "retinaface_mnet025.onnx"

pytest.importorskip("onnx")


def _frames(video: Path, n: int, side: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA))
    cap.release()
    if len(out) < n:
        pytest.skip(f"{video.name} has fewer than {n} frames")
    return np.stack(out)


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    from edgefer.export import quantize as q
    x = np.load(sys.argv[1])[: int(sys.argv[2])]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.activation_ranges(Path(sys.argv[3]), "image", x, "percentile", True, Path(sys.argv[4]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "peak_kb": after}))
""")


def _peak_kb(tmp_path: Path, frames: Path, n: int) -> int:
    cache = tmp_path / f"ranges-{n}.json"
    r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(frames), str(n), str(DETECTOR), str(cache)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert cache.exists()
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_kb"]


def test_percentile_calibration_memory_does_not_grow_with_samples(tmp_path, videos_dir):
    """60 frames may not need more memory than 20: before, each 256x256 frame kept ~21 MB of
    activations (20 -> 60 frames: +0.8 GB); now only one batch of activations is alive."""
    x = _frames(videos_dir / "frown_512.mp4", 60, 256)
    np.save(tmp_path / "frames.npy", x)
    p20 = _peak_kb(tmp_path, tmp_path / "frames.npy", 20)
    p60 = _peak_kb(tmp_path, tmp_path / "frames.npy", 60)
    # 40 more frames of input are 7.9 MB; allow allocator noise, far below the 0.8 GB of the old path
    assert p60 - p20 < 96 * 1024, f"peak RSS 20 frames {p20 / 1024:.0f} MB, 60 frames {p60 / 1024:.0f} MB"


@pytest.mark.parametrize("method,symmetric", [("percentile", True), ("percentile", False), ("minmax", False)])
def test_streamed_ranges_equal_onnxruntime_in_memory_ranges(tmp_path, videos_dir, method, symmetric):
    """Batch-by-batch statistics give bit-identical ranges to ONNX Runtime's own calibrator fed
    everything at once (the result the exports had before), even with tiny batches."""
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from edgefer.export.ranges import compute_ranges

    x = _frames(videos_dir / "frown_512.mp4", 6, 160)
    opts = {"symmetric": symmetric}
    if method == "percentile":
        opts.update(num_bins=2048, percentile=99.999)
    cm = CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax
    batches = [x[i : i + 1] for i in range(len(x))]

    class Reader:
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"image": b}

    with contextlib.redirect_stdout(io.StringIO()):
        cal = create_calibrator(DETECTOR, None, augmented_model_path=str(tmp_path / "aug.onnx"),
                                calibrate_method=cm, extra_options=opts)
        cal.collect_data(Reader())
        ref = cal.compute_data()
    # budget_mb=1: one frame per batch, so the histograms really are summed over batches
    new = compute_ranges(DETECTOR, "image", x, method, symmetric, budget_mb=1, batch_size=1)
    assert sorted(new.keys()) == sorted(ref.keys()) and len(list(ref.keys())) > 50
    differ = [k for k in ref.keys()
              if not all(np.array_equal(a, b) for a, b in zip(ref[k].range_value, new[k].range_value))]
    assert not differ, differ[:5]


def test_frame_batches_build_slices_on_demand(videos_dir):
    """The detector's calibration frames are batched lazily, at the most common input shape."""
    import cv2

    from edgefer.export.frames import FrameBatches

    x = _frames(videos_dir / "frown_512.mp4", 5, 96)
    frames = [x[0], x[1], cv2.resize(x[2], (64, 96)), x[3], x[4]]
    fb = FrameBatches(frames)
    assert len(fb) == 5 and fb.shape == (5, 96, 96, 3)
    b = fb[1:4]
    assert b.shape == (3, 96, 96, 3) and b.dtype == np.uint8
    assert np.array_equal(b[0], x[1])
