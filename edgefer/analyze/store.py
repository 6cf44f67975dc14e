"""Where the tables go: a local folder or any URI pyarrow supports (``s3://...``).

Every file is written under a dot-name and renamed into place, so readers (and a killed job)
never see half a file; a video's files are listed and removed together before it is redone.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ..errors import EdgeferError
from .settings import DONE_DIR, is_url


def open_out(out: str):
    """(pyarrow filesystem, root path) for a local folder or any URI pyarrow supports (s3://...)."""
    from pyarrow import fs as pafs

    if is_url(out) and not out.startswith("file://"):
        try:
            filesystem, root = pafs.FileSystem.from_uri(out)
        except Exception as e:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
            raise EdgeferError(f"cannot open the output {out}: {str(e).splitlines()[0]}") from None
        return filesystem, root.rstrip("/")
    p = Path(out[len("file://"):] if out.startswith("file://") else out).expanduser().absolute()
    return pafs.LocalFileSystem(), str(p)


def _write_atomic(filesystem, path: str, write: Callable[[str], None]) -> None:
    """Write through a dot-named temporary beside ``path``, then rename it into place."""
    d, name = path.rsplit("/", 1)
    tmp = f"{d}/.{name}.{os.getpid()}.tmp"
    write(tmp)
    filesystem.move(tmp, path)


def write_parquet(filesystem, path: str, table) -> None:
    import pyarrow.parquet as pq

    _write_atomic(filesystem, path, lambda p: pq.write_table(table, p, filesystem=filesystem, compression="zstd"))


def write_json(filesystem, path: str, obj: dict) -> None:
    data = (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode("utf-8")

    def w(p: str) -> None:
        with filesystem.open_output_stream(p) as f:
            f.write(data)

    _write_atomic(filesystem, path, w)


def read_json(filesystem, path: str) -> dict | None:
    try:
        with filesystem.open_input_stream(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, OSError, ValueError):
        return None


def listdir(filesystem, d: str) -> list[str]:
    from pyarrow import fs as pafs

    try:
        return [i.path for i in filesystem.get_file_info(pafs.FileSelector(d, allow_not_found=True))]
    except (FileNotFoundError, OSError):
        return []


def delete_file(filesystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def parts_by_video(filesystem, root: str) -> dict[str, list[str]]:
    """video id -> its part files (faces and tracks), from one listing of each folder."""
    out: dict[str, list[str]] = defaultdict(list)
    for table in ("faces", "tracks"):
        for p in listdir(filesystem, f"{root}/{table}"):
            name = p.rsplit("/", 1)[-1]
            if name.startswith("part-"):
                out[name.split("-")[1]].append(p)
    return out


def remove_video_files(filesystem, root: str, vid: str, parts: dict[str, list[str]] | None = None) -> None:
    """Every file of one video (all its ranges, its row and its marker), before it is redone."""
    for p in (parts if parts is not None else parts_by_video(filesystem, root)).get(vid, []):
        delete_file(filesystem, p)
    delete_file(filesystem, f"{root}/videos/{vid}.parquet")
    delete_file(filesystem, f"{root}/{DONE_DIR}/{vid}.json")
