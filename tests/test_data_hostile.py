"""Data loaders meet hostile files (issue 12, item 15).

Every labeled-data path of the CLI -- ``edgefer bench --data``, ``edgefer calibrate``, ``edgefer
export --calib`` and ``edgefer train --data`` -- reads through :mod:`edgefer.datasets`. Each file
here is built in ``tmp_path`` the way it arrives broken in the field (a non-numeric pixel, a
short row, an unclosed quote, a truncated file, an ``.npz`` with a flipped byte, an object array
that only pickle could load, string or out-of-range labels, crops of the wrong shape or type, no
images at all) and must give exit 2 with one line on stderr naming the file and the CSV line or
``.npz`` key: never a traceback, never a silently wrong score.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgefer.cli import main
from edgefer.classes import FER2013
from edgefer.datasets import load_labeled, open_labeled
from edgefer.errors import EdgeferError

N = 14  # two faces per FER2013 class
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (N, 48, 48), dtype=np.uint8)
LABELS = np.arange(N, dtype=np.int64) % 7


def pixels(im: np.ndarray) -> str:
    return " ".join(map(str, im.reshape(-1)))


def write_csv(path: Path, rows: list[str]) -> Path:
    """A FER2013 CSV: header, then the given raw lines (all Training rows, so every CLI reads them)."""
    path.write_text("emotion,pixels,Usage\n" + "".join(r + "\n" for r in rows))
    return path


def good_rows() -> list[str]:
    return [f"{LABELS[i]},{pixels(IMAGES[i])},Training" for i in range(N)]


def flip_member_byte(src: Path, dst: Path, member: str, offset: int) -> Path:
    """Copy ``src`` with one byte of ``member``'s stored data inverted (its CRC no longer matches)."""
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    assert offset < info.compress_size
    raw[start + offset] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return dst


