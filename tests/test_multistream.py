"""Several sources in one process: one detector, one classifier, crops of all streams in one call."""

from __future__ import annotations

import json
import subprocess
import sys

from edgefer.cli import main


def _events(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_two_files_match_their_single_runs(videos_dir, tmp_path):
    a, b = videos_dir / "stage_360p.mp4", videos_dir / "expressive_512.mp4"
    both = tmp_path / "both.jsonl"
    summ = tmp_path / "s.json"
    assert main(["-q", "run", str(a), str(b), "--max-frames", "40", "--events", str(both), "--summary", str(summ),
                 "--no-display", "-o", str(tmp_path / "out")]) == 0
    evs = _events(both)
    s = json.loads(summ.read_text())
    assert [e["frames"] for e in s["streams"]] == [40, 40] and s["frames"] == 80
    # one classifier call per round, holding the faces of both streams
    assert s["classifier_calls"] <= 60 and s["faces_per_classifier_call"]["max"] >= 2  # 80 frames, rounds of both
    for i, src in enumerate((a, b)):
        one = tmp_path / f"one{i}.jsonl"
        # streams are interleaved in rounds, not overlapped with a detect thread: the same decisions as --no-overlap
        assert main(["-q", "run", str(src), "--max-frames", "40", "--events", str(one), "--no-display",
                     "--no-overlap"]) == 0
        mine = [e for e in evs if e["stream"] == i]
        ref = _events(one)
        assert [e["frame"] for e in mine] == [e["frame"] for e in ref]
        assert [len(e["faces"]) for e in mine] == [len(e["faces"]) for e in ref]
        pairs = [(f, g) for e, r in zip(mine, ref) for f, g in zip(e["faces"], r["faces"])]
        assert pairs
        assert all(max(abs(x - y) for x, y in zip(f["box"], g["box"])) < 0.5 for f, g in pairs)
        same = sum(f["emotion"] == g["emotion"] for f, g in pairs) / len(pairs)
        assert same >= 0.98, same
        assert (tmp_path / "out" / f"stream{i}.mp4").exists()


def test_live_streams_report_latency_and_drops(videos_dir, tmp_path):
    v = videos_dir / "stage_360p.mp4"
    summ = tmp_path / "s.json"
    assert main(["-q", "run", str(v), str(v), "--realtime-fps", "30", "--max-frames", "45", "--no-display",
                 "--summary", str(summ)]) == 0
    s = json.loads(summ.read_text())
    for e in s["streams"]:
        assert e["live"]["frames_offered"] >= e["frames"] > 0
        assert e["live"]["latency_p99_intervals"] > 0
        assert e["dropped_frames"] == e["live"]["dropped"]


def test_several_sources_bad_input_is_one_line(videos_dir, photos_dir, tmp_path):
    v = str(videos_dir / "stage_360p.mp4")
    for args, needle in (
        ([v, str(photos_dir / "two_people.jpg")], "videos, cameras or URLs"),
        ([v, v, "-o", str(tmp_path / "x.mp4")], "folder"),
        ([v, v, "--events", v], "input"),
    ):
        r = subprocess.run([sys.executable, "-m", "edgefer", "run", *args, "--no-display"], capture_output=True,
                           text=True, timeout=120)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
