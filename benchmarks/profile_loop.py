"""Where the video loop's time goes: py-spy samples of `edgefer run`, sorted by thread and stage.

    python benchmarks/profile_loop.py ../shared/data/video/*.mp4 [--args "--detect-every 3"] \
        [--rate 250] [--json out.json] [--plot out.png] [--raw-dir DIR]

For each video, `edgefer run VIDEO --no-display` runs under ``py-spy record --idle`` (every
thread sampled at every tick, waiting included), and each sample is put in one bucket by its
stack: the decode thread (``_Capture._reader``: decoding, or waiting for room in the queue), the
detect thread (``_detect_ahead`` worker: detector inference, its pre/post-processing, waiting)
and the main thread (crop + align, classifier inference, tracking, waiting for the detect
thread, output). Start-up (imports, model loading) is its own bucket and left out of the
shares. A thread's shares add up to 100% of its loop time, so "main: waiting for detection"
at 60% says the loop is bound by the detector, and the decode thread's "waiting for room"
share says how much decoding head-room is left.

ONNX Runtime's own worker threads are native and not sampled; their work shows as time inside
the calling thread's ``Session.run`` (inference), which is the useful attribution here.
Needs py-spy (`pip install py-spy`; not in the dev extra) and permission to trace a child process (root, or
ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

# (bucket, substrings any of which in the stack puts a sample there); the first match wins, so
# the more specific entries come first within a thread
THREADS = [
    ("decode", ("_Capture._reader",)),
    ("detect", ("detect_ahead.<locals>.worker",)),
]
BUCKETS = {
    "decode": [
        ("waiting (queue full)", ("Queue.put", "time.sleep")),
        ("decode", ("_Capture._reader",)),  # the reader's own frame: cv2 read (native) or bookkeeping
    ],
    "detect": [
        ("waiting for frames", ("Queue.get", "_Capture.__iter__")),
        ("waiting (queue full)", ("Queue.put",)),
        ("pre-processing", ("FaceDetector.preprocess",)),
        ("post-processing", ("FaceDetector.postprocess",)),
        ("inference", ("Session.run", "FaceDetector.__call__")),
    ],
    "main": [
        ("startup", ("_find_and_load", "Pipeline.__init__", "open_source", "import_module")),
        ("waiting for detection", ("detect_ahead",)),
        ("classify: inference", ("Classifier.predict",)),
        ("classify: crop + align", ("Classifier.crops", "crop_faces")),
        ("track", ("IoUTracker.update",)),
        ("detect (serial)", ("Pipeline.detect",)),
        ("output", ("EventWriter", "AnnotatedOutput", "annotate", "Display", "draw_heatmaps")),
        ("explain", ("pick_maps", "face_affines")),
        ("loop / python", ("Pipeline.process", "Pipeline.run")),
    ],
}


def bucket(stack: str) -> tuple[str, str]:
    """(thread, bucket) of one collapsed py-spy stack."""
    thread = "main"
    for name, needles in THREADS:
        if any(n in stack for n in needles):
            thread = name
            break
    frames = [f.split(" (", 1)[0] for f in stack.split(";")]
    for name, needles in BUCKETS[thread]:
        if any(n in f for f in frames for n in needles):
            return thread, name
    if thread == "main" and "Pipeline.run" not in frames:
        return thread, "startup"
    return thread, "other"


def parse_raw(path: Path) -> dict[str, Counter]:
    out: dict[str, Counter] = defaultdict(Counter)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        t, b = bucket(stack)
        out[t][b] += int(n)
    return out


def shares(counts: dict[str, Counter]) -> dict[str, dict[str, float]]:
    res = {}
    for t, c in counts.items():
        c = Counter({k: v for k, v in c.items() if k != "startup"})
        tot = sum(c.values())
        if tot:
            res[t] = {k: round(100.0 * v / tot, 1) for k, v in c.most_common()}
    return res


def profile(video: str, extra: list[str], rate: int, raw_dir: Path) -> dict:
    raw = raw_dir / (Path(video).stem + ".txt")
    summary = raw_dir / (Path(video).stem + ".summary.json")
    cmd = ["py-spy", "record", "--idle", "-r", str(rate), "-f", "raw", "-o", str(raw), "--",
           sys.executable, "-m", "edgefer", "-q", "run", video, "--no-display", "--summary", str(summary), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not raw.exists():
        raise SystemExit(f"py-spy failed on {video}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    s = json.loads(summary.read_text())
    counts = parse_raw(raw)
    return {
        "video": Path(video).name,
        "frames": s["frames"],
        "fps_under_profiler": s["fps"],
        "stage_p50_ms": {k: v["p50"] for k, v in s["latency_ms"].items()},
        "samples": {t: dict(c) for t, c in counts.items()},
        "share_pct": shares(counts),
    }


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = ["decode", "detect", "main"]
    names = sorted({b for r in rows for t in threads for b in r["share_pct"].get(t, {})})
    cmap = plt.get_cmap("tab20")
    colour = {b: cmap(i % 20) for i, b in enumerate(names)}
    fig, axes = plt.subplots(1, len(threads), figsize=(5 * len(threads), 0.5 * len(rows) + 2), sharey=True)
    for ax, t in zip(axes, threads):
        for y, r in enumerate(rows):
            left = 0.0
            for b, v in r["share_pct"].get(t, {}).items():
                ax.barh(y, v, left=left, color=colour[b], label=b)
                if v >= 9:
                    ax.text(left + v / 2, y, f"{v:.0f}", ha="center", va="center", fontsize=7)
                left += v
        ax.set_title(f"{t} thread")
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of the thread's loop time")
    axes[0].set_yticks(range(len(rows)), [r["video"] for r in rows])
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("edgefer run: where each thread's time goes (py-spy --idle)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--args", default="", help="extra `edgefer run` arguments, one string")
    ap.add_argument("--rate", type=int, default=250, help="samples per second per thread")
    ap.add_argument("--json")
    ap.add_argument("--plot")
    ap.add_argument("--raw-dir", help="keep py-spy's collapsed stacks here (default: a temporary folder)")
    a = ap.parse_args(argv)
    if not shutil.which("py-spy"):
        print("profile_loop: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    raw_dir = Path(a.raw_dir) if a.raw_dir else Path(tempfile.mkdtemp(prefix="edgefer-prof-"))
    raw_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in a.videos:
        r = profile(v, shlex.split(a.args), a.rate, raw_dir)
        rows.append(r)
        print(f"{r['video']}: {r['frames']} frames, {r['fps_under_profiler']:.1f} fps under the profiler; "
              f"stage p50 ms " + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_p50_ms"].items()))
        for t in ("decode", "detect", "main"):
            sh = r["share_pct"].get(t)
            if sh:
                print(f"  {t:7s} " + ", ".join(f"{b} {p:.0f}%" for b, p in sh.items()))
    if a.json:
        Path(a.json).write_text(json.dumps({"args": a.args, "rate": a.rate, "rows": rows}, indent=1) + "\n")
    if a.plot:
        plot(rows, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
