"""Per-face latency of bundled classifiers against a reference, interleaved, on ONNX Runtime CPU.

`edgefer bench` times one model after another; on a shared or throttling machine the minutes
between two rows move a 0.3 ms latency by 20-40%, which is the size of the effect a "no more
than 2x the reference" budget is about. This script loads every model once, then times them in
rounds, each round every model in turn for the same short slice, and reports the median over
rounds of each model's median, and of the per-round ratio to the reference (so drift that hits
a round hits both sides of its ratio).

    python benchmarks/classifier_latency.py                           # edgenet, edgenet-fast vs mini-xception
    python benchmarks/classifier_latency.py --threads 0,1 --batch 1,32 --rounds 7 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from edgefer.artifact import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=["edgenet", "edgenet-fast"], help="bundled names or artifact folders")
    ap.add_argument("--ref", default="mini-xception", help="reference classifier (ratios are against it)")
    ap.add_argument("--threads", default="0,1", help="intra-op threads to try (0: ONNX Runtime's default)")
    ap.add_argument("--batch", default="1,32", help="batch sizes")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--slice", type=float, default=0.4, help="seconds per model per round")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)

    names = [a.ref, *[m for m in a.models if m != a.ref]]
    arts = {n: load(n, kind="classifier") for n in names}
    rng = np.random.default_rng(0)
    rows = []
    for threads in [int(t) for t in a.threads.split(",")]:
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        sessions = {n: ort.InferenceSession(str(art.model_path), so, providers=["CPUExecutionProvider"]) for n, art in arts.items()}
        for batch in [int(b) for b in a.batch.split(",")]:
            feeds = {}
            for n, art in arts.items():
                spec = art.manifest.input
                h, w = spec.size
                x = rng.integers(0, 256, (batch, h, w, spec.channels), dtype=np.uint8)
                feeds[n] = {sessions[n].get_inputs()[0].name: x}
                for _ in range(20):  # warm-up
                    sessions[n].run(None, feeds[n])
            per_round: dict[str, list[float]] = {n: [] for n in names}
            for r in range(a.rounds):
                for n in names:
                    ts = []
                    end = time.perf_counter() + a.slice
                    while time.perf_counter() < end or len(ts) < 10:
                        t0 = time.perf_counter()
                        sessions[n].run(None, feeds[n])
                        ts.append(time.perf_counter() - t0)
                    per_round[n].append(1e3 * float(np.median(ts)) / batch)
                # redrawn in place on a terminal; one line per round in a log (no carriage returns)
                tty = sys.stderr.isatty()
                print(f"threads {threads or 'default'} batch {batch} round {r + 1}/{a.rounds}", file=sys.stderr,
                      end="\r" if tty else "\n")
            if sys.stderr.isatty():
                print(file=sys.stderr)
            for n in names:
                ratios = [m / ref for m, ref in zip(per_round[n], per_round[a.ref])]
                rows.append({"model": n, "threads": threads, "batch": batch,
                             "ms_per_face": statistics.median(per_round[n]),
                             "ms_per_face_rounds": [round(v, 4) for v in per_round[n]],
                             "ratio_to_ref": statistics.median(ratios),
                             "ratio_min": min(ratios), "ratio_max": max(ratios)})
    print(f"{'model':<16}{'threads':>8}{'batch':>6}{'ms/face':>9}{'x ' + a.ref:>18}{'(min-max over rounds)':>24}")
    for r in rows:
        print(f"{r['model']:<16}{r['threads'] or 'default':>8}{r['batch']:>6}{r['ms_per_face']:>9.3f}{r['ratio_to_ref']:>17.2f}x"
              f"{r['ratio_min']:>15.2f}-{r['ratio_max']:.2f}")
    if a.json:
        from edgefer.bench import machine_info

        doc = {"schema": 1, "ref": a.ref, "rounds": a.rounds, "slice_s": a.slice, "onnxruntime": ort.__version__,
               "machine": machine_info(), "rows": rows}
        with open(a.json, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
