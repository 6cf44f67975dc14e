"""Image files: header parsing, the pixel cap, and loading (split out of :mod:`edgefer.sources`).

Inputs are untrusted. Images are refused before decoding when their header claims more pixels
than the cap (:data:`DEFAULT_MAX_PIXELS`, ``EDGEFER_MAX_PIXELS``), so a 69-byte file claiming
40000x40000 never allocates. The same cap applies to video frames (checked from the stream's
size when a capture opens, see :mod:`edgefer.sources`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import cv2
import numpy as np

from .errors import EdgeferError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}

# Pixel cap for images and video frames, checked before decoding. 50 megapixels is a 8660x5773
# photo (150 MB as BGR): above what cameras and phones deliver by default, far below what a
# header bomb claims (a 69-byte PNG of 40000x40000 would need 4.8 GB). Override per process with
# EDGEFER_MAX_PIXELS, per call with ``max_pixels``. (OpenCV's own OPENCV_IO_MAX_IMAGE_PIXELS, 2^30
# by default, is read once when cv2 loads, too late and too high to rely on; we still catch it.)
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "EDGEFER_MAX_PIXELS"


def max_pixels_default() -> int:
    """The pixel cap in force: EDGEFER_MAX_PIXELS when set (read on each call), else the default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise EdgeferError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, not {raw!r}")
    return int(value)


def _resolve_max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        return max_pixels_default()
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise EdgeferError(f"max_pixels must be a positive whole number, not {max_pixels!r}")
    return max_pixels


def _over_cap(width: int, height: int, max_pixels: int) -> str | None:
    """The reason to refuse a width x height picture, or None when it fits the cap."""
    if width * height > max_pixels:
        return f"{width}x{height} = {width * height:,} pixels, over the {max_pixels:,}-pixel cap ({MAX_PIXELS_ENV})"
    return None


def _u16(b: memoryview, i: int, big: bool) -> int:
    return int.from_bytes(b[i : i + 2], "big" if big else "little")


def _u32(b: memoryview, i: int, big: bool) -> int:
    return int.from_bytes(b[i : i + 4], "big" if big else "little")


def image_size(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, int] | None:
    """(width, height) that an image file's header claims, read without decoding; None if unknown.

    Covers PNG, JPEG (baseline and progressive), BMP, WebP (lossy, lossless, extended), TIFF and
    PNM (pgm/ppm/pbm), the formats a folder run reads. A header is only a claim: a file can still
    fail to decode, but one that claims too much is refused before anything is allocated.
    """
    b = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    n = len(b)
    try:
        if n >= 24 and bytes(b[:8]) == b"\x89PNG\r\n\x1a\n" and bytes(b[12:16]) == b"IHDR":
            return _u32(b, 16, True), _u32(b, 20, True)
        if n >= 4 and b[0] == 0xFF and b[1] == 0xD8:
            return _jpeg_size(b)
        if n >= 26 and bytes(b[:2]) == b"BM":
            if _u32(b, 14, False) == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                return _u16(b, 18, False), _u16(b, 20, False)
            w = int.from_bytes(b[18:22], "little", signed=True)
            h = int.from_bytes(b[22:26], "little", signed=True)  # negative: top-down rows
            return abs(w), abs(h)
        if n >= 30 and bytes(b[:4]) == b"RIFF" and bytes(b[8:12]) == b"WEBP":
            chunk = bytes(b[12:16])
            if chunk == b"VP8X":
                return (int.from_bytes(b[24:27], "little") + 1, int.from_bytes(b[27:30], "little") + 1)
            if chunk == b"VP8L" and b[20] == 0x2F:
                bits = _u32(b, 21, False)
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 " and bytes(b[23:26]) == b"\x9d\x01\x2a":
                return _u16(b, 26, False) & 0x3FFF, _u16(b, 28, False) & 0x3FFF
            return None
        if n >= 8 and bytes(b[:4]) in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(b, bytes(b[:2]) == b"MM")
        if n >= 3 and b[0] == ord("P") and chr(b[1]) in "123456":
            m = re.match(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)", bytes(b[:1024]))
            return (int(m.group(1)), int(m.group(2))) if m else None
    except (IndexError, ValueError):
        return None
    return None


def _jpeg_size(b: memoryview) -> tuple[int, int] | None:
    """Walk the JPEG markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC)."""
    n, i = len(b), 2
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m in (0x01, 0xD8) or 0xD0 <= m <= 0xD7:  # markers without a length
            i += 2
            continue
        if m in (0xD9, 0xDA):  # end of image, start of scan: no frame header before the data
            return None
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = _u16(b, i + 5, True), _u16(b, i + 7, True)
            return (w, h) if h else None  # height 0: given later by a DNL marker; let OpenCV check
        i += 2 + _u16(b, i + 2, True)
    return None


def _tiff_size(b: memoryview, big: bool) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD, the page OpenCV decodes."""
    off = _u32(b, 4, big)
    if off + 2 > len(b):
        return None
    size: dict[int, int] = {}
    for k in range(min(_u16(b, off, big), 4096)):
        e = off + 2 + 12 * k
        if e + 12 > len(b):
            break
        tag, typ = _u16(b, e, big), _u16(b, e + 2, big)
        if tag in (256, 257):
            size[tag] = _u16(b, e + 8, big) if typ == 3 else _u32(b, e + 8, big)
    return (size[256], size[257]) if 256 in size and 257 in size else None


def load_image(path: Path | str, max_pixels: int | None = None) -> tuple[np.ndarray | None, str]:
    """(BGR image, "") or (None, why not): the header is checked against the pixel cap first.

    Reads through numpy so non-ASCII paths work. An image whose header claims more than
    ``max_pixels`` (default: :func:`max_pixels_default`) is refused before decoding; a format
    whose header we do not parse is checked after decoding, and OpenCV's own errors (its 2^30
    pixel limit, a corrupt stream) become a reason, not an exception.
    """
    cap = _resolve_max_pixels(max_pixels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except (OSError, ValueError) as e:
        return None, f"unreadable ({e.strerror or type(e).__name__})" if isinstance(e, OSError) else "unreadable"
    if data.size == 0:
        return None, "empty file"
    size = image_size(data)
    if size is not None:
        if size[0] <= 0 or size[1] <= 0:
            return None, f"corrupt header ({size[0]}x{size[1]} pixels)"
        too_big = _over_cap(size[0], size[1], cap)
        if too_big:
            return None, f"too large: {too_big}"
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip().startswith("error:")), "").strip()
        return None, f"cannot be decoded ({first or 'OpenCV error'})"
    if img is None:
        return None, "unreadable or not an image"
    too_big = _over_cap(img.shape[1], img.shape[0], cap)
    if too_big:  # a format whose header was not parsed: refused all the same
        return None, f"too large: {too_big}"
    return img, ""


def read_image(path: Path | str, max_pixels: int | None = None) -> np.ndarray | None:
    """BGR image, or None when it cannot be read or is over the pixel cap (see :func:`load_image`)."""
    return load_image(path, max_pixels)[0]
