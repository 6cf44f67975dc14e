"""The PyAV decoder for video files (edgefer.avdecode), the default for files since issue 16.

Real H.264 files from ../shared/data/video, damaged copies of them made in tmp_path, and files
encoded here with PyAV in other pixel formats. The reference for "same pixels on every CPU" is
PyAV's decode followed by a plain numpy integer implementation of the conversion formula
(:func:`_reference_bgr`); on x86-64 the conversion must also equal OpenCV's reader / PyAV's swscale
output bit for bit (it is swscale's x86 formula), elsewhere within 2 levels.
"""

from __future__ import annotations

import itertools
import platform
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from edgefer import yuv420
from edgefer.avdecode import AVCapture, bgr_of, bgr_of_420, frame_planes, yuv_terms
from edgefer.capture import decode_only_fps, open_video_file
from edgefer.errors import EdgeferError
from edgefer.sources import open_source

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
SHARED = sorted(VIDEOS.glob("*.mp4")) if VIDEOS.is_dir() else []
needs_videos = pytest.mark.skipif(not SHARED, reason=f"no shared videos at {VIDEOS}")
STAGE = VIDEOS / "stage_360p.mp4"  # 640x360 H.264 BT.709, 275 frames, a stream start time that is not 0
CROWD = VIDEOS / "crowd_720p.mp4"  # 1280x720 H.264 unspecified (BT.601), 391 frames, moov first
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _reference_bgr(y, u, v, colorspace: int, full_range: bool) -> np.ndarray:
    """The formula done the plain way: int32 terms, chroma repeated 2x2, summed, clipped."""
    ys, bu, gu, gv, rv = yuv_terms(colorspace, full_range)
    h, w = y.shape

    def up(a: np.ndarray) -> np.ndarray:
        return a.repeat(2, axis=0).repeat(2, axis=1)[:h, :w]

    luma = ys[y]
    planes = [luma + up(bu[u]), luma + up(gu[u] + gv[v]), luma + up(rv[v])]
    return np.clip(np.dstack(planes), 0, 255).astype(np.uint8)


def _reference_of(frame) -> np.ndarray:
    full = frame.format.name == "yuvj420p" or int(frame.color_range) == 2
    return _reference_bgr(*frame_planes(frame), int(frame.colorspace), full)


def _manual_frames(path: Path, n: int) -> list[np.ndarray]:
    """The first n frames decoded by PyAV and converted by the numpy reference, by hand."""
    out = []
    with av.open(str(path)) as c:
        for f in itertools.islice(c.decode(c.streams.video[0]), n):
            assert f.format.name == "yuv420p"
            out.append(_reference_of(f))
    return out


def _take(src, n: int) -> list:
    frames = []
    try:
        for fr in src:
            frames.append(fr)
            if len(frames) == n:
                break
    finally:
        src.close()
    return frames


@needs_videos
@pytest.mark.parametrize("name", ["stage_360p.mp4", "webcam_720p.mp4"])
def test_default_decoder_frames_equal_the_integer_reference(name, monkeypatch):
    monkeypatch.delenv("EDGEFER_DECODER", raising=False)
    src = open_source(str(VIDEOS / name))
    assert src.decoder == "pyav" and isinstance(src.cap, AVCapture)
    got = _take(src, 40)
    want = _manual_frames(VIDEOS / name, 40)
    assert [f.index for f in got] == list(range(40))
    for fr, ref in zip(got, want, strict=True):
        assert fr.image.dtype == np.uint8 and fr.image.shape == ref.shape
        assert np.array_equal(fr.image, ref)


@needs_videos
@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_count_fps_and_size_match_opencv(path):
    cap, ref = AVCapture(path), cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened() and ref.isOpened()
        for prop in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FPS, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            assert cap.get(prop) == pytest.approx(ref.get(prop), rel=1e-9), prop
    finally:
        cap.release()
        ref.release()


