"""Output paths of a run, checked before the first frame: never over an input, always writable.

A run that sits on an edge box for weeks must not lose the user's data, so every path it will
write (annotated video/image/folder, events, summary) is checked up front:

* it never resolves to the source file, nor to one of the images of a source folder, nor is the
  source folder itself (``edgefer run in.mp4 -o in.mp4`` once cut the input to 15 frames);
* no two outputs are the same file;
* its folder exists, is a folder and is writable, and the path is not an existing folder
  (or, for a folder output, not an existing file).

Each failure is one :class:`EdgeferError` line (exit 2) before any model is loaded or any byte
is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgeferError


@dataclass
class OutputPath:
    role: str  # "output", "events", "summary"
    path: Path
    folder: bool = False  # an output folder (annotated images of a folder source)


def _real(p: Path) -> Path:
    """The absolute path with symlinks resolved as far as they exist."""
    try:
        return Path(os.path.realpath(p))
    except (OSError, ValueError):  # pragma: no cover - realpath does not raise on POSIX
        return p.absolute()


def _same_file(a: Path, b: Path) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def input_files(sources: list[str], folder_images: dict[str, list[Path]] | None = None) -> tuple[list[Path], list[Path]]:
    """(files, folders) the run reads: source files and folders, plus the images of each folder."""
    files: list[Path] = []
    folders: list[Path] = []
    for s in sources:
        p = Path(str(s)).expanduser()
        if not p.exists():
            continue  # cameras, URLs, and missing files (reported by the source itself)
        if p.is_dir():
            folders.append(p)
            files.extend((folder_images or {}).get(str(s)) or [q for q in p.iterdir() if q.is_file()])
        else:
            files.append(p)
    return files, folders


def check_outputs(outputs: list[OutputPath], sources: list[str],
                  folder_images: dict[str, list[Path]] | None = None) -> None:
    """Refuse, before the first frame, any output that would overwrite an input or cannot be written."""
    files, folders = input_files(sources, folder_images)
    seen: list[OutputPath] = []
    for o in outputs:
        p = o.path
        what = f"--{o.role}" if o.role != "output" else "--output"
        for f in files:
            if _same_file(p, f):
                raise EdgeferError(f"{what} {p} is an input of this run ({f}): refusing to overwrite it")
        for d in folders:
            if _real(p) == _real(d):
                raise EdgeferError(f"{what} {p} is the input folder: annotated images would overwrite the originals")
        for q in seen:
            if _same_file(p, q.path) or _real(p) == _real(q.path):
                raise EdgeferError(f"--{q.role} and {what} are the same path ({p}): give each its own file")
        _check_writable(o, what)
        seen.append(o)


def _check_writable(o: OutputPath, what: str) -> None:
    p = o.path
    if o.folder:
        if p.exists() and not p.is_dir():
            raise EdgeferError(f"cannot write {what} {p}: it exists and is not a folder")
        parent = p if p.exists() else p.parent
    else:
        if p.is_dir():
            raise EdgeferError(f"cannot write {what} {p}: it is a folder; give a file name")
        parent = p.parent
    parent = parent if str(parent) else Path(".")
    if not parent.exists():
        raise EdgeferError(f"cannot write {what} {p}: folder {parent} does not exist")
    if not parent.is_dir():
        raise EdgeferError(f"cannot write {what} {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EdgeferError(f"cannot write {what} {p}: folder {parent} is not writable")
    if p.exists() and not p.is_dir() and not os.access(p, os.W_OK):
        raise EdgeferError(f"cannot write {what} {p}: permission denied")


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "file") -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename: a full disk never leaves half a file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise EdgeferError(f"cannot write {what} {p}: {e.strerror or e}") from None
