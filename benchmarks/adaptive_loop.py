"""The adaptive video loop (the default) against the every-frame reference, and each lever alone.

    python benchmarks/adaptive_loop.py                       # every shared video, every mode
    python benchmarks/adaptive_loop.py ../shared/data/video/webcam_720p.mp4 --modes every-frame adaptive
    python benchmarks/adaptive_loop.py --recall-only         # the detector's recall vs face size

Per video, in one process: the decode-only fps of the file (the ceiling) and its CPU ms/frame,
then for each mode the end-to-end fps, **process CPU ms per frame** (user + system of every
thread / frames: what decides battery, heat and cameras per box, and what to read on a busy
machine where wall-clock fps is noisy), the ratio to decode-only fps, and against the
every-frame mode (RetinaFace at 640 px on every frame, every face classified):

* ``found``: share of its face-frames (a face in a frame) the mode has too (IoU >= 0.3);
  ``extra``: share of the mode's face-frames it does not have;
* ``agree``: per-frame emotion agreement on its face-frames (a missed face disagrees);
  ``noise-floor`` (every frame at 608 px instead of 640; 95% of the long side for videos under
  640 px) is the yardstick: how often an equally valid setting flips the emotion;
* ``entry``: faces entering (a reference track born after frame 0 that lives >= 3 frames): share
  found within 2 frames of the first frame the every-frame mode detects them, and the worst delay;
* ``carried IoU``: mean IoU of the boxes the mode output on frames it did not detect with the
  every-frame boxes of the same faces (how well faces are moved between detections).

Modes (``--modes`` picks some; ``every-frame`` always runs first as the reference):

* ``every-frame`` (``Pipeline(adaptive=False)``), ``noise-floor``, ``adaptive``
  (``Pipeline()``: the default);
* one lever alone on the every-frame loop: ``only-cadence`` (boxes held between detections),
  ``cadence+motion`` (cadence with the default flow motion), ``only-scale``, ``only-classify-skip``;
* the default less one lever: ``no-cadence``, ``no-scale``, ``no-classify-skip``,
  ``motion=hold``, ``motion=velocity``, ``motion=flow-similarity`` (flow with zoom and rotation),
  ``scale-takes-boxes`` (a reduced-size detection replaces the moved boxes), ``cv-threads``
  (OpenCV's worker pool left on);
* the motion models at one fixed cadence (detect every 4th frame, the same frames for each):
  ``every4-hold``, ``every4-velocity``, ``every4-flow``: what picked the default.

``--recall`` (or ``--recall-only``) also measures RetinaFace mnet0.25's recall against face size in
detector-input pixels: faces it finds at 640 px on every 15th frame of the videos, looked for again
at 128-512 px. It sets the scale lever's ``reliable_px``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loop_modes import agreement, found, matches, run_mode

from edgefer.cadence import AdaptiveConfig
from edgefer.sources import decode_only_fps
from edgefer.track import iou_matrix

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFER_SHARED", ROOT.parent / "shared"))
REFERENCE = "every-frame"
NOISE = "noise-floor"

MODES: dict[str, dict] = {
    REFERENCE: {"adaptive": False},
    NOISE: {"adaptive": False, "det_size": 608},  # scaled to 95% of min(long side, 640) per video: noise_kw()
    "adaptive": {},
    "only-cadence": {"adaptive": AdaptiveConfig(scale=False, motion="hold", classify_skip=False)},
    "cadence+motion": {"adaptive": AdaptiveConfig(scale=False, classify_skip=False)},
    "only-scale": {"adaptive": AdaptiveConfig(cadence=False, motion="hold", classify_skip=False)},
    "only-classify-skip": {"adaptive": AdaptiveConfig(cadence=False, scale=False, motion="hold")},
    "no-cadence": {"adaptive": AdaptiveConfig(cadence=False)},
    "no-scale": {"adaptive": AdaptiveConfig(scale=False)},
    "no-classify-skip": {"adaptive": AdaptiveConfig(classify_skip=False)},
    "motion=hold": {"adaptive": AdaptiveConfig(motion="hold")},
    "motion=velocity": {"adaptive": AdaptiveConfig(motion="velocity")},
    "motion=flow-similarity": {"adaptive": AdaptiveConfig(motion="flow-similarity")},
    "scale-takes-boxes": {"adaptive": AdaptiveConfig(keep_geometry=False)},
    "cv-threads": {"adaptive": AdaptiveConfig(cv_one_thread=False)},
    "every4-hold": {"adaptive": AdaptiveConfig(scale=False, classify_skip=False, motion="hold"), "detect_every": 4},
    "every4-velocity": {"adaptive": AdaptiveConfig(scale=False, classify_skip=False, motion="velocity"), "detect_every": 4},
    "every4-flow": {"adaptive": AdaptiveConfig(scale=False, classify_skip=False, motion="flow"), "detect_every": 4},
}


def noise_kw(video: Path) -> dict:
    """The noise-floor mode for ``video``: every frame at 95% of the reference's detector size.

    608 px where the reference detects at 640; a video whose long side is under 640 is detected at
    its native size by both 640 and 608, which would make the floor a trivial 100%, so it is
    detected at 95% of its long side instead (512 -> 486, 480 -> 456): the same 5% perturbation.
    """
    import cv2

    cap = cv2.VideoCapture(str(video))
    long = int(max(cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    return {"adaptive": False, "det_size": round(min(long, 640) * 608 / 640)}


# ------------------------------------------------------------------------------ measures
def entries(tracks: list[list[int]], faces: list, min_life: int = 3) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Reference tracks born after frame 0 that live >= ``min_life`` frames: id -> [(frame, box)]."""
    seen: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
    for f, (ids, fs) in enumerate(zip(tracks, faces)):
        for t, (box, _) in zip(ids, fs):
            seen[t].append((f, box))
    return {t: v for t, v in seen.items() if v[0][0] > 0 and len(v) >= min_life}


