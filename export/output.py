"""The artifact stage: the manifest of what was built, the output folder, :class:`ExportResult`.

Every export ends here the same way whatever the target: the source's manifest with the new
target, precision, files, calibration record and measurements; provenance (source checksum,
the command, tool versions, the machine); the staged files moved into the output folder; the
``--max-drop`` gate last, so that a failing artifact is still written and can be inspected.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefer.artifact import Manifest, write_artifact
from edgefer.errors import CheckFailed, EdgeferError

if TYPE_CHECKING:
    from .job import Built, Job
    from .source import SourceModel


@dataclass
class ExportResult:
    """What an export produced, for the CLI summary and for callers such as the bench."""

    path: Path
    manifest: Manifest
    size_mb: float
    validation: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    next_command: str | None = None


def tool_versions(names: set[str]) -> dict[str, str]:
    """Versions of Python, edgefer, numpy, onnx, onnxruntime and the optional tools ``names``."""
    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for n in sorted(names | {"edgefer", "numpy", "onnx", "onnxruntime"}):
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def provenance(job: Job) -> dict[str, Any]:
    """An exported artifact's provenance: what it came from, how, with which tools, on what."""
    src, man0, cpu = job.src, job.manifest0, job.cpu
    return {
        "source": {"ref": src.ref, "kind": src.origin, "sha256": src.checksum, "name": man0.name, "arch": man0.arch},
        "command": job.cmd,
        "tools": tool_versions(job.used),
        "machine": {k: cpu[k] for k in ("machine", "cpu", "vnni")},
        "base": {k: v for k, v in dict(man0.provenance or {}).items() if k != "tools"},
    }


def manifest_for(job: Job, built: Built) -> Manifest:
    """The exported artifact's manifest: the source's, with what this export built and measured."""
    man0 = job.manifest0
    man = Manifest.from_dict(man0.to_dict())
    man.target = job.req.target
    man.precision = job.req.precision
    man.files = built.files
    man.calibration = built.calibration if built.calibration is not None else job.data.record
    man.provenance = provenance(job)
    man.extra = {**(man0.extra or {}), **built.extra, **job.data.extra}
    return man


def default_output(src: SourceModel, target: str, precision: str, nncf: bool) -> Path:
    suffix = "-nncf" if nncf else ""
    return Path.cwd() / f"{src.manifest.name}-{target}-{precision}{suffix}"


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def artifact_size(art_dir: Path, man: Manifest) -> float:
    """Megabytes of the files the manifest names (ONNX external data included)."""
    total = 0
    for rel in man.files.values():
        for r in rel if isinstance(rel, list) else [rel]:
            p = art_dir / r
            if p.exists():
                total += _dir_size(p)
                data = p.with_name(p.name + ".data")
                if data.exists():
                    total += data.stat().st_size
    return total / 1e6


def install(staging: Path, out_dir: Path, files: list[str]) -> None:
    """Move produced files into the output folder, replacing what was there under those names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        dst = out_dir / name
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        shutil.move(str(staging / name), str(dst))


def write_output(job: Job, man: Manifest, validation: dict[str, Any] | None) -> ExportResult:
    """Install the staged artifact in the output folder; then the ``--max-drop`` gate."""
    req, src = job.req, job.src
    out_dir = Path(req.output) if req.output else default_output(src, req.target, req.precision, job.nncf)
    if src.artifact is not None and out_dir.resolve() == src.artifact.root.resolve():
        raise EdgeferError(f"the output folder {out_dir} is the source artifact's folder; choose another -o")
    install(job.staging, out_dir, sorted(set(man.files.values())))
    write_artifact(man, out_dir)
    size = artifact_size(out_dir, man)
    next_command = job.target.next_command(out_dir, man.files)
    result = ExportResult(out_dir, man, size, validation, job.messages, next_command)
    drop = (validation or {}).get("drop_points")
    if req.max_drop is not None and drop is not None and drop > req.max_drop:
        raise CheckFailed(
            f"{out_dir.name}: top-1 drop {drop:.2f} points > --max-drop {req.max_drop} "
            f"({validation['top1']:.2%} vs FP32 {validation['fp32_top1']:.2%} on {job.data.chk_desc}); "
            "artifact written anyway"
        )
    return result
