"""`edgefer analyze`: many videos -> Parquet tables, on the local process pool and on a local Ray.

Real videos cut from ../shared into tmp_path, a garbage file and a truncated AVI; real worker
processes, real ONNX Runtime sessions, real Parquet files read back with pyarrow (and pandas).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install '.[analyze]')")
pq = pytest.importorskip("pyarrow.parquet")

from edgefer import analyze as an  # noqa: E402
from edgefer.cli import main  # noqa: E402
from edgefer.errors import EdgeferError  # noqa: E402

FRAMES = {"a.mp4": 40, "b.mp4": 30}


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _cut(src: Path, dst: Path, n: int, fourcc: str = "mp4v", size: tuple[int, int] | None = None) -> Path:
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w = None
    for _ in range(n):
        ok, img = cap.read()
        assert ok
        if size:
            img = cv2.resize(img, size)
        if w is None:
            w = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*fourcc), fps, (img.shape[1], img.shape[0]))
        w.write(img)
    cap.release()
    w.release()
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory, videos_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    a = _cut(videos_dir / "frown_512.mp4", d / "a.mp4", FRAMES["a.mp4"])
    b = _cut(videos_dir / "expressive_512.mp4", d / "b.mp4", FRAMES["b.mp4"], size=(384, 384))
    bad = d / "bad.mp4"  # an mp4 signature, then garbage: no decodable stream
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(3).integers(0, 256, 20000, np.uint8).tobytes())
    full = _cut(videos_dir / "frown_512.mp4", d / "full.avi", 40, fourcc="MJPG", size=(256, 256))
    trunc = d / "trunc.avi"  # the second half of the file is gone: the video ends before its frame count
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return {"a": a, "b": b, "bad": bad, "trunc": trunc}


def _table(out: Path, name: str):
    return an.read_table(str(out), name)


def _rows(out: Path, name: str) -> list[dict]:
    return _table(out, name).to_pylist()


def _files(out: Path) -> dict[str, int]:
    """Every data file under out -> its mtime_ns (what a resumed run must leave untouched)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _check_tables(out: Path, videos: dict[str, int], classes: list[str]) -> None:
    """Faces cover each video's frames once per face, tracks agree with faces, probabilities are sane."""
    faces = _rows(out, "faces")
    tracks = _rows(out, "tracks")
    for video, n in videos.items():
        fv = [r for r in faces if r["video"] == video]
        assert {r["frame"] for r in fv} <= set(range(n)) and len({r["frame"] for r in fv}) >= 0.8 * n, video
        keys = [(r["range_start"], r["track"], r["frame"]) for r in fv]
        assert len(keys) == len(set(keys)), "a face written twice"
        for r in fv[::7]:
            probs = [r[f"prob_{c}"] for c in classes]
            assert abs(sum(probs) - 1) < 1e-2 and r["confidence"] == pytest.approx(max(probs))
            assert r["emotion"] == classes[int(np.argmax(probs))]
            assert r["x2"] > r["x1"] and r["y2"] > r["y1"] and 0 < r["score"] <= 1
            assert r["time_s"] == pytest.approx(r["frame"] / 30.0, abs=1e-6)
        by_track = Counter((r["range_start"], r["track"]) for r in fv)
        tv = [t for t in tracks if t["video"] == video]
        assert {(t["range_start"], t["track"]): t["frames"] for t in tv} == dict(by_track)
        for t in tv:
            emos = Counter(r["emotion"] for r in fv if (r["range_start"], r["track"]) == (t["range_start"], t["track"]))
            assert t["dominant_share"] == pytest.approx(emos.most_common(1)[0][1] / t["frames"])
            assert emos[t["dominant"]] == emos.most_common(1)[0][1]
            assert sum(t[f"share_{c}"] for c in classes) == pytest.approx(1.0, abs=1e-5)