def entry_delays(ref_entries: dict, other: list) -> list[int | None]:
    """Frames from each entering face's first detectable frame to its first frame in ``other``."""
    out: list[int | None] = []
    for life in ref_entries.values():
        f0 = life[0][0]
        delay = None
        for f, box in life:
            if f < len(other) and other[f]:
                iou = iou_matrix(box[None], np.stack([b for b, _ in other[f]]))
                if iou.max() >= 0.3:
                    delay = f - f0
                    break
        out.append(delay)
    return out


def carried_iou(ref: list, other: list, detected: list[bool]) -> float | None:
    """Mean IoU, on the frames ``other`` did not detect, of its boxes with the reference's boxes."""
    vals = []
    for a, b, d in zip(ref, other, detected):
        if d or not a or not b:
            continue
        iou = iou_matrix(np.stack([x[0] for x in b]), np.stack([x[0] for x in a]))
        best = iou.max(axis=1)
        vals.extend(best[best > 0].tolist())  # a face the reference lacks there is not a motion error
    return round(float(np.mean(vals)), 4) if vals else None


def recall_vs_size(videos: list[Path], every: int = 15) -> dict:
    """RetinaFace recall by face size in detector-input pixels, against its own 640 px detections."""
    import cv2

    from edgefer.detect import FaceDetector

    d = FaceDetector(det_size=640, spin=False)
    sizes = [128, 160, 192, 224, 256, 320, 384, 448, 512]
    edges = [0, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96, 10**9]
    hit = np.zeros(len(edges) - 1)
    tot = np.zeros(len(edges) - 1)
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        i = 0
        while True:
            ok, f = cap.read()
            if not ok:
                break
            i += 1
            if i % every:
                continue
            ref = d(f)
            if not len(ref):
                continue
            long = max(f.shape[:2])
            side = np.maximum(ref.boxes[:, 2] - ref.boxes[:, 0], ref.boxes[:, 3] - ref.boxes[:, 1])
            for s in sizes:
                if s >= min(long, 640):
                    continue
                got = d(f, det_size=s)
                ok_ = iou_matrix(ref.boxes, got.boxes).max(axis=1) >= 0.4 if len(got) else np.zeros(len(ref), bool)
                b = np.digitize(side * s / long, edges) - 1
                np.add.at(tot, b, 1)
                np.add.at(hit, b, ok_)
        cap.release()
    rows = [{"px": f"{edges[i]}-{edges[i + 1] if edges[i + 1] < 10**9 else ''}", "faces": int(tot[i]),
             "recall_pct": round(100.0 * hit[i] / tot[i], 1)} for i in range(len(tot)) if tot[i]]
    return {"reference": "RetinaFace mnet0.25 at 640 px", "sizes": sizes, "every_nth_frame": every, "bins": rows}


