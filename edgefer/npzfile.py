"""Reading ``.npz`` archives from elsewhere without pickle, their headers checked first.

Part of the dataset readers (:mod:`edgefer.datasets`, which re-exports these names), kept apart
because it guards against a different thing: not a mislabeled dataset but a forged archive. An
object array (which only pickle loads, i.e. code execution) is refused; the size a member's
``.npy`` header declares must equal what the member holds, so a truncated or forged member is
refused before anything is allocated; a member over :func:`max_array_bytes` uncompressed is
refused (a deflated member can claim gigabytes from a few kilobytes); a bad CRC is reported as
such. Every failure is one :class:`EdgeferError` line naming the file and key.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EdgeferError

#: default cap on one uncompressed .npz member (images of FER2013 Training: 66 MB)
DEFAULT_MAX_ARRAY_BYTES = 16 << 30

# what zipfile / numpy's .npy reader raise on a damaged archive or member
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, struct.error, OSError, EOFError, ValueError,
               NotImplementedError, RuntimeError, MemoryError, KeyError)


def max_array_bytes() -> int:
    """Cap on one uncompressed ``.npz`` member (``EDGEFER_MAX_DATA_BYTES`` overrides it).

    A deflated member can claim gigabytes from a few kilobytes; this bounds what a forged
    archive can make us allocate.
    """
    raw = os.environ.get("EDGEFER_MAX_DATA_BYTES")
    if raw is None:
        return DEFAULT_MAX_ARRAY_BYTES
    try:
        v = int(raw)
    except ValueError:
        raise EdgeferError(f"EDGEFER_MAX_DATA_BYTES must be a number of bytes, not {raw!r}") from None
    if v < 1:
        raise EdgeferError(f"EDGEFER_MAX_DATA_BYTES must be at least 1, not {v}")
    return v


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _read_member(zf: zipfile.ZipFile, name: str, path: Path, key: str) -> np.ndarray:
    """One ``.npy`` member, its header checked before any data is read or allocated."""
    where = f"{path}: key '{key}'"
    info = zf.getinfo(name)
    cap = max_array_bytes()
    if info.file_size > cap:
        raise EdgeferError(f"{where}: {info.file_size} bytes uncompressed, over the {cap}-byte limit "
                           "(EDGEFER_MAX_DATA_BYTES)")
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise EdgeferError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
            if dtype.hasobject:
                raise EdgeferError(
                    f"{where}: an object array (Python objects, which only pickle can load and which "
                    "can run code): refused; store numbers or fixed-width strings"
                )
            header = f.tell()
        count = 1
        for s in shape:
            count *= int(s)
        need = count * dtype.itemsize
        if header + need != info.file_size:
            raise EdgeferError(f"{where}: the header declares {shape} {dtype} ({need} bytes) but the member holds "
                               f"{info.file_size - header}: truncated or corrupt")
        with zf.open(info) as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
            if f.read(1):
                raise EdgeferError(f"{where}: data after the array: corrupt member")
    except EdgeferError:
        raise
    except zipfile.BadZipFile as e:
        raise EdgeferError(f"{where}: corrupt member ({_first_line(e)})") from None
    except _ZIP_ERRORS as e:
        raise EdgeferError(f"{where}: cannot read ({_first_line(e)})") from None
    return arr


def read_npz(path: str | os.PathLike, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The ``required`` and present ``optional`` arrays of an ``.npz``, read without pickle.

    Only the named members are read; each is checked as :func:`_read_member` says. A missing
    required key is refused with the keys the file has.
    """
    p = Path(path)
    try:
        zf = zipfile.ZipFile(p)
    except zipfile.BadZipFile as e:
        raise EdgeferError(f"cannot read {p} as .npz: truncated, or not a zip archive ({_first_line(e)})") from None
    except _ZIP_ERRORS as e:
        raise EdgeferError(f"cannot read {p} as .npz: {_first_line(e)}") from None
    with zf:
        try:
            members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        except _ZIP_ERRORS as e:  # pragma: no cover - namelist only reads what ZipFile parsed
            raise EdgeferError(f"cannot read {p} as .npz: {_first_line(e)}") from None
        for key in required:
            if key not in members:
                have = ", ".join(sorted(members)) or "none"
                raise EdgeferError(f"{p}: the .npz has no '{key}' array (keys: {have})")
        return {k: _read_member(zf, members[k], p, k) for k in [*required, *(k for k in optional if k in members)]}


def npz_keys(path: str | os.PathLike) -> list[str]:
    """The array names of an ``.npz`` (nothing is read but the zip directory)."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            return sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
    except _ZIP_ERRORS as e:
        raise EdgeferError(f"cannot read {p} as .npz: {_first_line(e)}") from None
