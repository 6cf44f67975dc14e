"""Check that edgefer installs on the deploy platforms: binary wheels resolve, and the code is Python 3.10.

Jetson (JetPack 6: aarch64, Python 3.10), ARM CPU boards (aarch64, Python 3.11) and Apple Silicon
(macOS arm64, Python 3.10-3.12) cannot be tested on this x86-64 machine, but whether pip finds a
**binary wheel** for every package of the runtime and of each platform's extra can: pip resolves for
another platform with ``--platform/--python-version/--implementation/--only-binary=:all:``. A
missing wheel (a package that would need compiling on the device, or none at all) fails here.

``pip install --dry-run --report`` resolves with dependencies and, on indexes that serve wheel
metadata separately (PyPI does, PEP 658), downloads metadata only, so the whole check takes
seconds; nothing is installed and nothing is cached in the repository (a temporary folder).

Then the static check: ``vermin -t=3.10-`` (stdlib APIs and syntax newer than 3.10) and
``ruff check --target-version py310 --select E9,F63,F7,F82`` (syntax errors for 3.10) over the
packages. Tools missing -> that check fails with the install hint (both are in the ``dev`` extra).

Exit 0 when everything resolves and passes, 1 otherwise; ``--json`` prints the per-target result.
Run by ``.ci/run``; ``tests/test_deploy_wheels.py`` runs it when ``EDGEFER_CHECK_WHEELS=1``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["edgefer", "export", "calibration", "train"]

#: (label, pip platform tags, Python versions, extras)
#: pip matches each ``--platform`` tag exactly (no expansion to older glibc or macOS releases for a
#: foreign platform), so each list names the tags the platform accepts that wheels use: JetPack 6 is
#: Ubuntu 22.04 (glibc 2.35), Raspberry Pi OS / Debian 12 has glibc 2.36; OpenVINO's aarch64
#: wheels are manylinux_2_31 (without that tag pip finds nothing newer than 2023.1); macOS 12 is
#: the oldest that predicts .mlpackage models, and macOS 11/12 get older wheels than macOS 14.
_AARCH64 = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
            "manylinux_2_31_aarch64", "manylinux_2_34_aarch64", "manylinux_2_35_aarch64"]
TARGETS = [
    ("jetson (JetPack 6, linux aarch64)", _AARCH64, ["3.10"], ["jetson"]),
    ("arm cpu board (linux aarch64)", _AARCH64 + ["manylinux_2_36_aarch64"], ["3.11"], ["openvino"]),
    ("apple silicon (macOS 12+ arm64)", ["macosx_11_0_arm64", "macosx_12_0_arm64"], ["3.10", "3.11", "3.12"], ["coreml"]),
    ("apple silicon (macOS 14 arm64)", ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64",
                                        "macosx_14_0_arm64"], ["3.12"], ["coreml"]),
]


def _pyproject() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli, when installed
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(text)


def requirements(extras: list[str]) -> list[str]:
    """The runtime dependencies plus those of ``extras``, as pyproject.toml lists them."""
    proj = _pyproject()["project"]
    reqs = list(proj["dependencies"])
    for e in extras:
        if e not in proj.get("optional-dependencies", {}):
            raise SystemExit(f"pyproject.toml has no [{e}] extra")
        reqs += proj["optional-dependencies"][e]
    return reqs


def resolve(platforms: list[str], python: str, reqs: list[str], tmp: Path) -> dict:
    """Resolve ``reqs`` for one platform / Python with binary wheels only; what pip chose or why it failed."""
    tmp.mkdir(parents=True, exist_ok=True)
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
           "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
           "--target", str(tmp / "target"), "--report", str(report)]
    for p in platforms:
        cmd += ["--platform", p]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + reqs, capture_output=True, text=True, timeout=600)
    out = {"python": python, "platforms": platforms, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0 or not report.exists():
        err = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "ERROR" in ln or "No matching" in ln]
        out.update(ok=False, error=" | ".join(err[-3:]) or (proc.stderr or "pip failed").strip()[-400:])
        return out
    items = json.loads(report.read_text()).get("install", [])
    pkgs = {}
    not_wheels = []
    for it in items:
        name, version = it["metadata"]["name"], it["metadata"]["version"]
        url = it.get("download_info", {}).get("url", "")
        fname = url.rsplit("/", 1)[-1]
        pkgs[name.lower()] = f"{version} ({fname})" if fname.endswith(".whl") else version
        if not fname.endswith(".whl"):
            not_wheels.append(f"{name} {version}: {fname or url}")
    out.update(ok=not not_wheels, packages=dict(sorted(pkgs.items())))
    if not_wheels:
        out["error"] = "not a binary wheel: " + "; ".join(not_wheels)
    return out


def static_checks() -> list[dict]:
    """vermin (3.10 APIs and syntax) and ruff (3.10 syntax errors) over the packages."""
    res = []
    paths = [str(ROOT / p) for p in PACKAGES]
    vermin = shutil.which("vermin") or (str(Path(sys.executable).parent / "vermin") if (Path(sys.executable).parent / "vermin").exists() else None)
    if vermin is None:
        res.append({"check": "vermin -t=3.10-", "ok": False, "error": "vermin not installed: pip install '.[dev]'"})
    else:
        p = subprocess.run([vermin, "-t=3.10-", "--no-tips", "--violations", "--eval-annotations", *paths],
                           capture_output=True, text=True, timeout=300)
        m = re.search(r"Minimum required versions?:\s*(.*)", p.stdout)
        res.append({"check": "vermin -t=3.10- --violations --eval-annotations", "ok": p.returncode == 0,
                    "minimum": m.group(1).strip() if m else None,
                    **({} if p.returncode == 0 else {"error": (p.stdout + p.stderr).strip()[-800:]})})
    ruff = shutil.which("ruff") or (str(Path(sys.executable).parent / "ruff") if (Path(sys.executable).parent / "ruff").exists() else None)
    if ruff is None:
        res.append({"check": "ruff --target-version py310", "ok": False, "error": "ruff not installed: pip install '.[dev]'"})
    else:
        p = subprocess.run([ruff, "check", "--no-cache", "--target-version", "py310", "--select", "E9,F63,F7,F82", *paths],
                           capture_output=True, text=True, timeout=300)
        res.append({"check": "ruff check --target-version py310 --select E9,F63,F7,F82", "ok": p.returncode == 0,
                    **({} if p.returncode == 0 else {"error": (p.stdout + p.stderr).strip()[-800:]})})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    ap.add_argument("--no-static", action="store_true", help="only resolve wheels")
    args = ap.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(label, platforms, py, extras) for label, platforms, pythons, extras in TARGETS for py in pythons]
    results = []
    with tempfile.TemporaryDirectory(prefix="edgefer-wheels-") as tmp, ThreadPoolExecutor(3) as pool:
        # pip spends its time waiting on the index: three resolutions at once keep the check near 30 s
        futs = [pool.submit(resolve, platforms, py, requirements(extras), Path(tmp) / f"{i}")
                for i, (label, platforms, py, extras) in enumerate(jobs)]
        for (label, platforms, py, extras), fut in zip(jobs, futs):
            if True:
                r = fut.result()
                r.update(target=label, extras=extras)
                results.append(r)
                mark = "ok  " if r["ok"] else "FAIL"
                core = {k: r.get("packages", {}).get(k, "-").split(" ")[0]
                        for k in ("onnxruntime", "opencv-python", "numpy", *[e for e in ("coremltools", "cuda-python", "openvino") if e in r.get("packages", {})])}
                print(f"{mark} {label}, Python {py}, [{','.join(extras)}] in {r['seconds']}s: "
                      + (", ".join(f"{k} {v}" for k, v in core.items()) if r["ok"] else r.get("error", "")))
    static = [] if args.no_static else static_checks()
    for s in static:
        print(f"{'ok  ' if s['ok'] else 'FAIL'} {s['check']}" + (f": minimum {s['minimum']}" if s.get("minimum") else "")
              + ("" if s["ok"] else f": {s['error']}"))
    ok = all(r["ok"] for r in results) and all(s["ok"] for s in static)
    if args.json:
        print(json.dumps({"ok": ok, "resolve": results, "static": static}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