def test_local_pool_two_videos_one_corrupt_then_resume(clips, tmp_path):
    """Two workers, two good videos and a corrupt one: the corrupt one is an error row, the others
    finish (exit 1); a second run skips the done videos and touches none of their files; a changed
    video or changed settings are redone."""
    from edgefer.classes import FER2013
    from edgefer.pipeline import Pipeline

    out = tmp_path / "out"
    summary = tmp_path / "summary.json"
    inputs = [str(clips["a"]), str(clips["b"]), str(clips["bad"])]
    rc = main(["-q", "analyze", *inputs, "--out", str(out), "--workers", "2", "--summary", str(summary)])
    assert rc == 1
    s = json.loads(summary.read_text())
    assert (s["videos"], s["done"], s["failed"], s["skipped"], s["exit_code"]) == (3, 2, 1, 0, 1)
    assert s["frames"] == sum(FRAMES.values()) and s["workers"] == 2
    classes = list(FER2013)
    _check_tables(out, {str(clips["a"]): 40, str(clips["b"]): 30}, classes)
    videos = {r["video"]: r for r in _rows(out, "videos")}
    assert set(videos) == set(inputs)
    bad = videos[str(clips["bad"])]
    assert bad["status"] == "error" and "corrupt" in bad["error"] and bad["frames"] == 0
    for name in ("a", "b"):
        v = videos[str(clips[name])]
        assert v["status"] == "ok" and v["error"] is None and v["frames"] == FRAMES[f"{name}.mp4"]
        assert v["faces"] >= v["frames"] * 0.8 and v["cpu_ms_per_frame"] > 0 and v["fps"] > 0
        assert v["detector_sha256"].startswith("sha256:") and v["classifier_sha256"].startswith("sha256:")
        assert json.loads(v["settings"])["det_size"] == 640 and v["ranges"] == 1
    # the faces table is what `edgefer run` gives on the same video, row for row
    pipe = Pipeline(threads=1)
    direct = [(r.frame, f.track, f.emotion, round(f.confidence, 4)) for r in pipe.run(str(clips["a"])) for f in r.faces]
    table = sorted((r["frame"], r["track"], r["emotion"], round(r["confidence"], 4))
                   for r in _rows(out, "faces") if r["video"] == str(clips["a"]))
    assert table == sorted(direct)
    # readable as it is by pandas (the folder, no glue code)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with the dev extra
        pd = None
    if pd is not None:
        df = pd.read_parquet(out / "faces")
        assert len(df) == sum(videos[v]["faces"] for v in videos) and "prob_happy" in df.columns

    # resume: the done videos are skipped, their files untouched; the corrupt one is tried again
    before = _files(out)
    rep = an.analyze(inputs, str(out), an.Settings(), workers=2)
    assert (rep.skipped, rep.done, rep.failed, rep.exit_code) == (2, 0, 1, 1)
    after = _files(out)
    for k, t in before.items():
        if "faces" in k or "tracks" in k or "_done" in k:
            assert after[k] == t, f"{k} rewritten on resume"

    # a changed video is redone (and only it); its old files are replaced, never duplicated
    os.utime(clips["b"], ns=(time.time_ns(), time.time_ns()))
    rep = an.analyze(inputs[:2], str(out), an.Settings(), workers=1)
    assert (rep.skipped, rep.done) == (1, 1)
    _check_tables(out, {str(clips["a"]): 40, str(clips["b"]): 30}, classes)
    # other settings redo everything (the tables then hold one settings set)
    rep = an.analyze(inputs[:2], str(out), an.Settings(det_size=320, split_frames=0), workers=2)
    assert (rep.skipped, rep.done) == (0, 2)
    assert {json.loads(r["settings"])["det_size"] for r in _rows(out, "videos") if r["status"] == "ok"} == {320}
    _check_tables(out, {str(clips["a"]): 40, str(clips["b"]): 30}, classes)


