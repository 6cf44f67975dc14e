"""Hostile inputs to the frame sources (issue 12, items 4, 6, 7 and the source side of 9).

Every file here is built in a temp dir: real videos written with cv2.VideoWriter and then cut or
overwritten with garbage, image headers that claim 40000x40000 pixels, out-of-range camera
indices. The CLI cases drive a real `python -m edgefer` subprocess.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefer import capture as sources  # the reader and its recovery budget (split out of edgefer.sources)
from edgefer.errors import EdgeferError
from edgefer.sources import Frame, image_size, load_image, open_source

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

N = 200  # frames per test video
W, H = 320, 240


# --- test videos --------------------------------------------------------------------------


def _frame(i: int, rng: np.random.Generator) -> np.ndarray:
    """A frame that carries its own index as 8 black/white squares (survives any codec)."""
    img = np.full((H, W, 3), 90, np.uint8)
    cv2.rectangle(img, (i % (W - 60), 60), (i % (W - 60) + 60, 120), (0, 200, 255), -1)
    img[140:, ::3] = rng.integers(0, 255, img[140:, ::3].shape, dtype=np.uint8)
    for b in range(8):
        img[0:40, b * 40 : (b + 1) * 40] = 255 if (i >> b) & 1 else 0
    return img


def _ident(img: np.ndarray) -> int:
    return sum(1 << b for b in range(8) if img[10:30, b * 40 + 10 : b * 40 + 30].mean() > 128)


def _write(path: Path, fourcc: str) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (W, H))
    assert vw.isOpened(), f"this OpenCV cannot write {fourcc}"
    rng = np.random.default_rng(0)
    for i in range(N):
        vw.write(_frame(i, rng))
    vw.release()
    return path


def _garble(src: Path, dst: Path, start: float, end: float) -> Path:
    """Overwrite bytes [start, end) (fractions of the size) with seeded random garbage."""
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def _plain_read_count(path: Path) -> int:
    """What a bare read loop (the reader before the fix) gets out of a file."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile_videos")
    mp4 = _write(d / "clip.mp4", "mp4v")
    avi = _write(d / "clip.avi", "MJPG")
    trunc = d / "trunc.avi"
    trunc.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    return {
        "mp4": mp4,
        "avi": avi,
        "mp4_mid": _garble(mp4, d / "mid.mp4", 0.40, 0.50),
        "avi_mid": _garble(avi, d / "mid.avi", 0.40, 0.50),
        "avi_trunc": trunc,
        "avi_garbage": _garble(avi, d / "garbage.avi", 0.002, 1.0),  # the header, then nothing but garbage
    }


def _read_all(path: Path):
    src = open_source(str(path))
    t0 = time.perf_counter()
    frames = [(f.index, f.time_s, _ident(f.image), f.decode_ms) for f in src]
    return src, frames, time.perf_counter() - t0


# --- item 4: a corrupt stretch mid-video -------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_intact_video_reads_every_frame_with_no_errors(videos, kind):
    src, frames, _ = _read_all(videos[kind])
    assert [f[0] for f in frames] == list(range(N))
    assert [f[2] for f in frames] == list(range(N))
    assert src.decode_errors == 0 and src.ended_early is False and src.seeks == 0


def test_corrupt_stretch_mp4_reads_past_it(videos):
    path = videos["mp4_mid"]
    before = _plain_read_count(path)
    assert before < N // 2  # a bare read loop stops at the stretch (77 of 200 here)
    src, frames, dt = _read_all(path)
    idx = [f[0] for f in frames]
    assert len(frames) >= 0.85 * N, f"{len(frames)} frames read (plain loop {before})"
    assert idx == sorted(set(idx)) and idx[-1] == N - 1  # strictly increasing, to the last frame
    assert all(abs(t - i / 25) < 1e-6 for i, t, _, _ in frames)  # time_s follows the file position
    # frame positions are the file's: every frame from the keyframe after the stretch on is right
    assert [f[2] for f in frames[-40:]] == idx[-40:]
    assert sum(f[2] == f[0] for f in frames) >= 0.9 * len(frames)
    assert src.decode_errors == N - len(frames) and src.ended_early is False
    assert dt < 20