def forged_npz(path: Path) -> Path:
    """'images' whose .npy header claims 5000 faces over the data of 14 (CRC valid: a crafted file)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, IMAGES)
    data = buf.getvalue()
    forged = data.replace(b"(14, 48, 48), }  ", b"(5000, 48, 48), }", 1)  # same header length
    assert len(forged) == len(data) and forged != data
    lab = io.BytesIO()
    np.lib.format.write_array(lab, LABELS)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", forged)
        z.writestr("labels.npy", lab.getvalue())
    return path


# name -> (builder(tmp_path) -> path, what the one line must also say besides the file name)
def _cases() -> dict:
    c: dict = {}

    def csv_case(name, rows, token):
        c[name] = (lambda d, rows=rows, name=name: write_csv(d / f"{name}.csv", rows), token)

    g = good_rows()
    csv_case("csv-non-numeric-pixel", g[:3] + [g[3].replace(" ", " x", 1)] + g[4:], "line 5")
    csv_case("csv-pixel-300", g[:3] + [f"3,{pixels(np.r_[IMAGES[3].reshape(-1)[:-1].astype(int), 300])},Training"] + g[4:], "line 5")
    csv_case("csv-short-row", g[:6] + [f"3,{pixels(IMAGES[6])}"] + g[7:], "line 8")
    csv_case("csv-bad-quote", g[:2] + [f'3,"{pixels(IMAGES[2])},Training'] + g[3:], "line 4")
    csv_case("csv-quote-in-field", g[:2] + [f'3,"{pixels(IMAGES[2])}"x,Training'] + g[3:], "line 4")
    csv_case("csv-label-7", g[:9] + [f"7,{pixels(IMAGES[9])},Training"] + g[10:], "line 11")
    csv_case("csv-label-minus-1", g[:9] + [f"-1,{pixels(IMAGES[9])},Training"] + g[10:], "line 11")
    csv_case("csv-not-square", g[:1] + [f"1,{pixels(IMAGES[1])} 7,Training"] + g[2:], "line 3")

    def truncated_csv(d):
        p = write_csv(d / "csv-truncated.csv", good_rows())
        p.write_bytes(p.read_bytes()[:-3000])  # cut inside the last row's pixels
        return p

    c["csv-truncated"] = (truncated_csv, f"line {N + 1}")

    def npz_case(name, token, **arrays):
        c[name] = (lambda d, name=name, arrays=arrays: _savez(d / f"{name}.npz", arrays), token)

    npz_case("npz-labels-minus-1", "'labels'", images=IMAGES, labels=np.r_[LABELS[:-1], -1])
    npz_case("npz-labels-7", "'labels'", images=IMAGES, labels=np.r_[LABELS[:-1], 7])
    npz_case("npz-string-labels", "'labels'", images=IMAGES, labels=np.array([FER2013[y] for y in LABELS]))
    npz_case("npz-float-labels", "'labels'", images=IMAGES, labels=LABELS.astype(np.float64) + 0.5)
    npz_case("npz-object-labels", "'labels'", images=IMAGES, labels=np.array([int(y) for y in LABELS][:-1] + [None], dtype=object))
    npz_case("npz-object-images", "'images'", images=np.array([im for im in IMAGES[:-1]] + [None], dtype=object), labels=LABELS)
    npz_case("npz-images-47x48", "'images'", images=IMAGES[:, :47], labels=LABELS)
    npz_case("npz-float-images", "'images'", images=IMAGES.astype(np.float32) / 255, labels=LABELS)
    npz_case("npz-int16-images-300", "'images'", images=IMAGES.astype(np.int16) + 100, labels=LABELS)
    npz_case("npz-zero-images", "'images'", images=IMAGES[:0], labels=LABELS[:0])
    npz_case("npz-empty", "'images'")
    npz_case("npz-missing-labels", "'labels'", images=IMAGES)
    npz_case("npz-labels-count", "labels", images=IMAGES, labels=LABELS[:-2])
    npz_case("npz-duplicate-classes", "'classes'", images=IMAGES, labels=LABELS % 2, classes=np.array(["angry", "anger"]))

    def bad_crc(d, compressed):
        src = d / f"src-{compressed}.npz"
        (np.savez_compressed if compressed else np.savez)(src, images=IMAGES, labels=LABELS)
        name = "npz-bad-crc-compressed" if compressed else "npz-bad-crc"
        return flip_member_byte(src, d / f"{name}.npz", "images.npy", 400)

    c["npz-bad-crc"] = (lambda d: bad_crc(d, False), "'images'")
    c["npz-bad-crc-compressed"] = (lambda d: bad_crc(d, True), "'images'")
    c["npz-forged-header"] = (lambda d: forged_npz(d / "npz-forged-header.npz"), "'images'")

    def truncated_npz(d):
        p = _savez(d / "npz-truncated.npz", {"images": IMAGES, "labels": LABELS})
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return p

    c["npz-truncated"] = (truncated_npz, "truncated")

    def pickle_npz(d):  # a pickle named .npz: np.load would run it with allow_pickle=True
        import pickle

        p = d / "npz-pickle.npz"
        p.write_bytes(pickle.dumps({"images": IMAGES, "labels": LABELS}))
        return p

    c["npz-pickle"] = (pickle_npz, "not a zip archive")
    return c


def _savez(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


CASES = _cases()
#: valid for calibration, which also takes unlabeled crops
UNLABELED_OK = {"npz-missing-labels"}


def one_line_exit_2(argv: list[str], capsys, path: Path, token: str) -> str:
    """Run the CLI in process; the error must be one line naming the file and the row or key."""
    capsys.readouterr()
    rc = main(argv)  # a traceback would propagate out of main() and fail the test
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit {rc}, stderr: {err}"
    assert len(lines) == 1 and "Traceback" not in err, err
    assert path.name in lines[0] and token in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bench_data_refuses(case, tmp_path, capsys):
    build, token = CASES[case]
    p = build(tmp_path)
    one_line_exit_2(["-q", "bench", "--data", str(p), "--usage", "Training", "--targets", "onnx", "--precisions", "fp32",
                     "--batch", "1", "--min-seconds", "0", "--json", str(tmp_path / "b.json")], capsys, p, token)
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("case", sorted(set(CASES) - UNLABELED_OK))
def test_calibrate_refuses(case, tmp_path, capsys):
    build, token = CASES[case]
    p = build(tmp_path)
    out = tmp_path / "calib.npz"
    one_line_exit_2(["-q", "calibrate", str(p), "-o", str(out), "-n", "7"], capsys, p, token)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_data_refuses(case, tmp_path, capsys):
    pytest.importorskip("torch")
    build, token = CASES[case]
    p = build(tmp_path)
    one_line_exit_2(["-q", "train", "--arch", "edgenet", "--data", str(p), "--epochs", "1", "--limit", "14",
                     "--threads", "1", "-o", str(tmp_path / "run")], capsys, p, token)
    assert not (tmp_path / "run" / "best.pth").exists()


@pytest.mark.parametrize("case", ["csv-bad-quote", "npz-bad-crc", "npz-object-labels", "npz-labels-minus-1"])
def test_export_calib_refuses(case, tmp_path, capsys):
    pytest.importorskip("onnx")
    build, token = CASES[case]
    p = build(tmp_path)
    one_line_exit_2(["-q", "export", "edgenet", "--target", "onnx", "--int8", "--calib", str(p),
                     "-o", str(tmp_path / "art")], capsys, p, token)


def test_train_val_and_ferplus_votes_refused(tmp_path, capsys):
    """--val goes through the same reader; a FERPlus vote file with a short row or a bad vote names its line."""
    pytest.importorskip("torch")
    good = write_csv(tmp_path / "fer2013.csv", good_rows())
    bad_val, token = CASES["npz-labels-minus-1"]
    v = bad_val(tmp_path)
    base = ["-q", "train", "--arch", "edgenet", "--epochs", "1", "--threads", "1", "-o", str(tmp_path / "run")]
    one_line_exit_2(base + ["--data", str(good), "--val", str(v)], capsys, v, token)
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    rows = [f"Training,fer{i:07d}.png,10,0,0,0,0,0,0,0,0,0\n" for i in range(N)]
    for name, row, tok in [("short", "Training,fer.png,10,0,0\n", f"line {N + 2}"),
                           ("word", "Training,fer.png,10,0,0,x,0,0,0,0,0,0\n", f"line {N + 2}"),
                           ("negative", "Training,fer.png,10,0,0,-3,0,0,0,0,0,0\n", f"line {N + 2}"),
                           ("quote", 'Training,"fer.png,10,0,0,0,0,0,0,0,0,0\n', f"line {N + 2}")]:
        votes = tmp_path / f"votes-{name}.csv"
        votes.write_text(header + "".join(rows) + row)
        one_line_exit_2(base + ["--data", str(good), "--soft-labels", str(votes)], capsys, votes, tok)


def test_rafdb_label_file_not_text(tmp_path, capsys):
    pytest.importorskip("torch")
    root = tmp_path / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    lab = root / "EmoLabel" / "list_patition_label.txt"
    lab.write_bytes(b"train_00001.jpg 5\ntrain_00002.jpg \xff\xfe\n")
    one_line_exit_2(["-q", "train", "--arch", "edgenet", "--data", str(root), "--epochs", "1", "-o", str(tmp_path / "r")],
                    capsys, lab, "line 2")


def test_class_folder_header_bomb_names_file(tmp_path, capsys):
    """A 68-byte PNG claiming 40000x40000 pixels in a class folder: one line naming it (OpenCV refuses it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    import cv2

    for i, y in enumerate(LABELS[:6]):
        d = tmp_path / "faces" / FER2013[y]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i}.png"), IMAGES[i])
    p = tmp_path / "faces" / "happy" / "bomb.png"
    p.write_bytes(bomb)
    one_line_exit_2(["-q", "bench", "--data", str(tmp_path / "faces"), "--targets", "onnx", "--precisions", "fp32",
                     "--batch", "1", "--min-seconds", "0"], capsys, p, "cannot read image")