@needs_videos
def test_frames_decoded_and_timestamps_match_opencv():
    """Every frame of a file whose stream starts after 0: same count, same positions in ms."""
    cap, ref = AVCapture(STAGE), cv2.VideoCapture(str(STAGE))
    n = 0
    while True:
        ok_a, _ = cap.read()
        ok_b, _ = ref.read()
        assert ok_a == ok_b, n
        if not ok_a:
            break
        n += 1
        assert cap.get(cv2.CAP_PROP_POS_FRAMES) == ref.get(cv2.CAP_PROP_POS_FRAMES) == n
        assert cap.get(cv2.CAP_PROP_POS_MSEC) == pytest.approx(ref.get(cv2.CAP_PROP_POS_MSEC), abs=1e-3)
    assert n == int(ref.get(cv2.CAP_PROP_FRAME_COUNT)) == 275
    cap.release()
    ref.release()


@needs_videos
def test_seek_lands_on_the_very_frame():
    """What the reader's seek probes rely on: set(POS_FRAMES, k), read -> frame k, POS_FRAMES k+1."""
    want = _manual_frames(STAGE, 120)
    cap = AVCapture(STAGE)
    try:
        for k in (97, 5, 119, 0, 64):
            assert cap.set(cv2.CAP_PROP_POS_FRAMES, k)
            assert cap.get(cv2.CAP_PROP_POS_FRAMES) == k
            ok, img = cap.read()
            assert ok and np.array_equal(img, want[k]), k
            assert cap.get(cv2.CAP_PROP_POS_FRAMES) == k + 1
        assert cap.set(cv2.CAP_PROP_POS_FRAMES, 10_000)  # past the end: nothing to read
        assert cap.read() == (False, None)
    finally:
        cap.release()


@needs_videos
def test_env_opencv_picks_the_old_path(monkeypatch):
    monkeypatch.setenv("EDGEFER_DECODER", "opencv")
    src = open_source(str(STAGE))
    assert src.decoder == "opencv" and isinstance(src.cap, cv2.VideoCapture)
    got = _take(src, 10)
    ref = cv2.VideoCapture(str(STAGE))
    for fr in got:
        ok, img = ref.read()
        assert ok and np.array_equal(fr.image, img)
    ref.release()
    monkeypatch.setenv("EDGEFER_DECODER", "pyav")
    assert open_source(str(STAGE)).decoder == "pyav"
    monkeypatch.setenv("EDGEFER_DECODER", "ffmpeg")
    for call in (lambda: open_source(str(STAGE)), lambda: decode_only_fps(str(STAGE), 5)):
        with pytest.raises(EdgeferError, match="EDGEFER_DECODER must be one of pyav, opencv"):
            call()


@needs_videos
def test_decode_only_fps_uses_the_runs_decoder(monkeypatch):
    monkeypatch.delenv("EDGEFER_DECODER", raising=False)
    assert isinstance(open_video_file(str(STAGE)), AVCapture)
    fps, n = decode_only_fps(str(STAGE), 30)
    assert n == 30 and fps > 0
    monkeypatch.setenv("EDGEFER_DECODER", "opencv")
    assert isinstance(open_video_file(str(STAGE)), cv2.VideoCapture)
    assert decode_only_fps(str(STAGE), 30)[1] == 30


@needs_videos
def test_corrupt_stretch_in_h264_counted_as_decode_errors(tmp_path):
    data = bytearray(STAGE.read_bytes())
    a, b = int(len(data) * 0.40), int(len(data) * 0.45)
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path = tmp_path / "mid.mp4"
    path.write_bytes(bytes(data))
    src = open_source(str(path))
    assert src.decoder == "pyav"
    t0 = time.perf_counter()
    idx = [f.index for f in src]
    assert time.perf_counter() - t0 < 20
    assert src.error is None
    assert idx == sorted(set(idx)) and idx[0] == 0 and idx[-1] == 274
    assert src.decode_errors > 0 and src.decode_errors + len(idx) == 275
    assert src.ended_early is False


