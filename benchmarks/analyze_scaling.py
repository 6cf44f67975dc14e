"""How `edgefer analyze` scales: local pool with 1 and 2 workers, Ray local, and a projection.

    python benchmarks/analyze_scaling.py [VIDEO ...] [--repeat 3] [--json benchmarks/results/analyze_scaling.json]

Default videos: three of ../shared/data/video (expressive_512, frown_512, stage_360p: 902 frames).
Each configuration analyzes all of them into a fresh folder (``force``). The configurations run
in interleaved rounds (``--repeat`` of them), so a change of the machine's load hits all of
them alike; the median run of each is reported, with every run's rate. Per run:

* ``job_fps``: frames / wall seconds of the whole job, as a user sees it (pool or actor start,
  model loading in every worker, the tail where a worker is idle, writing the tables);
* ``per_video.pipeline_fps``: a worker's own rate on that video (start-up excluded);
* ``cpu_ms_per_frame``: process CPU per frame inside the workers (the videos table), the cost
  that decides how many cores an archive needs.

``startup_s`` is a job of one frame (pool or actors started, models loaded, one frame, the tables
written); ``ray_init_s`` starting the embedded local Ray (once, before the rounds: Ray stays up,
idle, during the local rounds too). Ray's overhead against the pool is the difference of the two
job walls, plus the init when Ray is started per job.

The projection: one core turns ``1000 / cpu_ms_per_frame`` frames a second; a video at F fps
then takes ``F * 3600`` frames an hour, so ``hours of video per hour = nodes * cores *
efficiency * 1000 / cpu_ms_per_frame / F``, at linear scaling and at the 2-worker efficiency
measured here (the 2-worker speed-up over one worker, divided by 2). The machine, its load
average before and after, and the versions are written beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFER_SHARED", ROOT.parent / "shared"))
DEFAULT_VIDEOS = ["expressive_512.mp4", "frown_512.mp4", "stage_360p.mp4"]


def machine() -> dict:
    import cv2
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__}
    try:
        import ray

        versions["ray"] = ray.__version__
    except ImportError:
        pass
    import pyarrow

    versions["pyarrow"] = pyarrow.__version__
    return {"cpu": cpu, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "versions": versions, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def run_once(videos: list[str], name: str, settings, workers: int, ray: str | None) -> dict:
    from edgefer import analyze as an

    out = tempfile.mkdtemp(prefix=f"analyze-{name}-")
    try:
        t0 = time.perf_counter()
        rep = an.analyze(videos, out, settings, workers=workers, ray=ray, force=True)
        wall = time.perf_counter() - t0
        rows = an.read_table(out, "videos").to_pylist()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert rep.failed == 0, rep.failures
    frames = sum(r["frames"] for r in rows)
    cpu = sum(r["cpu_ms_per_frame"] * r["frames"] for r in rows) / max(frames, 1)
    return {"config": name, "workers": workers, "threads": settings.threads, "overlap": settings.overlap,
            "engine": "ray" if ray else "local", "split_frames": settings.split_frames, "frames": frames,
            "wall_s": round(wall, 3), "job_fps": round(frames / wall, 2), "cpu_ms_per_frame": round(cpu, 3),
            "per_video": [{"video": Path(r["video"]).name, "frames": r["frames"], "ranges": r["ranges"],
                           "pipeline_fps": round(r["fps"], 2), "cpu_ms_per_frame": round(r["cpu_ms_per_frame"], 3)}
                          for r in rows]}


def summarise(runs: list[dict]) -> dict:
    """The median run (by wall time) of a configuration, with the spread of all its runs."""
    runs = sorted(runs, key=lambda r: r["wall_s"])
    med = dict(runs[len(runs) // 2])
    med["job_fps_all"] = [r["job_fps"] for r in runs]
    med["job_fps_best"] = runs[0]["job_fps"]
    return med


def projection(cpu_ms: float, efficiency: float, video_fps: float = 30.0) -> dict:
    per_core = 1000.0 / cpu_ms / video_fps  # hours of video per hour per core, at 100% efficiency
    nodes = {}
    for label, n_nodes, cores in (("laptop, 8 cores", 1, 8), ("1 node x 32 cores", 1, 32),
                                  ("4 nodes x 32 cores", 4, 32), ("16 nodes x 32 cores", 16, 32)):
        nodes[label] = round(n_nodes * cores * efficiency * per_core, 1)
    return {"video_fps": video_fps, "cpu_ms_per_frame": round(cpu_ms, 3), "efficiency": round(efficiency, 3),
            "hours_per_hour_per_core": round(per_core, 3), "hours_of_video_per_hour": nodes,
            "formula": "nodes * cores * efficiency * 1000 / cpu_ms_per_frame / video_fps"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "analyze_scaling.json"))
    args = ap.parse_args(argv)
    from edgefer import analyze as an

    videos = args.videos or [str(SHARED / "data" / "video" / v) for v in DEFAULT_VIDEOS]
    for v in videos:
        if not Path(v).exists():
            print(f"missing {v}", file=sys.stderr)
            return 2
    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f}", flush=True)
    base = an.Settings(split_frames=0)
    configs = [
        ("local-1w-1t", an.Settings(split_frames=0, threads=1), 1, None),
        ("local-1w-2t", an.Settings(split_frames=0, threads=2), 1, None),
        ("local-2w-1t", an.Settings(split_frames=0, threads=1), 2, None),
        ("local-2w-1t-no-overlap", an.Settings(split_frames=0, threads=1, overlap=False), 2, None),
    ]
    ray_init = None
    if not args.no_ray:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2,
                 logging_level="ERROR")
        ray_init = time.perf_counter() - t0
        print(f"  ray init: {ray_init:.1f} s", flush=True)
        configs += [
            ("ray-2a-1t", an.Settings(split_frames=0, threads=1), 2, "local"),
            # videos cut into ranges of ~150 frames: two or three tasks per video
            ("ray-2a-1t-split150", an.Settings(split_frames=150, threads=1), 2, "local"),
        ]
    all_runs: dict[str, list[dict]] = {name: [] for name, *_ in configs}
    startup: dict[str, float] = {}
    try:
        # start-up alone: one frame of one video (spawn or actor start, model loading, one frame, the tables)
        for name, engine in (("local-2w", None), ("ray-2a", "local")):
            if engine and args.no_ray:
                continue
            r = run_once(videos[:1], f"startup-{name}", an.Settings(split_frames=0, threads=1, max_frames=1), 2, engine)
            startup[name] = r["wall_s"]
            print(f"  start-up {name}: {r['wall_s']:.1f} s", flush=True)
        # rounds interleave the configurations, so a change of the machine's load hits them all
        for rnd in range(args.repeat):
            for name, settings, workers, engine in configs:
                r = run_once(videos, name, settings, workers, engine)
                all_runs[name].append(r)
                print(f"  round {rnd + 1} {name}: {r['frames']} frames in {r['wall_s']:.1f} s = {r['job_fps']:.1f} "
                      f"frames/s, {r['cpu_ms_per_frame']:.1f} ms CPU/frame", flush=True)
    finally:
        if ray_init is not None:
            ray.shutdown()
    runs = {name: summarise(v) for name, v in all_runs.items()}
    load1 = os.getloadavg()
    one, two = runs["local-1w-1t"], runs["local-2w-1t"]
    efficiency = two["job_fps"] / (2 * one["job_fps"])
    cpu_ms = two["cpu_ms_per_frame"]
    result = {
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in load1],
        "under_load": max(load0[0], load1[0]) > 0.5 * (os.cpu_count() or 1),
        "videos": [Path(v).name for v in videos],
        "settings": {k: v for k, v in base.result_keys().items() if k != "split_frames"},
        "repeat": args.repeat,
        "runs": runs,
        "startup_s": startup,
        "speedup_2_workers": round(two["job_fps"] / one["job_fps"], 3),
        "efficiency_2_workers": round(efficiency, 3),
        "ray_init_s": None if ray_init is None else round(ray_init, 2),
        "ray_overhead_s": None if "ray-2a-1t" not in runs else round(runs["ray-2a-1t"]["wall_s"] - two["wall_s"], 2),
        # the per-frame CPU cost of a full pool is what a node full of workers pays; projected at
        # linear scaling and at the 2-worker efficiency measured here
        "projection": {"linear": projection(cpu_ms, 1.0), "measured_efficiency": projection(cpu_ms, min(1.0, efficiency))},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("startup_s", "speedup_2_workers", "efficiency_2_workers", "ray_init_s",
                                              "ray_overhead_s", "under_load", "projection")}, indent=1))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
