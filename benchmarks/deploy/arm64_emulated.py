"""The runtime on ARM64, proven from an x86-64 machine: an emulated Debian arm64 root (QEMU user mode).

Not part of CI (emulation is ~200x slower; run time is minutes to an hour). What it shows: the
edgefer wheel installs on linux-aarch64 with its real dependencies from PyPI (numpy, OpenCV,
ONNX Runtime, PyAV aarch64 wheels), ``edgefer run`` works there, and its events match the
x86-64 run of the same inputs: same faces, same emotions, probabilities within ``--tol`` (1e-3).
Emulated speed means nothing and is not reported.

Steps (each skipped when already done, so a rerun resumes):

1. tools: ``debootstrap``, ``qemu-user-static``, ``binfmt-support`` (apt-get), ``binfmt_misc``
   mounted and the ``qemu-aarch64`` handler enabled;
2. ``debootstrap --arch=arm64 --variant=minbase bookworm`` with python3, venv, pip, CA
   certificates, libGL and GLib (opencv-python's GUI build links them);
3. the host's CA bundle and pip configuration (``/etc/pip.conf``, ``/etc/xdg/pip``,
   ``~/.config/pip``, ``PIP_*``) copied in, so pip inside reaches the same index;
4. ``pip wheel --no-deps .`` on the host; in the root ``python3 -m venv`` and ``pip install`` of
   that wheel (dependencies resolved for aarch64);
5. ``edgefer run`` on the shared photos and the first 30 frames of ``stage_360p.mp4``,
   ``--every-frame --smoothing 0 --threads 1 --backend onnxruntime`` (deterministic: every frame
   detected and classified, raw probabilities), inside the root and on the host;
6. the same input tensors (photos resized, face crops) through the bundled detector and
   classifiers on both sides, so ONNX Runtime's aarch64 kernels are compared apart from OpenCV's
   decoding and warping;
7. the comparison, written to ``benchmarks/results/deploy_arm64.json``.

``/proc`` and ``/dev`` are mounted into the root; ``/sys`` is deliberately **not**: recent
onnxruntime reads CPU topology from /sys at import and crashes QEMU with it. Every heavy step
runs under ``nice -n 19`` (the machine is shared). Needs root.

    sudo python benchmarks/deploy/arm64_emulated.py [--root /var/tmp/edgefer-arm64/root]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
NICE = ["nice", "-n", "19"]
RUN_FLAGS = ["--every-frame", "--smoothing", "0", "--threads", "1", "--backend", "onnxruntime", "--no-display"]
INPUTS = {"photos": ("data/photos", []), "video": ("data/video/stage_360p.mp4", ["--max-frames", "30"]),
          # the same 30 frames decoded once on x86-64 and stored as PNG (lossless): both runs start
          # from identical pixels, which separates the decoder's arithmetic from the rest
          "video_frames_png": ("x86-decoded PNG frames of stage_360p.mp4", [])}
N_FRAMES = 30


def write_png_frames(out: Path) -> None:
    """The first 30 frames of the video as decoded here (x86-64), as lossless PNG files."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(SHARED / INPUTS["video"][0]))
    for i in range(N_FRAMES):
        ok, frame = cap.read()
        if not ok:
            break
        cv2.imwrite(str(out / f"frame{i:03d}.png"), frame)
    cap.release()


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    say("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


# ----------------------------------------------------------------------------- 1-3: the root
def ensure_tools() -> None:
    missing = [p for p, exe in (("debootstrap", "debootstrap"), ("qemu-user-static", "qemu-aarch64-static"))
               if not shutil.which(exe)]
    if missing:
        sh(NICE + ["apt-get", "install", "-y", "-qq", *missing, "binfmt-support"])
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        sh(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        sh(["update-binfmts", "--enable", "qemu-aarch64"])


def ensure_root(root: Path, mirror: str) -> None:
    if (root / "usr/bin/python3").exists() and (root / "etc/ssl/certs/ca-certificates.crt").exists():
        say(f"arm64 root already at {root}")
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    sh(NICE + ["debootstrap", "--arch=arm64", "--variant=minbase",
               "--include=python3,python3-venv,python3-pip,ca-certificates,libgl1,libglib2.0-0",
               "bookworm", str(root), mirror])


def copy_config(root: Path) -> dict[str, str]:
    """The host's CA bundle and pip configuration into the root; the PIP_* environment to pass."""
    for src in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf"):
        if Path(src).exists():
            (root / src.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / src.lstrip("/"))
    for src, dst in (("/etc/xdg/pip", "etc/xdg/pip"), (str(Path.home() / ".config/pip"), "root/.config/pip")):
        if Path(src).is_dir():
            shutil.copytree(src, root / dst, dirs_exist_ok=True)
    if Path("/etc/resolv.conf").exists():
        shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    return {k: v for k, v in os.environ.items() if k.startswith("PIP_")}


class Mounts:
    """/proc and /dev in the root for the duration (never /sys: see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        self.done: list[Path] = []

    def __enter__(self):
        for args, target in ((["-t", "proc", "proc"], "proc"), (["--bind", "/dev"], "dev")):
            t = self.root / target
            t.mkdir(exist_ok=True)
            if not os.path.ismount(t):
                sh(["mount", *args, str(t)])
                self.done.append(t)
        return self

    def __exit__(self, *exc):
        for t in reversed(self.done):
            subprocess.run(["umount", "-l", str(t)], check=False)


def chroot(root: Path, cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    base = {"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", **env}
    say("(arm64) $ " + " ".join(cmd))
    return subprocess.run(NICE + ["chroot", str(root), "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in base.items()], *cmd],
                          check=True, **kw)


# ----------------------------------------------------------------------------- 4-5: install and run
def build_wheel(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("edgefer-*.whl"):
        old.unlink()
    sh(NICE + [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)])
    return next(out.glob("edgefer-*.whl"))


def install(root: Path, wheel: Path, env: dict[str, str]) -> dict[str, str]:
    work = root / "work"
    work.mkdir(exist_ok=True)
    for old in work.glob("edgefer-*.whl"):
        old.unlink()
    shutil.copy2(wheel, work / wheel.name)
    if not (root / "opt/venv/bin/python").exists():
        chroot(root, ["python3", "-m", "venv", "/opt/venv"], env)
    chroot(root, ["/opt/venv/bin/pip", "install", "-q", "--force-reinstall", "--no-deps", f"/work/{wheel.name}"], env)
    chroot(root, ["/opt/venv/bin/pip", "install", "-q", f"/work/{wheel.name}"], env)  # dependencies, aarch64 wheels
    out = chroot(root, ["/opt/venv/bin/python", "-c",
                        "import json,platform,numpy,cv2,onnxruntime,edgefer;print(json.dumps({'machine':platform.machine(),"
                        "'python':platform.python_version(),'numpy':numpy.__version__,'opencv':cv2.__version__,"
                        "'onnxruntime':onnxruntime.__version__,'edgefer':getattr(edgefer,'__version__','?')}))"],
                 env, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_arm64(root: Path, env: dict[str, str], png: Path, skip_done: bool = False) -> dict[str, float]:
    data = root / "data"
    data.mkdir(exist_ok=True)
    shutil.copytree(SHARED / INPUTS["photos"][0], data / "photos", dirs_exist_ok=True)
    shutil.copy2(SHARED / INPUTS["video"][0], data / "stage_360p.mp4")
    shutil.copytree(png, data / "frames_png", dirs_exist_ok=True)
    out = root / "out"
    out.mkdir(exist_ok=True)
    secs = {}
    for name, src in (("photos", "/data/photos"), ("video", "/data/stage_360p.mp4"), ("video_frames_png", "/data/frames_png")):
        if skip_done and (out / f"{name}.jsonl").exists():
            continue
        t0 = time.perf_counter()
        chroot(root, ["edgefer", "run", src, "--events", f"/out/{name}.jsonl", *RUN_FLAGS, *INPUTS[name][1]], env)
        secs[name] = round(time.perf_counter() - t0, 1)
    return secs


def run_host(out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("edgefer") or str(Path(sys.executable).parent / "edgefer")
    for name, (rel, extra) in INPUTS.items():
        src = out.parent / "frames_png" if name == "video_frames_png" else SHARED / rel
        sh(NICE + [exe, "run", str(src), "--events", str(out / f"{name}.jsonl"), *RUN_FLAGS, *extra])
    import cv2
    import numpy
    import onnxruntime

    return {"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
            "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__}


# ----------------------------------------------------------------------------- 5b: same tensors in, same out?
#: runs in both environments: the bundled detector and classifier on identical input tensors, so
#: the runtime (ONNX Runtime's aarch64 vs x86-64 kernels) is compared apart from image decoding,
#: resizing and warping, whose float rounding differs between OpenCV's NEON and AVX paths
PROBE = r"""
import sys, numpy as np
from edgefer.backends import open_backend
x = np.load(sys.argv[1])
out = {}
for name, key in (("retinaface-mnet025", "det"), ("edgenet", "cls"), ("edgenet-fast", "cls")):
    b = open_backend(name, "onnxruntime", threads=1)
    for k in sorted(x.files):
        if k.startswith(key):
            for i, o in enumerate(b.run(x[k])):
                out[f"{name}/{k}/{i}"] = o
import cv2
from edgefer.capture import open_video_file
cap = open_video_file(sys.argv[3])  # the decoder edgefer uses for files (PyAV + edgefer.avdecode's integer YUV->BGR)
frames = []
while len(frames) < 30:
    ok, f = cap.read()
    if not ok:
        break
    frames.append(f)
out["decoded"] = np.stack(frames)
import glob, os
for f in sorted(glob.glob(os.path.join(sys.argv[4], "*.jpg"))):
    im = cv2.imread(f)
    out["jpeg/" + os.path.basename(f)] = im
    s = 640 / max(im.shape[:2])  # what the detector's input resize does to a large photo
    size = (int(im.shape[1] * s), int(im.shape[0] * s))
    for interp in ("INTER_LINEAR", "INTER_LINEAR_EXACT"):
        out[f"resize_{interp}/" + os.path.basename(f)] = cv2.resize(im, size, interpolation=getattr(cv2, interp))
np.savez(sys.argv[2], **out)
"""


def probe_inputs(path: Path) -> None:
    """Identical input tensors for both runs: the shared photos resized for the detector, and
    48x48 grey face crops cut at the boxes of the x86-64 run (plus random pixels) for the classifier."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    photos = sorted((SHARED / INPUTS["photos"][0]).glob("*.jpg"))
    for i, f in enumerate(photos):
        arrays[f"det{i}"] = cv2.resize(cv2.imread(str(f)), (640, 480), interpolation=cv2.INTER_AREA)[None]
    crops = []
    events = [json.loads(ln) for ln in (path.parent / "x86" / "photos.jsonl").read_text().splitlines() if ln.strip()]
    for ev in events:
        img = cv2.imread(str(SHARED / INPUTS["photos"][0] / ev["file"]), cv2.IMREAD_GRAYSCALE)
        for face in ev["faces"]:
            x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
            crops.append(cv2.resize(img[max(y1, 0):y2, max(x1, 0):x2], (48, 48), interpolation=cv2.INTER_AREA))
    arrays["cls_faces"] = np.stack(crops)[..., None]
    arrays["cls_random"] = rng.integers(0, 256, (16, 48, 48, 1), dtype=np.uint8)
    np.savez(path, **arrays)


def compare_tensors(a: Path, b: Path) -> dict:
    import numpy as np

    x, y = np.load(a), np.load(b)
    def same(prefix: str) -> str:
        keys = [k for k in x.files if k.startswith(prefix)]
        n = sum(k in y.files and np.array_equal(x[k], y[k]) for k in keys)
        return f"{n} of {len(keys)} identical"

    skip = ("decoded", "jpeg/", "resize_")
    res = {"outputs": sum(not k.startswith(skip) for k in x.files), "max_abs_diff": {}, "argmax_agree": {},
           "decoded_jpeg": same("jpeg/"),
           "cv2_resize_INTER_LINEAR_photos_to_640": same("resize_INTER_LINEAR/"),
           "cv2_resize_INTER_LINEAR_EXACT_photos_to_640": same("resize_INTER_LINEAR_EXACT/")}
    dx, dy = x["decoded"].astype(np.int16), y["decoded"].astype(np.int16)
    diff = np.abs(dx - dy) if dx.shape == dy.shape else None
    res["decoded_video"] = {
        "frames": [int(len(dx)), int(len(dy))],
        "identical": bool(diff is not None and not diff.any()),
        "max_abs_diff": None if diff is None else int(diff.max()),
        "pixels_differing": None if diff is None else float(f"{(diff > 0).mean():.4g}"),
    }
    for k in x.files:
        if k.startswith(skip):
            continue
        model = k.split("/")[0]
        d = float(np.abs(x[k].astype(np.float64) - y[k].astype(np.float64)).max())
        res["max_abs_diff"][model] = max(res["max_abs_diff"].get(model, 0.0), d)
        if model.startswith("edgenet"):
            agree = bool((x[k].argmax(-1) == y[k].argmax(-1)).all())
            res["argmax_agree"][model] = res["argmax_agree"].get(model, True) and agree
    res["max_abs_diff"] = {k: float(f"{v:.3g}") for k, v in res["max_abs_diff"].items()}
    return res


# ----------------------------------------------------------------------------- 6: compare
def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare(x86: Path, arm: Path, tol: float) -> dict:
    """Frame by frame: same number of faces, each matched by IoU, same emotion, probabilities within ``tol``."""
    a = [json.loads(ln) for ln in x86.read_text().splitlines() if ln.strip()]
    b = [json.loads(ln) for ln in arm.read_text().splitlines() if ln.strip()]
    res = {"frames_x86": len(a), "frames_arm64": len(b), "faces": 0, "face_count_mismatches": 0,
           "emotion_mismatches": 0, "max_prob_diff": 0.0, "max_score_diff": 0.0, "min_box_iou": 1.0, "problems": []}
    if len(a) != len(b):
        res["problems"].append(f"{len(a)} frames on x86-64, {len(b)} on arm64")
    for fa, fb in zip(a, b):
        ka = fa.get("file", fa["frame"])
        if len(fa["faces"]) != len(fb["faces"]):
            res["face_count_mismatches"] += 1
            res["problems"].append(f"{ka}: {len(fa['faces'])} faces on x86-64, {len(fb['faces'])} on arm64")
            continue
        left = list(fb["faces"])
        for face in fa["faces"]:
            j = max(range(len(left)), key=lambda i: _iou(face["box"], left[i]["box"]))
            other = left.pop(j)
            res["faces"] += 1
            res["min_box_iou"] = min(res["min_box_iou"], round(_iou(face["box"], other["box"]), 4))
            res["max_score_diff"] = max(res["max_score_diff"], round(abs(face["score"] - other["score"]), 5))
            if face["emotion"] != other["emotion"]:
                res["emotion_mismatches"] += 1
                res["problems"].append(f"{ka}: {face['emotion']} on x86-64, {other['emotion']} on arm64")
            d = max(abs(face["probs"][k] - other["probs"][k]) for k in face["probs"])
            res["max_prob_diff"] = max(res["max_prob_diff"], round(d, 5))
    res["same_faces_and_emotions"] = (len(a) == len(b) > 0 and not res["face_count_mismatches"]
                                      and not res["emotion_mismatches"] and res["min_box_iou"] >= 0.99)
    res["probs_within_tol"] = res["max_prob_diff"] <= tol
    res["ok"] = res["same_faces_and_emotions"] and res["probs_within_tol"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/var/tmp/edgefer-arm64/root"))
    ap.add_argument("--mirror", default="http://deb.debian.org/debian")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--result", type=Path, default=REPO / "benchmarks/results/deploy_arm64.json")
    ap.add_argument("--skip-runs", action="store_true", help="reuse the arm64 events of an earlier run when present")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (debootstrap, chroot, mount)", file=sys.stderr)
        return 2
    work = args.root.parent
    ensure_tools()
    ensure_root(args.root, args.mirror)
    env = copy_config(args.root)
    wheel = build_wheel(work / "wheel")
    write_png_frames(work / "frames_png")
    host = run_host(work / "x86")
    probe_inputs(work / "probe_in.npz")
    (work / "probe.py").write_text(PROBE)
    sh(NICE + [sys.executable, str(work / "probe.py"), str(work / "probe_in.npz"), str(work / "x86" / "probe_out.npz"),
               str(SHARED / INPUTS["video"][0]), str(SHARED / INPUTS["photos"][0])])
    with Mounts(args.root):
        arm = install(args.root, wheel, env)
        if arm.get("machine") != "aarch64":
            raise SystemExit(f"the root's Python says {arm.get('machine')}, not aarch64: is binfmt/QEMU working?")
        run_arm64(args.root, env, work / "frames_png", skip_done=args.skip_runs)
        shutil.copy2(work / "probe_in.npz", args.root / "work/probe_in.npz")
        (args.root / "work/probe.py").write_text(PROBE)
        chroot(args.root, ["/opt/venv/bin/python", "/work/probe.py", "/work/probe_in.npz", "/out/probe_out.npz",
                           "/data/stage_360p.mp4", "/data/photos"], env)
    result = {
        "what": "edgefer run, x86-64 native vs linux-aarch64 under QEMU user emulation (Debian 12 arm64 root)",
        "command": "edgefer run SOURCE --events E.jsonl " + " ".join(RUN_FLAGS),
        "inputs": {k: v[0] + (" " + " ".join(v[1]) if v[1] else "") for k, v in INPUTS.items()},
        "how_to_read": ("compare: end-to-end events per input. same_tensors: the bundled models on identical "
                        "input tensors (ONNX Runtime aarch64 vs x86-64 kernels alone), and whether OpenCV decodes "
                        "the JPEG photos and the H.264 video to identical pixels on both."),
        "wheel": wheel.name, "tolerance": args.tol,
        "x86_64": host, "arm64": arm,
        "compare": {k: compare(work / "x86" / f"{k}.jsonl", args.root / "out" / f"{k}.jsonl", args.tol) for k in INPUTS},
        "same_tensors": compare_tensors(work / "x86" / "probe_out.npz", args.root / "out" / "probe_out.npz"),
    }
    t = result["same_tensors"]
    t["ok"] = all(v <= args.tol for v in t["max_abs_diff"].values()) and all(t["argmax_agree"].values())
    t["note"] = ("detector outputs are raw logits/box offsets on 640x480 images (abs diff in their own units); "
                 "classifier outputs are probabilities")
    result["ok"] = all(c["ok"] for c in result["compare"].values()) and t["ok"]
    c = result["compare"]
    result["verdict"] = [
        f"identical pixels in (x86-decoded PNG frames): same faces and emotions: {c['video_frames_png']['same_faces_and_emotions']}, "
        f"max |dp| {c['video_frames_png']['max_prob_diff']} (tolerance {args.tol})",
        f"models on identical tensors: max |diff| {t['max_abs_diff']}, same argmax: {all(t['argmax_agree'].values())}",
        f"photos end to end: same faces and emotions: {c['photos']['same_faces_and_emotions']}, max |dp| "
        f"{c['photos']['max_prob_diff']}, min box IoU {c['photos']['min_box_iou']}; JPEG decode {t['decoded_jpeg']}, "
        f"detector-input cv2.resize INTER_LINEAR {t['cv2_resize_INTER_LINEAR_photos_to_640']} "
        f"(INTER_LINEAR_EXACT {t['cv2_resize_INTER_LINEAR_EXACT_photos_to_640']})",
        f"H.264 video end to end: same faces and emotions: {c['video']['same_faces_and_emotions']}, max |dp| "
        f"{c['video']['max_prob_diff']}; decoded frames identical: {t['decoded_video']['identical']} "
        f"({t['decoded_video']['pixels_differing']} of pixels differ, by up to {t['decoded_video']['max_abs_diff']} levels)",
    ]
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    say(f"{'OK' if result['ok'] else 'MISMATCH'}: " + "; ".join(
        f"{k}: {c['faces']} faces in {c['frames_arm64']} frames, emotion mismatches {c['emotion_mismatches']}, "
        f"max |dp| {c['max_prob_diff']}" for k, c in result["compare"].items()) + f" -> {args.result}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
