"""The deploy platforms' wheels resolve (benchmarks/deploy/check_wheels.py), when asked.

It asks the package index (network, ~40 s), so it runs only with ``EDGEFER_CHECK_WHEELS=1``;
``.ci/run`` runs the script itself after the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks/deploy/check_wheels.py"


@pytest.mark.skipif(os.environ.get("EDGEFER_CHECK_WHEELS") != "1",
                    reason="asks the package index; set EDGEFER_CHECK_WHEELS=1 (CI runs the script from .ci/run)")
def test_deploy_wheels_resolve_and_code_is_py310():
    p = subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True, timeout=600)
    res = json.loads(p.stdout[p.stdout.index("{"):])
    assert p.returncode == 0 and res["ok"], p.stdout[-2000:]
    targets = {r["target"] for r in res["resolve"]}
    assert any("jetson" in t for t in targets) and any("macOS" in t for t in targets)
    jetson = next(r for r in res["resolve"] if "jetson" in r["target"])
    assert "tensorrt" not in jetson["packages"]  # Jetson's TensorRT is JetPack's, never PyPI's
    assert jetson["packages"]["numpy"].startswith("1.")  # JetPack's OpenCV and TensorRT need numpy 1.x


def test_requirements_come_from_pyproject():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import check_wheels
    finally:
        sys.path.pop(0)
    reqs = check_wheels.requirements(["jetson"])
    assert any(r.startswith("onnxruntime") for r in reqs) and any(r.startswith("cuda-python") for r in reqs)
    assert not any(r.startswith("tensorrt") for r in reqs)
    assert any(r.startswith("coremltools") for r in check_wheels.requirements(["coreml"]))
