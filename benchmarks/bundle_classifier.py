"""Bundle a trained checkpoint as a classifier of the package: the flip graph, its one-pass twin, its CAM twin.

    python benchmarks/bundle_classifier.py CKPT --stem edgenet2 [--name edgenet2]

writes into ``edgefer/assets``:

* ``STEM.onnx`` / ``STEM.json``: ``edgefer export CKPT --target onnx`` (with the checkpoint's
  in-graph flip when its sidecar says ``tta: flip``);
* ``STEM_fast.onnx`` / ``STEM_fast.json``: the same weights in one pass (no flip): half the
  per-face cost; made from ``CKPT`` with a sidecar that drops ``tta`` (``CKPT`` stem + ``-single``);
* ``STEM_cam.onnx`` / ``STEM_cam.json``: the CAM twin (``python -m edgefer.export.cam``), with its
  Grad-CAM agreement measured on 300 PublicTest faces.

Each manifest names the command that made it. Register the names in
``edgefer/artifact.py::BUNDLED`` and the licence in ``edgefer/assets/LICENSES.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "edgefer/assets"
LICENSE = "MIT (edgefer; our architecture, trained here on FER2013, see LICENSES.md)"


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def place(folder: Path, stem: str, name: str, command: str) -> Path:
    """Move an exported artifact's model.onnx / manifest.json into the assets as STEM.onnx / STEM.json."""
    man = json.loads((folder / "manifest.json").read_text())
    model = man["files"]["model"]
    shutil.copyfile(folder / model, ASSETS / f"{stem}.onnx")
    man["name"] = name
    man["files"] = {"model": f"{stem}.onnx"}
    man["checksums"] = {f"{stem}.onnx": man["checksums"][model]}
    man["provenance"]["command"] = command
    man["license"] = LICENSE
    out = ASSETS / f"{stem}.json"
    out.write_text(json.dumps(man, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--stem", required=True)
    ap.add_argument("--name", default=None, help="manifest name (default: the stem with - for _)")
    ap.add_argument("--gradcam-check", type=int, default=300)
    a = ap.parse_args(argv)
    name = a.name or a.stem.replace("_", "-")
    ckpt = a.ckpt.relative_to(REPO) if a.ckpt.is_absolute() else a.ckpt
    side = json.loads((REPO / f"{ckpt}.json").read_text())
    single = ckpt.with_name(ckpt.stem + "-single.pth")
    shutil.copyfile(REPO / ckpt, REPO / single)
    one = {k: v for k, v in side.items() if k != "tta"}
    one["note"] = f"the weights of {ckpt.name}, exported in one pass (no in-graph flip)"
    (REPO / f"{single}.json").write_text(json.dumps(one, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for src, stem, nm in ((ckpt, a.stem, name), (single, f"{a.stem}_fast", f"{name}-fast")):
            out = Path(tmp) / stem
            sh("edgefer", "-q", "export", str(src), "--target", "onnx", "-o", str(out))
            place(out, stem, nm, f"edgefer export {src} --target onnx -o DIR, files renamed to {stem}.onnx / {stem}.json "
                                 f"(benchmarks/bundle_classifier.py)")
    sh(sys.executable, "-m", "edgefer.export.cam", str(ckpt), "-o", str(ASSETS.relative_to(REPO)), "--stem",
       f"{a.stem}_cam", "--gradcam-check", str(a.gradcam_check))
    cam = ASSETS / f"{a.stem}_cam.json"
    man = json.loads(cam.read_text())
    man["name"], man["license"] = name, LICENSE
    cam.write_text(json.dumps(man, indent=2) + "\n")
    print(f"bundled {name}, {name}-fast and the CAM twin into {ASSETS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