def test_calibrate_output_is_not_its_source(tmp_path, capsys):
    p = _savez(tmp_path / "faces.npz", {"images": IMAGES, "labels": LABELS})
    before = p.read_bytes()
    one_line_exit_2(["-q", "calibrate", str(p), "-o", str(p), "-n", "7"], capsys, p, "source")
    assert p.read_bytes() == before


def test_valid_forms_still_read(tmp_path):
    """What the checks must not refuse: integer 0..255 images, (N,H,W,1), (N,1) labels, named classes, a BOM."""
    p = _savez(tmp_path / "int.npz", {"images": IMAGES.astype(np.int32)[..., None], "labels": LABELS[:, None]})
    x, y, classes = load_labeled(p)
    assert x.dtype == np.uint8 and x.shape == (N, 48, 48) and classes == list(FER2013)
    np.testing.assert_array_equal(x, IMAGES)
    np.testing.assert_array_equal(y, LABELS)
    named = _savez(tmp_path / "named.npz", {"images": IMAGES, "labels": LABELS % 2, "classes": np.array(["calm", "anger"])})
    assert load_labeled(named)[2] == ["calm", "anger"]
    unlabeled = open_labeled(_savez(tmp_path / "u.npz", {"images": IMAGES}), require_labels=False)
    assert (unlabeled.labels == -1).all() and len(unlabeled) == N
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + write_csv(tmp_path / "plain.csv", good_rows()).read_bytes())
    x, y, _ = load_labeled(bom, usage="Training")
    np.testing.assert_array_equal(x, IMAGES)
    np.testing.assert_array_equal(y, LABELS)


def test_label_minus_1_is_not_scored_as_the_last_class(tmp_path):
    """The silent failure of the issue: -1 indexed the class map from the end (scored as neutral)."""
    p = _savez(tmp_path / "neg.npz", {"images": IMAGES, "labels": np.r_[LABELS[:-1], -1]})
    with pytest.raises(EdgeferError, match=r"found -1 at index 13"):
        open_labeled(p)


def test_npz_member_cap(tmp_path, monkeypatch):
    """A member larger than EDGEFER_MAX_DATA_BYTES is refused before it is decompressed."""
    p = _savez(tmp_path / "faces.npz", {"images": IMAGES, "labels": LABELS})
    monkeypatch.setenv("EDGEFER_MAX_DATA_BYTES", "10000")
    with pytest.raises(EdgeferError, match=r"key 'images'.*EDGEFER_MAX_DATA_BYTES"):
        open_labeled(p)
