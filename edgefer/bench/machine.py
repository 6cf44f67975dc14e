"""Facts about the machine a bench ran on: CPU, ISA flags, runtime versions, peak memory.

A latency means nothing without the machine behind it, so every result carries these. Versions
come from package metadata rather than imports (coremltools prints warnings on import off macOS);
only TensorRT is imported, where JetPack installed it without metadata.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64", "aarch64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")) and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5).stdout.strip() or cpu
        except Exception:  # noqa: BLE001 - best effort
            pass
    versions: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    from importlib import metadata

    for key, dists in (("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")),
                       ("openvino", ("openvino",)), ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
                       ("coremltools", ("coremltools",)),
                       ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
                       ("torch", ("torch",))):
        for d in dists:  # read from package metadata: importing coremltools on Linux prints warnings
            try:
                versions[key] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                continue
    if "tensorrt" not in versions:  # JetPack installs TensorRT's Python bindings without pip metadata
        try:
            import tensorrt  # type: ignore

            versions["tensorrt"] = tensorrt.__version__
        except Exception:  # noqa: BLE001
            pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
                       "asimddp", "i8mm", "bf16") if f in flags]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(), "isa": isa, "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ----------------------------------------------------------------------------- memory
def reset_peak() -> bool:
    """Reset the process's resident high-water mark (Linux), so each row reads its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(r / (1024 * 1024) if sys.platform == "darwin" else r / 1024, 1)
    except Exception:  # noqa: BLE001
        return None
