"""What the machine is, for the bench to print: CPU architecture, and on a Jetson its L4T
release, board, power mode (``nvpmodel``) and whether ``jetson_clocks`` pinned the clocks.

A Jetson's speed depends on its power mode more than on anything edgefer does (MAXN vs a 15 W
mode is easily 2x), and ``jetson_clocks`` removes the DVFS ramp that makes the first seconds of
a run slow; a bench number without both is not comparable. Everything here is read-only and
best effort: a missing file or command yields ``None``, never an error.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def parse_tegra_release(text: str) -> str | None:
    """``R36.3.0`` from ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 3.0, ...``)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def parse_nvpmodel(text: str) -> dict[str, Any]:
    """Power mode from ``nvpmodel -q`` output (``NV Power Mode: MAXN`` then the mode number)."""
    name = re.search(r"NV Power Mode:\s*(\S+)", text)
    num = re.search(r"^\s*(\d+)\s*$", text, re.M)
    return {"name": name.group(1) if name else None, "id": int(num.group(1)) if num else None}


def _clocks_pinned(root: Path) -> bool | None:
    """Whether every CPU's minimum frequency equals its maximum (what ``jetson_clocks`` sets)."""
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
    if not cpus:
        return None
    for c in cpus:
        lo, hi = _read(c / "scaling_min_freq"), _read(c / "scaling_max_freq")
        if lo is None or hi is None:
            return None
        if lo != hi:
            return False
    return True


def platform_info(root: str | os.PathLike = "/", run_commands: bool = True) -> dict[str, Any]:
    """A flat dict the bench can print: machine, OS, Python, CPUs, and the Jetson fields.

    ``root``: where to look for ``etc/``, ``proc/`` and ``sys/`` (tests point it at a folder);
    ``run_commands``: whether to ask ``nvpmodel -q`` (only where the release file says Jetson).
    """
    r = Path(root)
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "jetson": False,
    }
    release = _read(r / "etc/nv_tegra_release")
    if release is None:
        return info
    info["jetson"] = True
    info["l4t"] = parse_tegra_release(release)
    info["model"] = _read(r / "proc/device-tree/model")
    info["nvpmodel"] = None
    exe = shutil.which("nvpmodel")
    if run_commands and exe:
        try:
            out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10)
            info["nvpmodel"] = parse_nvpmodel(out.stdout + out.stderr)
        except (OSError, subprocess.SubprocessError):
            pass
    pinned = _clocks_pinned(r)
    info["jetson_clocks"] = None if pinned is None else ("on" if pinned else "off")
    return info


def summary_line(info: dict[str, Any]) -> str:
    """One line for the bench header, e.g. ``Jetson AGX Orin, L4T R36.3.0, nvpmodel MAXN (0), jetson_clocks on``."""
    if not info.get("jetson"):
        return f"{info.get('system')} {info.get('machine')}, {info.get('cpus')} CPUs, Python {info.get('python')}"
    pm = info.get("nvpmodel") or {}
    mode = f"nvpmodel {pm.get('name')} ({pm.get('id')})" if pm.get("name") else "nvpmodel unknown"
    return (f"{info.get('model') or 'Jetson'}, L4T {info.get('l4t') or '?'}, {mode}, "
            f"jetson_clocks {info.get('jetson_clocks') or 'unknown'}")
