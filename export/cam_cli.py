"""``edgefer export MODEL --cam``: the same export, with the class activation map as a second output.

Heatmaps (``edgefer run --explain``, ``edgefer explain``) need a classifier whose graph has the
in-graph CAM output (:mod:`edgefer.export.cam`). Before this, a user with an OpenVINO INT8
EdgeNet was told to run ``python -m edgefer.export.cam ARTIFACT -o DIR``, which needs an FP32
ONNX artifact of a zoo architecture and failed on theirs; the path that worked (export the
bundled ``edgenet-cam`` twin with the same flags) was written nowhere. ``--cam`` is that path
as one flag of the command the user already ran:

* a bundled name with a CAM twin (``edgenet`` -> ``edgenet-cam``): the twin is exported with
  the same target, precision and calibration (no torch needed);
* an artifact that already has the output: exported as it is;
* anything else with torch weights (a checkpoint, a bundled name or FP32 artifact of a zoo
  architecture): the CAM graph is built from the torch module (:func:`export_cam_artifact`,
  parity-checked against torch), then exported like any FP32 artifact. Its provenance names
  the real source and the ``--cam`` command, not the temporary CAM export in between.

The default output folder is ``NAME-cam-TARGET-PRECISION``, so a CAM export never replaces the
plain one beside it. This module imports torch only on the last path.
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any

from edgefer.artifact import ALIASES, BUNDLED, load, write_artifact
from edgefer.errors import EdgeferError


def bundled_cam_twin(ref: str) -> str | None:
    """The bundled CAM twin's name for a bundled name (``edgenet`` -> ``edgenet-cam``), else None."""
    name = ALIASES.get(ref, ref)
    if name not in BUNDLED or Path(ref).exists():
        return None
    if name.endswith("-cam"):
        return name
    return f"{name}-cam" if f"{name}-cam" in BUNDLED else None


def _has_cam(ref: str) -> bool:
    from edgefer.explain import cam_output

    try:
        return cam_output(load(ref).manifest) is not None
    except EdgeferError:  # a checkpoint, or not an artifact at all: the torch path decides
        return False


def _default_output(name: str, target: str, precision: str, nncf: bool) -> Path:
    # relative: the manifest's recorded command and the TensorRT device hint must not carry this
    # machine's absolute paths
    return Path(f"{name}-cam-{target}-{precision}{'-nncf' if nncf else ''}")


def export_with_cam(model: str, target: str = "onnx", precision: str = "fp32", *, output: str | Path | None = None,
                    arch: str | None = None, classes: list[str] | None = None, **kw: Any):
    """:func:`edgefer.export.api.export_model` of ``model`` with the in-graph CAM output added."""
    from .api import export_model

    nncf = bool(kw.get("nncf"))
    twin = bundled_cam_twin(model)
    if twin is not None:
        name = load(twin).manifest.name
        out = output or _default_output(name, target, precision, nncf)
        return export_model(twin, target, precision, output=out, arch=arch, classes=classes, **kw)
    if _has_cam(model):
        name = load(model).manifest.name
        out = output or _default_output(name, target, precision, nncf)
        return export_model(model, target, precision, output=out, arch=arch, classes=classes, **kw)
    if classes:
        raise EdgeferError("--cam builds the map from the model's own class list (checkpoint sidecar or manifest); "
                           "drop --classes, or export without --cam")
    from .cam import export_cam_artifact  # torch: only on this path

    with tempfile.TemporaryDirectory(prefix="edgefer-cam-") as tmp:
        cam_dir = Path(tmp) / "cam-fp32"
        export_cam_artifact(model, cam_dir, arch=arch, command=f"edgefer export {shlex.quote(model)} --cam")
        name = load(cam_dir).manifest.name
        out = Path(output) if output else _default_output(name, target, precision, nncf)
        res = export_model(str(cam_dir), target, precision, output=out, **kw)
        tmp_ref = shlex.quote(str(cam_dir))
    # the temporary CAM export is gone: the manifest names the real source and the command to repeat
    man = res.manifest
    prov = dict(man.provenance or {})
    source = dict(prov.get("source") or {})
    kind = ("bundled" if ALIASES.get(model, model) in BUNDLED and not Path(model).exists() else
            "checkpoint" if Path(model).is_file() and not _is_artifact(model) else "artifact")
    source.update(ref=model, kind=kind,
                  via="in-graph CAM added by `edgefer export --cam` (edgefer.export.cam)")
    prov["source"] = source
    cmd = str(prov.get("command") or "")
    prov["command"] = (cmd.replace(tmp_ref, shlex.quote(model), 1) if tmp_ref in cmd else
                       f"edgefer export {shlex.quote(model)} --target {target}") + " --cam"
    man.provenance = prov
    write_artifact(man, res.path)
    res.manifest = man
    return res


def _is_artifact(ref: str) -> bool:
    try:
        load(ref, verify=False)
        return True
    except EdgeferError:
        return False