@needs_videos
def test_truncated_h264_ends_early_and_says_so(tmp_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(CROWD.read_bytes()[: int(CROWD.stat().st_size * 0.15)])
    src = open_source(str(path))
    assert src.decoder == "pyav" and src.total == 391
    t0 = time.perf_counter()
    idx = [f.index for f in src]
    assert time.perf_counter() - t0 < 20
    assert 0 < len(idx) < 391 and idx == list(range(len(idx)))
    assert src.ended_early is True and src.frames_missing == 391 - len(idx)
    assert src.seeks <= 200 and src.error is None


def test_file_neither_decoder_opens_is_one_line(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert not AVCapture(p).isOpened() and open_video_file(str(p)) is None
    with pytest.raises(EdgeferError, match="cannot read video") as e:
        open_source(str(p))
    assert "\n" not in str(e.value)


def _encode(path: Path, pix_fmt: str, n: int = 12, size: tuple[int, int] = (96, 64)) -> list[np.ndarray]:
    """A short libx264 file in ``pix_fmt``; returns the BGR frames written."""
    w, h = size
    frames = []
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[:, : w // 2] = (40, 160, 220)
            img[:, w // 2 :] = (200, 60, 30)
            cv2.rectangle(img, (4 * i, 10), (4 * i + 20, 40), (255, 255, 255), -1)
            frames.append(img)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format=pix_fmt)):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return frames


@pytest.mark.parametrize("pix_fmt", ["yuv444p", "yuv422p"])
def test_other_pixel_formats_still_decode(tmp_path, pix_fmt):
    path = tmp_path / f"{pix_fmt}.mp4"
    written = _encode(path, pix_fmt)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
        want = [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]  # the fallback
    src = open_source(str(path))
    assert src.decoder == "pyav" and src.total == len(written)
    frames = list(src)
    assert [f.index for f in frames] == list(range(len(written)))
    assert src.decode_errors == 0 and src.ended_early is False
    for fr, ref, orig in zip(frames, want, written, strict=True):
        assert np.array_equal(fr.image, ref)
        assert np.abs(fr.image.astype(int) - orig).mean() < 6  # and it is the picture that was written


def test_full_range_yuvj420p_is_converted_exactly(tmp_path):
    """libx264 full-range 4:2:0 (yuvj420p): full-range formula, not the limited one, not swscale."""
    path = tmp_path / "full.mp4"
    written = _encode(path, "yuvj420p")
    src = open_source(str(path))
    frames = list(src)
    assert [f.index for f in frames] == list(range(len(written))) and src.decode_errors == 0
    with av.open(str(path)) as c:
        decoded = list(c.decode(c.streams.video[0]))
    assert decoded[0].format.name == "yuvj420p"
    for fr, f, orig in zip(frames, decoded, written, strict=True):
        y, u, v = frame_planes(f)
        assert np.array_equal(fr.image, _reference_bgr(y, u, v, int(f.colorspace), True))
        limited = _reference_bgr(y, u, v, int(f.colorspace), False)
        assert np.abs(limited.astype(int) - fr.image).max() > 10  # the range really is applied
        assert np.abs(fr.image.astype(int) - orig).mean() < 3  # and it is the picture written
        if X86:  # swscale's x86 converter computes the same formula
            assert np.array_equal(fr.image, f.to_ndarray(format="bgr24"))


@pytest.mark.parametrize("size", [(96, 64), (98, 40), (97, 50), (2, 2), (640, 360)])
def test_fast_path_equals_numpy_reference_for_every_matrix_and_range(size):
    """Random planes (every sample value, odd widths): the cv2 pipeline is the formula, exactly."""
    w, h = size
    rng = np.random.default_rng(w * h)
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    u, v = rng.integers(0, 256, (2, h // 2, (w + 1) // 2), dtype=np.uint8)
    y[0, :2], u[0, 0], v[0, 0] = (0, 255), 0, 255  # the extremes, where clipping matters
    for cs in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10):
        for full in (False, True):
            got = bgr_of_420(y, u, v, colorspace=cs, full_range=full)
            assert got.dtype == np.uint8 and got.shape == (h, w, 3)
            assert np.array_equal(got, _reference_bgr(y, u, v, cs, full)), (cs, full)
    with pytest.raises(ValueError, match="not 4:2:0"):
        bgr_of_420(y[:-1], u, v)


@pytest.mark.parametrize("full", [False, True], ids=["limited", "full"])
@pytest.mark.parametrize("cs", [1, 2, 9])
def test_every_yuv_combination_through_both_paths(cs, full):
    """All 256**3 (Y, U, V): each chroma sample's 2x2 block holds 4 luma values, 64 frames cover
    every Y. Frames whose luma is all in range take the 8-bit path (and are checked on the wide
    path as well), the others the wide path; an odd width drops the last column."""
    ys, bu, gu, gv, rv = yuv_terms(cs, full)
    u, v = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    chroma = [bu[u], gu[u] + gv[v], rv[v]]
    t = yuv420._fast_tables(cs, full)
    paths = 0
    for k in range(64):
        for w in (512, 511):
            y = np.tile((4 * k + np.arange(4, dtype=np.uint8)).reshape(2, 2), (256, 256))[:, :w]
            want = np.clip(np.dstack([ys[y] + c.repeat(2, 0).repeat(2, 1)[:, :w] for c in chroma]), 0, 255)
            assert np.array_equal(bgr_of_420(y, u, v, cs, full), want), (k, w)
            assert np.array_equal(yuv420._bgr_wide(y, u, v, t, w), want), (k, w)
            if t.identity or t.y_lo <= 4 * k and 4 * k + 3 <= t.y_hi:
                assert np.array_equal(yuv420._bgr_8bit(y, u, v, t, w), want), (k, w)
                paths += 1
    assert paths == (128 if full else 110)  # limited range: Y 16..235 in the 8-bit path


@pytest.mark.parametrize("size", [(96, 64), (97, 50), (1281, 722)])
def test_path_choice_by_luma_range(size, monkeypatch):
    """In-range luma (limited range: Y 16..235) and any full-range frame take the 8-bit path; one
    superwhite or subblack sample sends the frame to the wide path. Same pixels either way."""
    w, h = size
    rng = np.random.default_rng(w + h)
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u, v = rng.integers(0, 256, (2, h // 2, (w + 1) // 2), dtype=np.uint8)
    taken = []
    for name in ("_bgr_8bit", "_bgr_wide"):
        real = getattr(yuv420, name)
        monkeypatch.setattr(yuv420, name, lambda *a, real=real, name=name: taken.append(name) or real(*a))
    for luma, full, path in [
        (y, False, "_bgr_8bit"),
        (y, True, "_bgr_8bit"),
        (np.where(np.arange(w) == w - 1, 236, y).astype(np.uint8), False, "_bgr_wide"),  # superwhite
        (np.where(np.arange(w) == 0, 15, y).astype(np.uint8), False, "_bgr_wide"),  # subblack
        (rng.integers(0, 256, (h, w), dtype=np.uint8), True, "_bgr_8bit"),
    ]:
        taken.clear()
        for cs in (1, 2, 9):
            got = bgr_of_420(luma, u, v, cs, full)
            assert np.array_equal(got, _reference_bgr(luma, u, v, cs, full)), (cs, full, path)
        assert taken == [path] * 3


@pytest.mark.skipif(not X86, reason="swscale's formula is the x86 one; other CPUs round otherwise")
@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p"])
def test_matrices_equal_swscale_on_x86(fmt):
    """The colour matrix follows frame.colorspace exactly as swscale (PyAV's bgr24) does."""
    w, h = 100, 50
    rng = np.random.default_rng(7)
    for cs in (1, 2, 4, 5, 6, 7, 9):
        f = av.VideoFrame(w, h, fmt)
        for p in f.planes:
            p.update(rng.integers(0, 256, p.buffer_size, dtype=np.uint8).tobytes())
        f.colorspace = cs
        assert np.array_equal(bgr_of(f), f.to_ndarray(format="bgr24")), cs


@needs_videos
@pytest.mark.parametrize("path", [STAGE, CROWD], ids=lambda p: p.name)
def test_frames_within_2_levels_of_opencv_reader(path):
    """BT.709 (stage) and unspecified (crowd): the old OpenCV reader's colours, to 2 levels; on x86-64 exactly."""
    ref = cv2.VideoCapture(str(path))
    with av.open(str(path)) as c:
        for f in itertools.islice(c.decode(c.streams.video[0]), 12):
            ok, want = ref.read()
            got = bgr_of(f)
            assert ok and got.shape == want.shape
            assert np.abs(got.astype(int) - want).max() <= 2
            if X86:
                assert np.array_equal(got, want)
    ref.release()


@needs_videos
def test_paced_replay_skips_late_frames_with_grab():
    """--realtime on the PyAV path: a slow consumer makes the reader grab (skip) late frames."""
    src = open_source(str(STAGE), realtime=600.0)
    got = []
    for fr in src:
        got.append(fr.index)
        time.sleep(0.01)
    assert got == sorted(set(got))
    # every frame was either delivered or dropped (skipped late by grab, or pushed out of the queue)
    assert src.dropped > 0 and len(got) + src.dropped == 275
    assert src.decode_errors == 0 and src.ended_early is False