def test_corrupt_stretch_mjpeg_avi_no_frame_twice(videos):
    """MJPG: each frame stands alone, so nearly all survive; none may be delivered twice even
    though the AVI demuxer renumbers what follows the garbage and seeking would go back."""
    path = videos["avi_mid"]
    before = _plain_read_count(path)
    src, frames, dt = _read_all(path)
    content = [f[2] for f in frames]
    idx = [f[0] for f in frames]
    assert len(frames) >= 0.85 * N and len(frames) > before
    assert len(set(content)) == len(content), "a frame was delivered twice"
    assert idx == sorted(set(idx))
    assert src.decode_errors + len(frames) == N and src.ended_early is False
    assert dt < 20


def test_truncated_video_ends_early_and_says_so(videos):
    path = videos["avi_trunc"]
    before = _plain_read_count(path)
    src, frames, dt = _read_all(path)
    assert len(frames) == before and 0 < before < N
    assert [f[2] for f in frames] == list(range(before))
    assert src.ended_early is True and src.frames_missing == N - before and src.decode_errors == 0
    assert dt < 20


def test_all_garbage_after_header_ends_quickly(videos):
    src, frames, dt = _read_all(videos["avi_garbage"])
    assert len(frames) <= 2 and src.ended_early is True
    assert dt < 20  # bounded retries: no hang
    assert src.seeks <= sources.RECOVERY_MAX_SEEKS


def test_cli_corrupt_video_keeps_going(videos, tmp_path):
    ev, summ = tmp_path / "e.jsonl", tmp_path / "s.json"
    r = _cli("-q", "run", str(videos["mp4_mid"]), "--no-display", "--events", str(ev), "--summary", str(summ))
    assert r.returncode == 0, r.stderr
    frames = [json.loads(line)["frame"] for line in ev.read_text().splitlines()]
    assert len(frames) >= 0.85 * N and frames[-1] == N - 1
    s = json.loads(summ.read_text())
    assert s["frames"] == len(frames)
    if "decode_errors" in s:  # wired into the summary by commands/run.py
        assert s["decode_errors"] == N - len(frames) and s["ended_early"] is False


# --- item 9 (source side): bounded memory ---------------------------------------------------


def test_source_keeps_no_per_frame_state(videos, monkeypatch):
    """Decode times ride on each Frame; nothing the source holds grows with the frame count."""
    monkeypatch.setattr(sources, "RECENT_FINGERPRINTS", 16)
    src = open_source(str(videos["avi"]))
    frames = list(src)
    assert len(frames) == N and all(isinstance(f, Frame) and f.decode_ms > 0 for f in frames)
    sizes = {k: len(v) for k, v in vars(src).items() if isinstance(v, (list, dict, set, tuple)) or hasattr(v, "maxlen")}
    assert all(n <= 16 for n in sizes.values()), sizes


def test_pipeline_reads_decode_time_from_the_frame(photos_dir, tmp_path):
    """A folder whose first file is skipped: each result's decode time is its own image's."""
    from edgefer.pipeline import Pipeline

    (tmp_path / "a_bomb.png").write_bytes(_png_header(40000, 40000))
    img = cv2.imread(str(photos_dir / "two_people.jpg"))
    cv2.imwrite(str(tmp_path / "b.png"), img)
    results = list(Pipeline().run(str(tmp_path)))
    assert [r.name for r in results] == ["b.png"]
    assert results[0].timings_ms["decode"] > 0


# --- item 6: pixel caps before decoding -----------------------------------------------------


