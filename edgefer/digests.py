"""Reading untrusted files safely, and their digests: the part of artifact loading that touches
the file system.

Nothing here opens a path before knowing it is a regular file (a FIFO or ``/dev/zero`` named by
a hostile manifest is refused, never read forever), and a file swapped between the check and the
open is caught on the descriptor itself. :mod:`edgefer.artifact` builds its confinement and
checksum checks on these; the bench, export and the TensorRT engine cache hash with
:func:`sha256_file` too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from .errors import EdgeferError


def _open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, refused unless it is a regular file.

    Opened non-blocking and checked with fstat on the descriptor itself: a FIFO or a device
    (``/dev/zero``) is never read, and a file swapped between a check and the open is caught.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise EdgeferError(f"{path} is not a regular file ({_file_kind(st.st_mode)})")
        fd = os.open(path, flags)
    except OSError as e:
        raise EdgeferError(f"cannot read {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EdgeferError(f"{path} is not a regular file")
    return fd


def _file_kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return word
    return "not a regular file"


def _hash_into(h: "hashlib._Hash", path: Path) -> None:
    with os.fdopen(_open_regular(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def _package_files(root: Path) -> list[Path]:
    """Every file below a package folder (an .mlpackage), refusing symlinks and special files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            q = Path(dirpath) / name
            mode = os.lstat(q).st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise EdgeferError(f"{q} inside {root.name} is {_file_kind(mode)}; packages may hold regular files only")
            out.append(q)
    return sorted(out)


def sha256_file(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a regular file, or of every file below a directory (an .mlpackage).

    Refuses (EdgeferError) anything else, and never opens a FIFO or a device.
    """
    h = hashlib.sha256()
    p = Path(path)
    try:
        is_dir = stat.S_ISDIR(os.stat(p).st_mode)
    except OSError as e:
        raise EdgeferError(f"cannot read {p}: {e.strerror or e}") from None
    if is_dir:
        for q in _package_files(p):
            h.update(str(q.relative_to(p)).encode())
            _hash_into(h, q)
    else:
        _hash_into(h, p)
    return "sha256:" + h.hexdigest()


def _norm(rel: str) -> str:
    """One spelling per relative path (``./a//b`` -> ``a/b``) to match files with checksum keys."""
    return PurePosixPath(os.path.normpath(rel.replace("\\", "/"))).as_posix()