def test_killed_job_resumes_where_it_stopped(clips, tmp_path, videos_dir):
    """SIGKILL a running job after its first video is done: the rerun skips that video, finishes
    the others, and no face is written twice (files are renamed into place whole)."""
    out = tmp_path / "out"
    long_clip = _cut(videos_dir / "grimace_480_long.mp4", tmp_path / "long.mp4", 240)
    inputs = [str(clips["a"]), str(long_clip), str(clips["b"])]
    proc = subprocess.Popen([sys.executable, "-m", "edgefer", "-q", "analyze", *inputs, "--out", str(out),
                             "--workers", "1"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((out / "_done").glob("*.json")):
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
        done_first = [json.loads(p.read_text())["video"] for p in (out / "_done").glob("*.json")]
        assert done_first
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    rep = an.analyze(inputs, str(out), an.Settings(), workers=1)
    assert rep.skipped == len(done_first) and rep.done == 3 - len(done_first) and rep.exit_code == 0
    faces = _rows(out, "faces")
    keys = [(r["video"], r["range_start"], r["track"], r["frame"]) for r in faces]
    assert len(keys) == len(set(keys))
    assert {r["video"] for r in _rows(out, "videos") if r["status"] == "ok"} == set(inputs)
    assert {r["video"]: r["frames"] for r in _rows(out, "videos")}[str(long_clip)] == 240
    assert not [p for p in out.rglob(".*.tmp")]


def test_worker_process_killed_mid_video(clips, tmp_path):
    """A worker process that dies mid-video (SIGKILL: what a decoder crash or the OOM killer does)
    is replaced and its video retried; dying again makes that video an error row, and the next
    video still finishes."""
    import multiprocessing as mp

    killed: list[int] = []

    def kill_worker(frames: int) -> None:  # called by the driver as frames of the running task arrive
        if len(killed) >= 2:
            return
        for child in mp.active_children():
            if child.pid not in killed and child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    settings = an.Settings(threads=1)
    tasks = [an.Task(str(clips["a"]), an.video_id(str(clips["a"])), 0, None, 0, 1),
             an.Task(str(clips["b"]), an.video_id(str(clips["b"])), 0, None, 0, 1)]
    for d in ("faces", "tracks"):
        (tmp_path / d).mkdir()
    results = list(an.pool_results(tasks, settings, str(tmp_path), 1, kill_worker))
    assert len(killed) == 2
    by_video = {r["video"]: r for r in results}
    assert len(results) == 2 and "died 2 times" in by_video[str(clips["a"])]["error"]
    assert by_video[str(clips["b"])]["error"] is None and by_video[str(clips["b"])]["frames"] == 30


def test_truncated_video_is_partial_and_done(clips, tmp_path):
    out = tmp_path / "out"
    rep = an.analyze([str(clips["trunc"])], str(out), an.Settings(), workers=1)
    assert (rep.done, rep.partial, rep.failed, rep.exit_code) == (1, 1, 0, 1)
    (row,) = _rows(out, "videos")
    assert row["status"] == "partial" and row["ended_early"] and 0 < row["frames"] < 40
    assert row["frames_missing"] == 40 - row["frames"]
    assert len({r["frame"] for r in _rows(out, "faces")}) > 0
    rep = an.analyze([str(clips["trunc"])], str(out), an.Settings(), workers=1)
    assert rep.skipped == 1  # re-reading the same truncated file would not help: it is done


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray not installed (pip install '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 1024**2,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_local_splits_videos_into_frame_ranges(ray_local, clips, tmp_path):
    """On a local Ray, videos are cut into ranges processed by two actors; every frame is written
    once, ranges are told apart by range_start, and the corrupt video is an error row."""
    from edgefer.classes import FER2013

    out = tmp_path / "out"
    settings = an.Settings(split_frames=12, split_warmup=4)
    inputs = [str(clips["a"]), str(clips["b"]), str(clips["bad"])]
    rep = an.analyze(inputs, str(out), settings, workers=2, ray="local")
    assert (rep.engine, rep.done, rep.failed, rep.exit_code) == ("ray", 2, 1, 1)
    _check_tables(out, {str(clips["a"]): 40, str(clips["b"]): 30}, list(FER2013))
    faces = _rows(out, "faces")
    ranges = {v: sorted({r["range_start"] for r in faces if r["video"] == v}) for v in inputs[:2]}
    assert ranges == {str(clips["a"]): [0, 12, 24], str(clips["b"]): [0, 12, 24]}
    for r in faces:
        assert r["range_start"] <= r["frame"] < r["range_start"] + (16 if r["range_start"] == 24 else 12)
    videos = {r["video"]: r for r in _rows(out, "videos")}
    assert videos[str(clips["a"])]["ranges"] == 3 and videos[str(clips["a"])]["frames"] == 40
    assert videos[str(clips["bad"])]["status"] == "error"
    # the same settings on the local pool: the same keys, so nothing is redone
    rep = an.analyze(inputs, str(out), settings, workers=1)
    assert (rep.skipped, rep.done, rep.failed) == (2, 0, 1)


def _index_video(path: Path, n: int) -> Path:
    """Frames that carry their own index as 8 black/white squares."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 96))
    for i in range(n):
        img = np.full((96, 320, 3), 90, np.uint8)
        for b in range(8):
            img[0:40, b * 40:(b + 1) * 40] = 255 if (i >> b) & 1 else 0
        w.write(img)
    w.release()
    return path


def _ident(img: np.ndarray) -> int:
    return sum(1 << b for b in range(8) if img[10:30, b * 40 + 10:b * 40 + 30].mean() > 128)


def test_range_source_seeks_to_the_exact_frame(tmp_path, videos_dir):
    path = _index_video(tmp_path / "idx.mp4", 120)
    src = an._range_source(str(path), 37, 80)
    got = [(f.index, _ident(f.image), f.time_s) for f in src]
    src.close()
    assert [g[0] for g in got] == list(range(37, 80)) and [g[1] for g in got] == list(range(37, 80))
    assert got[0][2] == pytest.approx(37 / 25)
    tail = an._range_source(str(path), 100, None)
    assert [_ident(f.image) for f in tail] == list(range(100, 120)) and not tail.ended_early
    # an H.264 file: the frame after a seek is the frame read in sequence
    real = str(videos_dir / "expressive_512.mp4")
    cap = cv2.VideoCapture(real)
    seq = [cap.read()[1] for _ in range(101)]
    cap.release()
    (first,) = list(an._range_source(real, 100, 101))
    assert np.array_equal(first.image, seq[100])


def test_plan_ranges():
    s = an.Settings(split_frames=100, split_warmup=10)
    t = an.plan_ranges("/v.mp4", 1000, s)
    assert [(x.start, x.end, x.warmup) for x in t][:2] == [(0, 100, 0), (100, 200, 10)]
    assert t[-1].start == 900 and t[-1].end is None and len(t) == 10 and all(x.ranges == 10 for x in t)
    assert [(x.start, x.end) for x in an.plan_ranges("/v.mp4", 240, s)] == [(0, 100), (100, None)]  # no 40-frame tail
    assert len(an.plan_ranges("/v.mp4", 149, s)) == 1 and len(an.plan_ranges("/v.mp4", None, s)) == 1
    capped = an.plan_ranges("/v.mp4", 1000, an.Settings(split_frames=100, max_frames=240))
    assert [(x.start, x.end) for x in capped] == [(0, 100), (100, 240)]
    assert len(an.plan_ranges("/v.mp4", 10**6, an.Settings(split_frames=0))) == 1


def test_inputs_folders_globs_lists(clips, tmp_path):
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.mp4").write_bytes(clips["a"].read_bytes())
    (d / "y.MOV").write_bytes(b"")
    (d / "notes.txt").write_text("not a list: it is inside a folder, and folders take videos only\n")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# archive\n\ntree/sub/x.mp4\n{clips['b']}\nmissing.mp4\nhttp://cam.example/stream.mp4\n")
    assert an.collect_inputs([str(d)]) == [str((d / "sub" / "x.mp4").resolve()), str((d / "y.MOV").resolve())]
    assert an.collect_inputs([str(tmp_path / "tree" / "**" / "*.mp4")]) == [str((d / "sub" / "x.mp4").resolve())]
    got = an.collect_inputs([str(lst), str(clips["b"])])
    assert got == [str((d / "sub" / "x.mp4").resolve()), str(clips["b"]), str(tmp_path / "missing.mp4"),
                   "http://cam.example/stream.mp4"]
    with pytest.raises(EdgeferError, match="no such file"):
        an.collect_inputs([str(tmp_path / "nope.mp4")])
    with pytest.raises(EdgeferError, match="no file matches"):
        an.collect_inputs([str(tmp_path / "*.webm")])
    assert an.is_ray_address("auto") and an.is_ray_address("10.0.0.5:6379") and an.is_ray_address("ray://head:10001")
    assert not an.is_ray_address(str(d)) and not an.is_ray_address("videos")


def test_bad_input_is_exit_2_before_any_work(clips, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "missing.mp4"), "--out", str(out)]) == 2
    assert main(["analyze", str(clips["a"]), "--out", str(out), "--classifier", str(tmp_path)]) == 2
    assert main(["analyze", "--out", str(out)]) == 2
    assert main(["analyze", str(clips["a"]), "--out", str(out), "--ray", "not-an-address"]) == 2
    if _has_ray():  # nobody answers there: refused at once (Ray itself would retry for minutes)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.monotonic()
        assert main(["analyze", str(clips["a"]), "--out", str(out), f"--ray=127.0.0.1:{port}"]) == 2
        assert time.monotonic() - t0 < 30
    (tmp_path / "file").write_text("")
    assert main(["analyze", str(clips["a"]), "--out", str(tmp_path / "file" / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("edgefer: error:") for line in err.strip().splitlines())
    assert not (out / "faces").exists()  # nothing was started