# ---------------------------------------------------------------------------------- main
def summarise(name: str, r: dict, ref: list, faces: list, detected: list, ref_entries: dict | None) -> None:
    r["found_pct"], r["extra_pct"] = found(ref, faces)
    r["agreement_pct"] = agreement(ref, faces)
    r["carried_iou"] = carried_iou(ref, faces, detected)
    r["detected_pct"] = round(100.0 * sum(detected) / max(1, len(detected)), 1)
    if ref_entries is not None:
        d = entry_delays(ref_entries, faces)
        within = [x is not None and x <= 2 for x in d]
        r["entries"] = {"faces": len(d), "within_2_frames_pct": round(100.0 * sum(within) / len(d), 1) if d else None,
                        "max_delay": max((x for x in d if x is not None), default=None),
                        "never": sum(x is None for x in d)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="*", help="default: every video in the shared data")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--frames", type=int, default=None, help="first N frames of each video (default: all)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/adaptive_loop.json"))
    ap.add_argument("--plot", default=str(ROOT / "benchmarks/results/adaptive_loop.png"))
    ap.add_argument("--recall", action="store_true", help="also measure the detector's recall vs face size")
    ap.add_argument("--recall-only", action="store_true")
    ap.add_argument("--replot", metavar="JSON", help="only redraw --plot from a results JSON")
    args = ap.parse_args()
    if args.replot:
        out = json.loads(Path(args.replot).read_text())
        print_tables(out)
        plot(out, args.plot)
        return 0
    videos = [Path(v) for v in args.videos] or sorted((SHARED / "data/video").glob("*.mp4"))
    out: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "python": platform.python_version(), "time": time.strftime("%Y-%m-%d %H:%M")},
                 "frames": args.frames, "videos": {}}
    if args.recall or args.recall_only:
        out["recall_vs_size"] = rc = recall_vs_size(videos)
        print("RetinaFace mnet0.25 recall vs face size (detector-input px), against its 640 px detections:")
        for row in rc["bins"]:
            print(f"  {row['px']:>8s} px  {row['recall_pct']:5.1f}%  ({row['faces']} faces)")
        if args.recall_only:
            _write(out, args)
            return 0
    modes = [REFERENCE] + [m for m in args.modes if m != REFERENCE]
    for video in videos:
        c0 = time.process_time()
        ceiling, n = decode_only_fps(str(video), args.frames)
        dec_cpu = (time.process_time() - c0) * 1e3 / max(1, n)
        print(f"{video.name}: decode-only {ceiling:.1f} fps, {dec_cpu:.2f} CPU ms/frame ({n} frames)", flush=True)
        res: dict = {"decode_fps": round(ceiling, 1), "decode_cpu_ms_per_frame": round(dec_cpu, 3), "modes": {}}
        ref = ref_entries = stable = None
        for name in modes:
            tracks: list = []
            detected: list = []
            kw = noise_kw(video) if name == NOISE else dict(MODES[name])
            r = run_mode(str(video), kw, args.frames, tracks=tracks, detected=detected)
            faces = r.pop("_faces")
            if ref is None:
                ref, ref_entries = faces, entries(tracks, faces)
            if name == NOISE:
                stable = matches(ref, faces)
            summarise(name, r, ref, faces, detected, ref_entries)
            r["ratio"] = round(r["fps"] / ceiling, 3) if ceiling else None
            r["fps"] = round(r["fps"], 1)
            r["_faces"] = faces
            res["modes"][name] = r
            ad = r["adaptive"]
            extra = ""
            if ad.get("mode") != "every-frame":
                extra = (f"  det {r['detected_pct']:.0f}%  sizes {ad['detector_sizes']}  every {ad['cadence_every']['mean']}"
                         f"  reused {ad['classifications']['reused_pct']}%")
            e = r.get("entries") or {}
            print(f"  {name:18s} {r['fps']:7.1f} fps  {r['cpu_ms_per_frame']:6.2f} CPU ms/f  ratio {r['ratio']:.3f}  "
                  f"found {r['found_pct']:5.1f}%  extra {r['extra_pct']:4.1f}%  agree {r['agreement_pct']:5.1f}%  "
                  f"entry<=2f {e.get('within_2_frames_pct')}% (max {e.get('max_delay')}, never {e.get('never')})  "
                  f"carried IoU {r['carried_iou']}{extra}", flush=True)
        if stable is not None:
            n_all = sum(map(len, stable))
            res["stable_faces_pct"] = round(100.0 * sum(map(sum, stable)) / n_all, 2) if n_all else None
            for r in res["modes"].values():
                r["agreement_stable_pct"] = round(agreement(ref, r["_faces"], stable), 2)
        for r in res["modes"].values():
            r.pop("_faces")
            r["agreement_pct"] = round(r["agreement_pct"], 2)
            r["found_pct"], r["extra_pct"] = round(r["found_pct"], 2), round(r["extra_pct"], 2)
        out["videos"][video.name] = res
    print_tables(out)
    _write(out, args)
    return 0


