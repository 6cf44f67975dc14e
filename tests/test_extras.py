"""A command that needs a missing extra says which, in one line, exit 2 (issue 14, item 3).

A package is made missing honestly, without uninstalling it from the shared environment: the
CLI runs in a subprocess whose first statement puts a ``sys.meta_path`` finder in front that
refuses the blocked top-level names, exactly as the import system does when a package is not
installed (``ModuleNotFoundError`` with ``.name`` set). Everything else is the real install.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import importlib.abc, sys
BLOCK = set(sys.argv[1].split(","))
class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Missing())
from edgefer.cli import main
sys.exit(main(sys.argv[2:]))
"""

#: what a runtime-only install (pip install edgefer / '.[demo]') lacks
BUILD_SIDE = "torch,onnx,onnxscript,onnxconverter_common,nncf,coremltools,openvino,matplotlib,h5py,tensorrt"


def edgefer_without(blocked: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE, blocked, "-q", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def assert_one_line_hint(r: subprocess.CompletedProcess, extra: str, *modules: str) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err[-1500:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-1500:]
    assert f"pip install 'edgefer[{extra}]'" in err and f"pip install '.[{extra}]'" in err, err
    for m in modules:
        assert m in err, err
    return err


@pytest.mark.parametrize("target,modules", [("onnx", ["onnx"]), ("openvino", ["onnx", "openvino"]),
                                            ("trt", ["onnx"]), ("coreml", ["torch", "coremltools"])])
def test_export_names_the_export_extra(tmp_path, target, modules):
    out = tmp_path / "art"
    r = edgefer_without(BUILD_SIDE, "export", "edgenet", "--target", target, "-o", str(out), cwd=tmp_path)
    err = assert_one_line_hint(r, "export", *modules)
    assert "none is known" not in err  # the old Core ML message blamed the model, not the install
    assert not out.exists()


def test_int8_openvino_export_stops_before_calibrating(tmp_path, photos_dir):
    """Only openvino missing: the export stops before minutes of calibration, naming the extra."""
    out = tmp_path / "ov8"
    r = edgefer_without("openvino", "export", "edgenet", "--target", "openvino", "--int8", "--calib", str(photos_dir),
                        "-o", str(out), cwd=tmp_path)
    assert_one_line_hint(r, "export", "openvino")
    assert not out.exists()


def test_train_without_torch_names_the_train_extra(tmp_path, publictest):
    """torch is imported deep inside `edgefer train` (no up-front check): the CLI's guard still
    turns the ModuleNotFoundError into the one-line hint, and nothing is written."""
    import numpy as np

    data = tmp_path / "tiny.npz"
    np.savez(data, images=publictest["images"][:16], labels=publictest["labels"][:16])
    out = tmp_path / "run"
    r = edgefer_without("torch", "train", "--arch", "edgenet", "--data", str(data), "--epochs", "1", "-o", str(out),
                        cwd=tmp_path)
    assert_one_line_hint(r, "train", "torch")
    assert not out.exists()


def test_coreml_export_of_a_zoo_model_without_torch_blames_torch(tmp_path):
    """The API path (no CLI pre-check): a bundled zoo model is not 'unknown' to Core ML export
    when torch is missing; the missing package surfaces, and the CLI names its extra."""
    code = PRELUDE.replace("from edgefer.cli import main\nsys.exit(main(sys.argv[2:]))\n", """
from edgefer.export.api import export_model
try:
    export_model("edgenet", "coreml", "fp32", output=sys.argv[2], progress=False)
except ModuleNotFoundError as e:
    print("missing", e.name)
except Exception as e:
    print("error", e)
""")
    r = subprocess.run([sys.executable, "-c", code, "torch,coremltools", str(tmp_path / "cm")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.stdout.strip() == "missing torch", (r.stdout, r.stderr[-1500:])


def test_a_missing_non_optional_module_keeps_its_traceback():
    """The guard only speaks for edgefer's optional packages: any other missing module is a bug
    (or a broken install) and keeps its traceback; a submodule of an optional one still counts."""
    from edgefer.extras import as_edgefer_error

    assert as_edgefer_error(ModuleNotFoundError("No module named 'yaml'", name="yaml")) is None
    e = as_edgefer_error(ModuleNotFoundError("No module named 'openvino.runtime'", name="openvino.runtime"), "run")
    assert e is not None and "edgefer[openvino]" in str(e)


def test_extras_table_matches_pyproject():
    """Each module the hints promise an extra installs is in that extra's requirements, and
    `[export]` covers export to every target that installs from pip (OpenVINO, Core ML)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from edgefer.extras import EXTRAS

    dist = {"torch": "torch", "onnx": "onnx", "onnxscript": "onnxscript", "onnxconverter_common": "onnxconverter-common",
            "h5py": "h5py", "nncf": "nncf", "openvino": "openvino", "coremltools": "coremltools",
            "matplotlib": "matplotlib", "skimage": "scikit-image", "tensorrt": "tensorrt", "cuda": "cuda-python",
            "pycuda": "pycuda", "pyarrow": "pyarrow", "ray": "ray", "paho": "paho-mqtt"}
    opt = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, mods in EXTRAS.items():
        names = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower() for req in opt.get(extra, [])}
        wanted = {dist[m] for m in mods if m != "pycuda"}  # pycuda: an alternative to cuda-python, not required
        assert wanted <= names, f"[{extra}] lacks {sorted(wanted - names)}"
    assert {"openvino", "coremltools"} <= {dist[m] for m in EXTRAS["export"]}
