"""What ``--backend auto`` chooses here, and what the choice buys end to end.

Part 1, per stage: the bundled detector and classifier on ONNX Runtime and on OpenVINO, loaded
with the options the video loop gives them (spinning off), timed on the shapes ``auto`` probes
(detector: a 640x360 frame; classifier: batch 1 and batch 8), the two runtimes interleaved, for
``--rounds`` rounds; medians of the per-round medians, wall and process-CPU milliseconds.

Part 2, end to end: ``edgefer run VIDEO --no-display --summary S`` with each ``--backend`` (and
optional environment variants, ``TAG:BACKEND[:VAR=VALUE,...]``), the configurations interleaved
(A B C A B C ...) because the machine is shared: median fps and ``cpu_ms_per_frame``.

    python benchmarks/backend_auto.py --rounds 5 --runs 5 --json backend_auto.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "video" / "webcam_720p.mp4"


def per_stage(rounds: int, budget_s: float, threads: int | None) -> dict:
    from edgefer.artifact import load
    from edgefer.backends import open_backend
    from edgefer.backends.autoselect import measure, probe_inputs

    out: dict = {}
    for name, kind in (("retinaface-mnet025", "detector"), ("edgenet", "classifier")):
        art = load(name, kind=kind)
        opts = {"spin": False, **({"threads": threads} if threads else {})}
        bs = {b: open_backend(art, b, **opts) for b in ("onnxruntime", "openvino")}
        probes = probe_inputs(art)
        wall: dict = {b: {lb: [] for lb, _ in probes} for b in bs}
        cpu: dict = {b: {lb: [] for lb, _ in probes} for b in bs}
        for r in range(rounds):
            order = dict(bs) if r % 2 == 0 else dict(reversed(list(bs.items())))
            res = measure(order, probes, budget_s)
            for b in bs:
                for lb, _ in probes:
                    wall[b][lb].append(res["wall"][b][lb])
                    cpu[b][lb].append(res["cpu"][b][lb])
        out[name] = {
            lb: {b: {"wall_ms": round(statistics.median(wall[b][lb]), 3), "cpu_ms": round(statistics.median(cpu[b][lb]), 3),
                     "wall_ms_rounds": [round(v, 3) for v in wall[b][lb]]} for b in bs}
            for lb, _ in probes
        }
        for lb, _ in probes:
            row = out[name][lb]
            print(f"{name:20s} {lb:14s} " + "  ".join(f"{b} {row[b]['wall_ms']:8.3f} ms wall {row[b]['cpu_ms']:8.3f} ms cpu" for b in bs),
                  flush=True)
    return out


def end_to_end(video: Path, configs: list[str], runs: int, extra: list[str]) -> dict:
    parsed = []
    for c in configs:
        parts = c.split(":")
        tag, backend = parts[0], parts[1] if len(parts) > 1 else parts[0]
        env = dict(kv.split("=", 1) for kv in parts[2].split(",")) if len(parts) > 2 and parts[2] else {}
        parsed.append((tag, backend, env))
    res: dict = {tag: {"fps": [], "cpu_ms_per_frame": [], "backends": None} for tag, _, _ in parsed}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for tag, backend, env in parsed:
                s = Path(tmp) / f"{tag}-{i}.json"
                cmd = [sys.executable, "-m", "edgefer", "-q", "run", str(video), "--no-display", "--summary", str(s),
                       "--backend", backend, *extra]
                t0 = time.perf_counter()
                p = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, cwd=tmp)
                wall = time.perf_counter() - t0
                if p.returncode != 0:
                    print(f"{tag}: exit {p.returncode}: {p.stderr.strip()[-300:]}", flush=True)
                    continue
                d = json.loads(s.read_text())
                res[tag]["fps"].append(d["fps"])
                res[tag]["cpu_ms_per_frame"].append(d["cpu_ms_per_frame"])
                res[tag]["backends"] = {k: d[k]["backend"] for k in ("detector", "classifier")}
                res[tag].setdefault("auto", {k: d[k].get("auto", {}).get("chosen") for k in ("detector", "classifier")})
                res[tag].setdefault("process_s", []).append(round(wall, 2))
                print(f"run {i} {tag:12s} fps {d['fps']:7.2f}  cpu {d['cpu_ms_per_frame']:7.3f} ms/frame  "
                      f"process {wall:5.2f} s  ({res[tag]['backends']['detector']}, {res[tag]['backends']['classifier']})", flush=True)
    for tag, r in res.items():
        if r["fps"]:
            r["fps_median"] = round(statistics.median(r["fps"]), 2)
            r["cpu_ms_per_frame_median"] = round(statistics.median(r["cpu_ms_per_frame"]), 3)
            r["process_s_median"] = round(statistics.median(r["process_s"]), 2)
            print(f"median {tag:12s} fps {r['fps_median']:7.2f}  cpu {r['cpu_ms_per_frame_median']:7.3f} ms/frame  "
                  f"process {r['process_s_median']:5.2f} s  over {len(r['fps'])} runs", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="per-stage measurement rounds")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per candidate per round")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--runs", type=int, default=5, help="end-to-end runs per configuration (interleaved)")
    ap.add_argument("--configs", nargs="*", default=["ort:onnxruntime", "auto:auto", "ov:openvino"],
                    help="TAG:BACKEND[:VAR=VALUE,...]")
    ap.add_argument("--skip-stage", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("extra", nargs="*", help="further `edgefer run` arguments (after --)")
    a = ap.parse_args()
    from edgefer.backends.autoselect import cpu_identity, runtime_version

    report: dict = {"machine": cpu_identity(), "versions": {b: runtime_version(b) for b in ("onnxruntime", "openvino")},
                    "load_average": os.getloadavg()}
    if not a.skip_stage:
        report["per_stage"] = per_stage(a.rounds, a.budget, a.threads or None)
    if not a.skip_e2e:
        report["end_to_end"] = end_to_end(a.video, a.configs, a.runs, a.extra)
    report["load_average_end"] = os.getloadavg()
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