def print_tables(out: dict) -> None:
    vids = out["videos"]
    if not vids:
        return
    print("\nThe default (adaptive) against the every-frame reference, per video:")
    print("| video | decode-only fps | every-frame fps, CPU ms/f | adaptive fps, CPU ms/f | ratio to decode | "
          "found | extra | agree | noise floor | entries within 2 frames |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, res in vids.items():
        m = res["modes"]
        ref, ad = m[REFERENCE], m.get("adaptive")
        if ad is None:
            continue
        noise = m.get(NOISE, {}).get("agreement_pct")
        e = ad.get("entries") or {}
        print(f"| {v.replace('.mp4', '')} | {res['decode_fps']} | {ref['fps']}, {ref['cpu_ms_per_frame']} | "
              f"{ad['fps']}, **{ad['cpu_ms_per_frame']}** | {ad['ratio']} | {ad['found_pct']}% | {ad['extra_pct']}% | "
              f"{ad['agreement_pct']}% | {noise}% | {e.get('within_2_frames_pct')}% of {e.get('faces')} |")
    levers = [m for m in MODES if m not in (REFERENCE, NOISE, "adaptive")]
    print("\nEach lever (CPU ms/frame, found %, agreement %), per video:")
    print("| video | " + " | ".join(levers) + " |")
    print("|---|" + "---|" * len(levers))
    for v, res in vids.items():
        cells = []
        for lv in levers:
            r = res["modes"].get(lv)
            cells.append("-" if r is None else f"{r['cpu_ms_per_frame']}, {r['found_pct']}, {r['agreement_pct']}"
                         + (f", IoU {r['carried_iou']}" if lv.startswith("every4") else ""))
        print(f"| {v.replace('.mp4', '')} | " + " | ".join(cells) + " |")


def _write(out: dict, args) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if args.plot and out["videos"]:
        plot(out, args.plot)


PLOT_MODES = ["every-frame", "adaptive", "no-cadence", "no-scale", "no-classify-skip", "motion=hold", "motion=velocity"]


def plot(out: dict, path: str) -> None:
    """CPU per frame of the default and the default less each lever; faces kept; agreement vs the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = list(out["videos"])
    names = [v.replace(".mp4", "") for v in videos]
    modes = [m for m in PLOT_MODES if all(m in out["videos"][v]["modes"] for v in videos)]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(18, 5), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    x = np.arange(len(videos))
    width = 0.85 / max(1, len(modes))
    for i, m in enumerate(modes):
        a1.bar(x + i * width, [out["videos"][v]["modes"][m]["cpu_ms_per_frame"] for v in videos], width, label=m)
    a1.plot(x + 0.425 - width / 2, [out["videos"][v]["decode_cpu_ms_per_frame"] for v in videos], "k_", ms=28, mew=2,
            label="decode only")
    a1.set_xticks(x + 0.425 - width / 2)
    a1.set_ylabel("process CPU ms per frame (all threads)")
    a1.set_title("CPU per frame: every-frame, the adaptive default, the default less one lever")
    a1.legend(fontsize=7, ncol=2)
    w2 = 0.4
    for ax, key, title in ((a2, "found_pct", "face-frames kept (target >= 98%)"),
                           (a3, "agreement_pct", "emotion agreement vs every-frame 640 px")):
        ad = [out["videos"][v]["modes"]["adaptive"][key] if "adaptive" in out["videos"][v]["modes"] else 0 for v in videos]
        fl = [out["videos"][v]["modes"][NOISE][key] if NOISE in out["videos"][v]["modes"] else 0 for v in videos]
        ax.bar(x - w2 / 2, fl, w2, label="noise floor (every frame at 95% size)", color="0.7")
        ax.bar(x + w2 / 2, ad, w2, label="adaptive (default)", color="tab:orange")
        ax.set_xticks(x)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower left")
    a2.axhline(98, color="k", lw=0.8, ls="--")
    a2.set_ylim(75, 101)
    a3.set_ylim(50, 101)
    for ax in (a1, a2, a3):
        ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
