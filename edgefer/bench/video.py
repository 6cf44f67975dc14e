"""The end-to-end row cells: one row's classifier inside the full detect -> classify loop on
``--video``, its fps, p99 frame latency, CPU ms per frame, and (``--explain``) what heatmaps cost.

The decode-only fps of the same frames (measured once per bench, :func:`edgefer.sources.decode_only_fps`)
is the ceiling a loop can reach, so each row also reports its ratio to it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EdgeferError
from .schema import one_line

if TYPE_CHECKING:
    from .config import BenchConfig


def measure_video(row: dict[str, Any], path: str, target: str, cfg: BenchConfig,
              decode: tuple[float, int] | None) -> None:
    """Run the loop with the classifier at ``path`` and fill the row's video cells; ``decode`` is
    (decode-only fps, frames) of the same video, or None."""
    from ..pipeline import Pipeline

    opts: dict[str, Any] = {"threads": cfg.threads} if cfg.threads else {}
    explain = cfg.explain and target != "ensemble"  # heatmaps come from single classifiers
    backend = "onnxruntime" if target == "onnx" else "auto"
    try:
        pipe = Pipeline(detector=cfg.detector, classifier=path, backend=backend, explain=explain, **opts)
    except EdgeferError as e:
        if not explain:
            raise
        # no CAM output in this artifact: time the loop without heatmaps and say why
        row["explain_skipped"] = one_line(e)[:200]
        explain = False
        pipe = Pipeline(detector=cfg.detector, classifier=path, backend=backend, **opts)
    drawn: list[float] = []
    for r in pipe.run(cfg.video, max_frames=cfg.video_frames):
        if explain:  # the overlay is part of what --explain costs, as in `edgefer run`
            from ..explain import draw_heatmaps

            t0 = time.perf_counter()
            draw_heatmaps(r.image, r)
            drawn.append((time.perf_counter() - t0) * 1e3)
    st = pipe.stats
    st.finish()
    p = st.percentiles()
    row["e2e_fps"] = round(st.fps(), 2)
    cpu = st.cpu_ms_per_frame()
    row["cpu_ms_per_frame"] = None if cpu is None else round(cpu, 3)  # process CPU (all threads) / frames
    row["e2e_p99_ms"] = round(p.get("total", {}).get("p99", float("nan")), 2)
    row["e2e_p50_ms"] = round(p.get("total", {}).get("p50", float("nan")), 2)
    row["stage_p50_ms"] = {k: round(v["p50"], 3) for k, v in p.items()}
    if explain:
        cost = p.get("explain", {}).get("mean", 0.0) + (float(np.mean(drawn)) if drawn else 0.0)
        frame_ms = 1e3 / st.fps() if st.fps() else float("nan")
        row["explain_ms"] = round(cost, 3)  # maps picked and placed + drawn, per frame
        row["explain_pct"] = round(100 * cost / frame_ms, 2) if frame_ms == frame_ms else None
    row["video_frames"] = st.frames
    row["video_faces"] = st.faces
    if decode:
        row["decode_fps"] = round(decode[0], 1)
        row["e2e_ratio"] = round(row["e2e_fps"] / decode[0], 4) if decode[0] else None
