"""The job: plan the tasks of every video not done yet, run them (local pool or Ray), and as each
video's last range finishes write its row and its done-marker; :func:`analyze` is the Python API
behind ``edgefer analyze``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import EdgeferError
from .inputs import (
    Task,
    collect_inputs,
    done_key,
    file_stamp,
    plan_ranges,
    probe_frames,
    video_id,
)
from .on_ray import check_reachable, ray_results
from .settings import (
    DONE_DIR,
    TABLES,
    Settings,
    model_digest,
    require_pyarrow,
    require_ray,
    usable_cores,
)
from .store import (
    delete_file,
    listdir,
    open_out,
    parts_by_video,
    read_json,
    remove_video_files,
    write_json,
    write_parquet,
)
from .tables import videos_schema
from .workers import pool_results


@dataclass
class Report:
    """What a job did: counts per status, totals, the failures, and where the tables are."""

    out: str
    videos: int = 0
    done: int = 0
    skipped: int = 0
    partial: int = 0
    failed: int = 0
    frames: int = 0
    faces: int = 0
    wall_s: float = 0.0
    workers: int = 0
    engine: str = "local"
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.partial else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [{"video": v, "error": e} for v, e in self.failures]
        d["fps"] = round(self.frames / self.wall_s, 3) if self.wall_s > 0 else None
        d["exit_code"] = self.exit_code
        return d


def _video_row(video: str, vid: str, stamp: dict[str, Any], results: list[dict[str, Any]], settings: Settings,
               digests: dict[str, str], key: str) -> dict[str, Any]:
    from .._version import __version__

    results = sorted(results, key=lambda r: r["start"])
    errors = [r["error"] for r in results if r["error"]]
    frames = sum(r["frames"] for r in results)
    wall = sum(r["wall_s"] for r in results)
    cpu_frames = [(r["cpu_ms_per_frame"], r["frames"]) for r in results if r["cpu_ms_per_frame"] is not None and r["frames"]]
    ended = any(r["ended_early"] for r in results)
    status = "error" if errors else "partial" if ended else "ok"
    src_fps = next((r["source_fps"] for r in results if r["source_fps"]), None)
    last = max((r for r in results if r["frames"]), key=lambda r: r["start"], default=None)
    return {
        "video": video, "video_id": vid, "status": status, "error": "; ".join(dict.fromkeys(errors)) or None,
        "size_bytes": stamp["size"], "mtime_ns": stamp["mtime_ns"],
        "frames": frames, "faces": sum(r["faces"] for r in results), "tracks": sum(r["tracks"] for r in results),
        "ranges": len(results), "source_fps": src_fps,
        "duration_s": (frames / src_fps) if src_fps and last is not None else None,
        # the pipelines' own rate (model loading excluded): frames over the seconds they took
        "fps": (frames / proc) if (proc := sum(r["frames"] / r["fps"] for r in results if r["frames"] and r["fps"])) > 0 else None,
        "cpu_ms_per_frame": (sum(c * n for c, n in cpu_frames) / sum(n for _, n in cpu_frames)) if cpu_frames else None,
        "wall_s": wall, "decode_errors": sum(r["decode_errors"] for r in results), "ended_early": ended,
        "frames_missing": sum(r["frames_missing"] for r in results),
        "settings": json.dumps(settings.result_keys() | {"threads": settings.threads}, sort_keys=True),
        "detector_sha256": digests["detector"], "classifier_sha256": digests["classifier"],
        "edgefer_version": __version__, "hosts": ",".join(sorted({r["host"] for r in results if r["host"]})),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": key,
    }


def analyze(inputs: Sequence[str], out: str, settings: Settings = Settings(), *, workers: int | None = None,
            ray: str | None = None, force: bool = False, progress: bool = False) -> Report:
    """Analyze videos into Parquet tables under ``out``; the Python API behind ``edgefer analyze``.

    ``workers``: processes (local) or actors (Ray); default one per core (local / embedded Ray)
    or one per CPU of the cluster. ``ray``: None for the local pool, ``"local"`` for an embedded
    Ray, or a cluster address. ``force``: redo videos that are already done. Bad input (no videos,
    a bad model, an output that cannot be created) raises :class:`EdgeferError` before any work;
    a video's own failure is its error row (``Report.failed``).
    """
    require_pyarrow()
    if ray is not None:
        require_ray()
    videos = collect_inputs(inputs)
    digests = {"detector": model_digest(settings.detector, "detector"),
               "classifier": model_digest(settings.classifier, "classifier")}
    cores = usable_cores()
    cluster = ray is not None and ray != "local"
    if cluster:
        check_reachable(ray)
    if workers is None and not cluster:
        workers = cores  # a cluster: one actor per CPU it has (ray_results)
    if workers is not None and workers < 1:
        raise EdgeferError(f"workers must be at least 1, not {workers}")
    if settings.threads is None or settings.threads < 1:
        settings = replace(settings, threads=1 if cluster else max(1, cores // (workers or cores)))
    filesystem, root = open_out(out)
    try:
        for d in (*TABLES, DONE_DIR):
            filesystem.create_dir(f"{root}/{d}", recursive=True)
    except (OSError, FileExistsError) as e:
        raise EdgeferError(f"cannot create the output folder {out}: {str(e).splitlines()[0]}") from None
    for t in (*TABLES, DONE_DIR):  # temporaries of a killed job
        for p in listdir(filesystem, f"{root}/{t}"):
            if p.rsplit("/", 1)[-1].startswith(".") and p.endswith(".tmp"):
                delete_file(filesystem, p)
    parts = parts_by_video(filesystem, root)

    report = Report(out=out, videos=len(videos), workers=workers or 0, engine="ray" if ray is not None else "local")
    t_start = time.perf_counter()
    plans: dict[str, dict[str, Any]] = {}
    tasks: list[Task] = []
    todo: list[tuple[str, str, dict[str, Any], str]] = []
    for video in videos:
        vid = video_id(video)
        stamp = file_stamp(video)
        key = done_key(video, stamp, settings, digests)
        marker = read_json(filesystem, f"{root}/{DONE_DIR}/{vid}.json")
        if not force and marker is not None and marker.get("key") == key:
            report.skipped += 1
            continue
        remove_video_files(filesystem, root, vid, parts)
        todo.append((video, vid, stamp, key))
    # frame counts (for ranges and the progress bar): opening a container is I/O-bound, and
    # OpenCV releases the GIL, so an archive of thousands of files is probed on threads
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(probe_frames, [t[0] for t in todo]))
    for (video, vid, stamp, key), count in zip(todo, counts):
        vt = plan_ranges(video, count, settings)
        expect = count if settings.max_frames is None or count is None else min(count, settings.max_frames)
        plans[vid] = {"video": video, "stamp": stamp, "key": key, "left": len(vt), "results": [], "frames": expect or 0}
        tasks.extend(vt)
    # long ranges first: the job ends when its longest task does
    tasks.sort(key=lambda t: -((t.end or 10**12) - t.start))

    bars = _Bars(progress, len(plans), sum(p["frames"] for p in plans.values()))
    try:
        if tasks:
            results = (ray_results(tasks, settings, out, ray, workers, bars.frames) if ray is not None
                       else pool_results(tasks, settings, out, min(workers or cores, len(tasks)), bars.frames))
            for res in results:
                plan = plans[res["vid"]]
                plan["results"].append(res)
                plan["left"] -= 1
                if plan["left"]:
                    continue
                row = _video_row(plan["video"], res["vid"], plan["stamp"], plan["results"], settings, digests, plan["key"])
                _finish_video(filesystem, root, row, [r["start"] for r in plan["results"]])
                report.frames += row["frames"]
                report.faces += row["faces"]
                if row["status"] == "error":
                    report.failed += 1
                    report.failures.append((row["video"], row["error"]))
                else:
                    report.done += 1
                    if row["status"] == "partial":
                        report.partial += 1
                        report.failures.append((row["video"], f"ended early: {row['frames_missing']} frames missing, "
                                                              f"{row['decode_errors']} undecodable"))
                bars.video_done()
    finally:
        bars.close()
    report.wall_s = time.perf_counter() - t_start
    return report


def _finish_video(filesystem, root: str, row: dict[str, Any], starts: list[int]) -> None:
    """The video's row, then (unless it failed) its done-marker; a failed video keeps no part files."""
    import pyarrow as pa

    vid = row["video_id"]
    if row["status"] == "error":  # the ranges that did succeed: their files go too
        remove_video_files(filesystem, root, vid, {vid: [f"{root}/{t}/part-{vid}-{s:09d}.parquet"
                                                         for t in ("faces", "tracks") for s in starts]})
    write_parquet(filesystem, f"{root}/videos/{vid}.parquet", pa.Table.from_pylist([row], schema=videos_schema()))
    if row["status"] != "error":
        write_json(filesystem, f"{root}/{DONE_DIR}/{vid}.json",
                    {"key": row["key"], "video": row["video"], "status": row["status"], "frames": row["frames"],
                     "finished_at": row["finished_at"]})


class _Bars:
    """Two tqdm bars (videos, frames) on stderr; nothing when progress is off or not a terminal."""

    def __init__(self, enabled: bool, videos: int, frames: int):
        self.v = self.f = None
        if enabled and videos:
            from tqdm import tqdm

            self.v = tqdm(total=videos, unit="video", desc="videos", position=0, disable=None, dynamic_ncols=True)
            self.f = tqdm(total=frames or None, unit="frame", desc="frames", position=1, disable=None,
                          dynamic_ncols=True, smoothing=0.1)

    def frames(self, n: int) -> None:
        if self.f is not None:
            self.f.update(n)

    def video_done(self) -> None:
        if self.v is not None:
            self.v.update(1)

    def close(self) -> None:
        for b in (self.f, self.v):
            if b is not None:
                b.close()


def read_table(out: str, table: str):
    """One of the tables as a pyarrow Table (``faces``, ``tracks`` or ``videos``): what the tests
    and the benchmark read; users read the folders with pandas, polars or DuckDB directly."""
    import pyarrow.dataset as ds

    filesystem, root = open_out(out)
    return ds.dataset(f"{root}/{table}", filesystem=filesystem, format="parquet").to_table()
