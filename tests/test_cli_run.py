"""`edgefer run` end to end on real videos and photos, and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edgefer.cli import main

EVENT_KEYS = {"frame", "time_s", "faces"}
FACE_KEYS = {"box", "score", "track", "emotion", "confidence", "probs"}


def _events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_event_schema(ev, classes):
    assert set(ev) == EVENT_KEYS
    assert isinstance(ev["frame"], int) and isinstance(ev["time_s"], float)
    for f in ev["faces"]:
        assert set(f) == FACE_KEYS
        x1, y1, x2, y2 = f["box"]
        assert x2 > x1 and y2 > y1
        assert isinstance(f["track"], int) and f["emotion"] in classes
        assert list(f["probs"]) == classes
        assert abs(sum(f["probs"].values()) - 1) < 1e-2
        assert f["confidence"] == max(f["probs"].values())


def test_webcam_video_every_frame(videos_dir, tmp_path):
    from edgefer.classes import FER2013

    out = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    video = tmp_path / "annotated.mp4"
    rc = main(["-q", "run", str(videos_dir / "webcam_720p.mp4"), "--events", str(out), "--no-display",
               "--summary", str(summary), "--output", str(video)])
    assert rc == 0
    evs = _events(out)
    assert len(evs) == 437
    assert [e["frame"] for e in evs] == list(range(437))
    one_face = sum(len(e["faces"]) == 1 for e in evs) / len(evs)
    assert one_face >= 0.95
    for e in evs[::50]:
        _check_event_schema(e, list(FER2013))
    # one person: one track for (almost) the whole clip
    tracks = {f["track"] for e in evs for f in e["faces"]}
    assert len(tracks) <= 3
    s = json.loads(summary.read_text())
    assert s["frames"] == 437 and s["fps"] > 0 and s["dropped_frames"] == 0
    assert {"detect", "classify", "total"} <= set(s["latency_ms"])
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 437
    cap.release()


def test_photo_two_faces(photos_dir, tmp_path, capsys):
    out = tmp_path / "e.jsonl"
    img = tmp_path / "annotated.jpg"
    assert main(["run", str(photos_dir / "two_people.jpg"), "--events", str(out), "-o", str(img)]) == 0
    evs = _events(out)
    assert len(evs) == 1 and len(evs[0]["faces"]) == 2
    assert cv2.imread(str(img)).shape == cv2.imread(str(photos_dir / "two_people.jpg")).shape
    assert "two_people.jpg: 2 faces" in capsys.readouterr().out


def test_folder_skips_unreadable(photos_dir, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("two_people.jpg", "obama-720p.jpg"):
        (folder / name).write_bytes((photos_dir / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "e.jsonl"
    outdir = tmp_path / "annotated"
    assert main(["run", str(folder), "--events", str(out), "-o", str(outdir), "--summary", str(tmp_path / "s.json")]) == 0
    assert len(_events(out)) == 2
    assert sorted(p.name for p in outdir.iterdir()) == ["obama-720p.jpg", "two_people.jpg"]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["skipped"] == [{"file": "broken.jpg", "reason": "unreadable or not an image"}]


def test_video_cut_short_keeps_what_was_read(videos_dir, tmp_path):
    """An AVI cut in half mid-file: the readable frames are processed and kept, exit 0."""
    cap = cv2.VideoCapture(str(videos_dir / "frown_512.mp4"))
    full = tmp_path / "full.avi"
    w = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 30, (512, 512))
    for _ in range(40):
        ok, f = cap.read()
        w.write(f)
    w.release()
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "e.jsonl"
    assert main(["-q", "run", str(cut), "--events", str(out), "--no-display"]) == 0
    n = len(_events(out))
    assert 5 <= n < 40


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "/no/such/video.mp4"], "no such file"),
        (["run", "--camera", "42"], "cannot open camera"),
        (["run", "rtsp://127.0.0.1:9/none"], "cannot open stream"),
        (["run", "{photos}/two_people.jpg", "--classifier", "retinaface-mnet025"], "is a detector, not a classifier"),
        (["run", "{photos}/two_people.jpg", "--classifier", "nonexistent-model"], "not found"),
        (["run", "{photos}/two_people.jpg", "--output", "/no/such/dir/out.jpg"], "does not exist"),
        (["run", "{photos}/two_people.jpg", "--backend", "nope"], "unknown backend"),
        (["info", "{tmp}/garbage.json"], "not valid JSON"),
    ],
)
def test_bad_input_one_line_exit_2(photos_dir, tmp_path, args, needle):
    (tmp_path / "garbage.json").write_text("{oops")
    args = [a.format(photos=photos_dir, tmp=tmp_path) for a in args]
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


def test_corrupt_model_is_refused(tmp_path, photos_dir):
    """A classifier artifact whose ONNX file was damaged: checksum mismatch, one line, exit 2."""
    import shutil

    from edgefer.artifact import ASSETS

    art = tmp_path / "clf"
    art.mkdir()
    shutil.copy(ASSETS / "mini_xception.onnx", art / "mini_xception.onnx")
    m = json.loads((ASSETS / "mini_xception.json").read_text())
    (art / "manifest.json").write_text(json.dumps(m))
    data = bytearray((art / "mini_xception.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (art / "mini_xception.onnx").write_bytes(bytes(data))
    r = _cli("run", str(photos_dir / "two_people.jpg"), "--classifier", str(art))
    assert r.returncode == 2 and "checksum" in r.stderr


def test_model_that_does_not_fit_its_manifest(tmp_path, photos_dir):
    """A manifest that lists 4 classes for a 7-class model is refused when loaded."""
    import shutil

    from edgefer.artifact import ASSETS, Manifest, write_artifact

    art = tmp_path / "clf"
    art.mkdir()
    shutil.copy(ASSETS / "mini_xception.onnx", art / "mini_xception.onnx")
    m = Manifest.from_dict(json.loads((ASSETS / "mini_xception.json").read_text()))
    m.classes = ["a", "b", "c", "d"]
    write_artifact(m, art)
    r = _cli("run", str(photos_dir / "two_people.jpg"), "--classifier", str(art))
    assert r.returncode == 2 and "does not fit its manifest" in r.stderr


def test_demo(tmp_path):
    pytest.importorskip("skimage")
    out = tmp_path / "demo.jsonl"
    assert main(["-q", "run", "--demo", "--events", str(out), "--max-frames", "12"]) == 0
    evs = _events(out)
    assert len(evs) == 12 and all(len(e["faces"]) == 1 for e in evs)


def test_python_api(photos_dir):
    import edgefer

    pipe = edgefer.Pipeline()
    results = list(pipe.run(str(photos_dir / "kit_with_rose.jpg")))
    assert len(results) == 1 and len(results[0].faces) == 2
    img = cv2.imread(str(photos_dir / "obama-720p.jpg"))
    r = pipe.process(img)
    assert len(r.faces) == 1 and r.faces[0].emotion in pipe.classes
    assert np.isclose(sum(r.faces[0].probs.values()), 1, atol=1e-3)


def test_realtime_replay_reports_live_latency_and_drops(videos_dir, tmp_path, capsys):
    """--realtime replays a file as a camera: every offered frame is either processed or counted as
    dropped, latency is measured from each frame's due time, and the summary says so."""
    summary = tmp_path / "s.json"
    out = tmp_path / "e.jsonl"
    # 300 fps replay: far faster than the loop runs on a CPU (detection alone takes > 3.3 ms), so frames must drop
    rc = main(["run", str(videos_dir / "frown_512.mp4"), "--realtime-fps", "300", "--no-display",
               "--events", str(out), "--summary", str(summary)])
    assert rc == 0
    s = json.loads(summary.read_text())
    live = s["live"]
    assert live["replayed_file"] and live["source_fps"] == 300
    assert live["frames_offered"] == 354 == s["frames"] + s["dropped_frames"]
    assert s["dropped_frames"] == live["dropped"] > 0
    frames = [e["frame"] for e in _events(out)]
    assert frames == sorted(set(frames)) and len(frames) == s["frames"]  # in order, none twice
    assert 0 < live["latency_p50_ms"] <= live["latency_p99_ms"]
    assert live["latency_p99_intervals"] == pytest.approx(live["latency_p99_ms"] / (1000 / 300), rel=1e-2)
    assert "frame intervals at 300 fps" in capsys.readouterr().out
    # on an image, --realtime is refused in one line
    assert main(["run", str(videos_dir.parent / "photos" / "two_people.jpg"), "--realtime", "--no-display"]) == 2
    assert "--realtime replays a video file" in capsys.readouterr().err