def _png_header(w: int, h: int) -> bytes:
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _jpeg_header(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def _bmp_header(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16


def _webp_header(w: int, h: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _tiff_header(w: int, h: int) -> bytes:
    entries = struct.pack("<HHII", 256, 4, 1, w) + struct.pack("<HHII", 257, 4, 1, h)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + entries + struct.pack("<I", 0)


BOMBS = {
    "bomb.png": _png_header,
    "bomb.jpg": _jpeg_header,
    "bomb.bmp": _bmp_header,
    "bomb.webp": _webp_header,
    "bomb.tif": _tiff_header,
    "bomb.ppm": lambda w, h: f"P6\n# a comment\n{w} {h}\n255\n".encode() + b"\0" * 64,
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_header_bomb_refused_before_decoding(tmp_path, name):
    data = BOMBS[name](40000, 40000)
    assert len(data) < 200
    assert image_size(data) == (40000, 40000)
    p = tmp_path / name
    p.write_bytes(data)
    img, reason = load_image(p)
    assert img is None and "too large" in reason and "40000x40000" in reason
    with pytest.raises(EdgeferError, match="too large"):
        open_source(str(p))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm"])
def test_image_size_matches_real_files(ext):
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    if ext == ".pgm":
        img = img[..., 0]
    ok, buf = cv2.imencode(ext, img)
    assert ok
    assert image_size(buf) == (53, 37)


def test_real_image_over_a_configured_cap(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    cv2.imwrite(str(p), np.zeros((1000, 1200, 3), np.uint8))
    assert load_image(p)[0] is not None  # under the default cap
    assert load_image(p, max_pixels=1_000_000)[0] is None
    monkeypatch.setenv("EDGEFER_MAX_PIXELS", "1000000")
    img, reason = load_image(p)
    assert img is None and "1,200,000 pixels" in reason and "EDGEFER_MAX_PIXELS" in reason
    monkeypatch.setenv("EDGEFER_MAX_PIXELS", "lots")
    with pytest.raises(EdgeferError, match="EDGEFER_MAX_PIXELS"):
        load_image(p)


def test_corrupt_image_is_a_reason_not_a_traceback(tmp_path):
    p = tmp_path / "cut.png"
    ok, buf = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))
    p.write_bytes(buf.tobytes()[:40])
    img, reason = load_image(p)
    assert img is None and reason
    (tmp_path / "zero.png").write_bytes(_png_header(0, 10))
    assert "corrupt header" in load_image(tmp_path / "zero.png")[1]


def test_video_frames_over_the_cap_refused_at_open(videos):
    with pytest.raises(EdgeferError, match="76,800 pixels, over the 10,000-pixel cap"):
        open_source(str(videos["mp4"]), max_pixels=10_000)


# --- through the real CLI -------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgefer", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_cli_folder_with_bombs_processes_the_rest(photos_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("two_people.jpg", "obama-720p.jpg"):
        (folder / name).write_bytes((photos_dir / name).read_bytes())
    for name in ("bomb.png", "bomb.jpg", "bomb.bmp"):
        (folder / name).write_bytes(BOMBS[name](40000, 40000))
    summary = tmp_path / "s.json"
    r = _cli("-q", "run", str(folder), "--no-display", "--summary", str(summary))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    s = json.loads(summary.read_text())
    assert s["frames"] == 2
    assert sorted(x["file"] for x in s["skipped"]) == ["bomb.bmp", "bomb.jpg", "bomb.png"]
    assert all("too large" in x["reason"] for x in s["skipped"])
    assert "two_people.jpg" in r.stdout and "obama-720p.jpg" in r.stdout


def test_cli_single_bomb_and_big_video_one_line(tmp_path, videos):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header(40000, 40000))
    assert "too large" in _one_error_line(_cli("run", str(p), "--no-display"))
    line = _one_error_line(_cli("run", str(videos["mp4"]), "--no-display", env={"EDGEFER_MAX_PIXELS": "10000"}))
    assert "over the 10,000-pixel cap" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--camera", "-1"],
        ["--camera", "99999999999999999999"],
        ["99999999999999999999"],
        ["--camera", "1024"],
    ],
)
def test_cli_camera_index_out_of_range(args):
    r = _cli("run", *args, "--no-display")
    assert r.returncode not in (-11, 139)  # no segfault
    assert "camera index must be between 0 and 1023" in _one_error_line(r)


def test_non_ascii_digits_are_a_path_not_a_camera():
    """'²'.isdigit() is True but int('²') raises: such a SOURCE is a (missing) file name."""
    with pytest.raises(EdgeferError, match="no such file"):
        open_source("²")
    with pytest.raises(EdgeferError, match="camera index must be"):
        open_source(None, camera=-1)
