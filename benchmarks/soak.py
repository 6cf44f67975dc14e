"""Soak test: `edgefer run` over >= 20,000 frames, sampling RSS, threads and open files.

A box that runs for weeks must keep its memory flat. This script builds a long video from the
shared clips (one face close up, a crowd with new tracks all the time, strong expressions; all
at 640x360, cycled until ``--frames``), runs the real CLI on it with every output on (annotated
video, events, summary), samples the process from /proc every ``--every`` seconds, and fits RSS
against frames processed after a warm-up. Prints the slope (bytes per frame), the growth over the
measured span, thread and fd counts, and writes JSON + a plot to benchmarks/results/.

    python benchmarks/soak.py                      # 20,000 frames, results in benchmarks/results/
    python benchmarks/soak.py --frames 3000 --out /tmp/soak   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFER_SHARED", ROOT.parent / "shared"))
CLIPS = ("stage_360p.mp4", "crowd_720p.mp4", "expressive_512.mp4")
SIZE = (640, 360)


def build_video(path: Path, frames: int) -> int:
    """Cycle the clips (letterboxed to 640x360) into one mp4v file of ``frames`` frames."""
    from edgefer.sinks import letterbox

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, SIZE)
    n = 0
    while n < frames:
        for name in CLIPS:
            cap = cv2.VideoCapture(str(SHARED / "data" / "video" / name))
            while n < frames:
                ok, img = cap.read()
                if not ok:
                    break
                w.write(letterbox(img, SIZE))
                n += 1
            cap.release()
            print(f"\rbuilding {path.name}: {n}/{frames} frames", end="", file=sys.stderr, flush=True)
    w.release()
    print(file=sys.stderr)
    return n


def proc_sample(pid: int) -> dict[str, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    vals = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "Threads"):
            vals[k] = int(v.split()[0])
    return {"rss_kib": vals.get("VmRSS", 0), "threads": vals.get("Threads", 0), "fds": fds}


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--warmup", type=int, default=6000,
                    help="frames excluded from the fit (RSS steps up while ONNX Runtime's arenas meet the largest "
                         "crowd batches: measured here to settle by ~5,600 frames)")
    ap.add_argument("--refit", type=Path, default=None, help="refit a saved soak.json with --warmup, without running")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("run_args", nargs="*", help="extra `edgefer run` options (after --)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.refit is not None:
        saved = json.loads(a.refit.read_text())
        return report(a, saved["samples"], {k: saved.get(k) for k in ("frames", "faces", "fps", "cpu_ms_per_frame")},
                      saved["command"], n_frames=saved["frames"])
    with tempfile.TemporaryDirectory(prefix="edgefer-soak-") as tmp:
        tmp = Path(tmp)
        video = tmp / "soak.mp4"
        n = build_video(video, a.frames)
        events = tmp / "events.jsonl"
        cmd = [sys.executable, "-m", "edgefer", "-q", "run", str(video), "--no-display", "-o", str(tmp / "out.mp4"),
               "--events", str(events), "--summary", str(tmp / "summary.json"), *a.run_args]
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples = []
        while p.poll() is None:
            s = proc_sample(p.pid)
            if s:
                s["frames"] = count_lines(events)
                s["t"] = round(time.time() - t0, 2)
                samples.append(s)
                print(f"\rframe {s['frames']}/{n}  RSS {s['rss_kib'] / 1024:.1f} MiB  threads {s['threads']}  fds {s['fds']}   ",
                      end="", file=sys.stderr, flush=True)
            time.sleep(a.every)
        print(file=sys.stderr)
        err = p.stderr.read()
        if p.returncode != 0:
            print(f"edgefer run failed ({p.returncode}): {err.strip()[-500:]}", file=sys.stderr)
            return 1
        summary = json.loads((tmp / "summary.json").read_text())
        command = " ".join(["edgefer", *cmd[3:]]).replace(str(tmp), "$TMP")
    return report(a, samples, summary, command, n_frames=n)


def report(a, samples: list[dict], summary: dict, command: str, n_frames: int) -> int:
    """Fit RSS against frames after the warm-up; print, write JSON and the plot."""
    fit = [s for s in samples if s["frames"] >= a.warmup]
    x = np.array([s["frames"] for s in fit], float)
    y = np.array([s["rss_kib"] * 1024.0 for s in fit])
    slope = float(np.polyfit(x, y, 1)[0]) if len(fit) > 2 and np.ptp(x) > 0 else float("nan")
    span = float(np.ptp(x)) if len(fit) else 0.0
    growth = slope * span
    result = {
        "command": command,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "frames": summary["frames"],
        "faces": summary["faces"],
        "fps": summary["fps"],
        "cpu_ms_per_frame": summary.get("cpu_ms_per_frame"),
        "warmup_frames": a.warmup,
        "rss_slope_bytes_per_frame": round(slope, 3),
        "rss_growth_mib_over_fit": round(growth / 2**20, 3),
        "rss_after_warmup_mib": round(y[0] / 2**20, 1) if len(y) else None,
        "rss_end_mib": round(y[-1] / 2**20, 1) if len(y) else None,
        "rss_max_minus_min_after_warmup_mib": round(float(np.ptp(y)) / 2**20, 2) if len(y) else None,
        "threads": sorted({s["threads"] for s in fit}),
        "fds": sorted({s["fds"] for s in fit}),
        "flat_within_2mib": bool(abs(growth) <= 2 * 2**20),
        "samples": samples,
    }
    (a.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['frames']} frames ({result['faces']} faces) at {result['fps']} fps, "
          f"{result['cpu_ms_per_frame']} ms CPU/frame")
    print(f"RSS after warm-up {result['rss_after_warmup_mib']} MiB, at the end {result['rss_end_mib']} MiB; "
          f"slope {slope:.2f} bytes/frame = {growth / 2**20:+.2f} MiB over {int(span)} frames "
          f"({'flat within 2 MiB' if result['flat_within_2mib'] else 'NOT flat'})")
    print(f"threads {result['threads']}, open fds {result['fds']}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        fx = [s["frames"] for s in samples]
        ax.plot(fx, [s["rss_kib"] / 1024 for s in samples], lw=1.2, label="RSS")
        if len(fit) > 2:
            b = np.polyfit(x, y, 1)
            ax.plot(x, (b[0] * x + b[1]) / 2**20, "--", lw=1, label=f"fit after warm-up: {slope:.1f} B/frame")
        ax.axvline(a.warmup, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("frames processed")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title(f"edgefer run soak: {result['frames']} frames, RSS growth {growth / 2**20:+.2f} MiB")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(a.out / "soak.png", dpi=110)
    except ImportError:
        print("(matplotlib not installed: no plot)", file=sys.stderr)
    return 0 if result["flat_within_2mib"] else 1


if __name__ == "__main__":
    sys.exit(main())
