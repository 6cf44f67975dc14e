"""The bench: speed and accuracy of one classifier on every backend x precision, side by side.

Rows are (target, precision) pairs: ``onnx`` runs on ONNX Runtime, ``openvino`` on OpenVINO,
``trt`` on TensorRT, ``coreml`` on Core ML. The bench exports what it needs with
``edgefer.export`` (into ``--workdir``, a temporary folder by default) or takes artifacts the
user already built (``--artifact``, repeatable; an ensemble manifest is one more row).

Per row: status and reason, artifact size, load/compile seconds, latency p50/p90/p99 per batch
size (warm-up first, then at least ``min_runs`` runs and ``min_seconds`` of them, split over
``repeats`` rounds), throughput,
and with ``--data``: top-1, top-2, macro-F1, the drop against the FP32 reference (FP32 minus the
row, in points: positive means worse), per-class recall drop and the worst class, agreement
with the FP32 predictions and their mean KL divergence. With ``--video``: the end-to-end fps and
p99 frame latency of the full detect -> classify loop with this row's classifier, the
decode-only fps of the same frames and their ratio. Peak resident memory per row (Linux: the
high-water mark is reset before each row).

Timing is repeated (``repeats`` rounds, 3 by default) and the rounds are *interleaved across
rows*: every row is timed once as it is measured, then every row again, round after round, with
the classifiers kept loaded. On a shared machine one row's latency moved up to 60% between runs
of the bench; timed minutes apart, two rows differ by the machine's mood as much as by their
backends. Interleaving puts every row through the same moods, and the spread of a row's per-round
medians (p10-p90 over the rounds, ``latency_ms.bN.spread``) says how far its number can be
trusted; a note warns when p90/p10 exceeds ``SPREAD_WARN``.

Labels are matched to the model's classes by name (:func:`edgefer.classes.canonical`), so a
4-class EmoTorch model is scored on FER2013 data over the classes both share, and the output
says which. The JSON schema is versioned (``SCHEMA``) and documented in benchmarks/README.md.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifact import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, load
from .backends import available
from .classes import canonical
from .errors import EdgeferError
from .extras import install_hint

log = logging.getLogger(__name__)

SCHEMA = 1  # additive changes keep the number (fields only added, none removed or retyped)
#: p90/p10 of a row's per-round medians above which the bench warns that its latency is noisy
SPREAD_WARN = 1.2
TARGETS = ("onnx", "openvino", "trt", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino", "trt": "tensorrt", "coreml": "coreml"}
STATUSES = ("ok", "export-failed", "run-failed", "unavailable", "skipped")


@dataclass
class BenchConfig:
    model: str = DEFAULT_CLASSIFIER
    detector: str = DEFAULT_DETECTOR
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    artifacts: list[str] = field(default_factory=list)
    data: str | None = None
    data_usage: str | None = "PublicTest"
    data_size: int | None = None
    calib: str | None = None
    calib_size: int = 300
    calib_method: str = "minmax"
    arch: str | None = None
    video: str | None = None
    video_frames: int | None = 300
    explain: bool = False  # --video rows run the loop with CAM heatmaps and report their cost
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: int | None = None
    warmup: int = 10
    min_runs: int = 50  # per batch size, over all repeats
    min_seconds: float = 1.0  # per batch size, over all repeats
    max_seconds: float = 5.0
    repeats: int = 3  # timing rounds per batch size, interleaved across rows (spread = p10-p90 of their medians)
    workdir: str | None = None
    progress: bool = True


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64", "aarch64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith(("flags", "Features")) and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5).stdout.strip() or cpu
        except Exception:  # noqa: BLE001 - best effort
            pass
    versions: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    from importlib import metadata

    for key, dists in (("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")),
                       ("openvino", ("openvino",)), ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
                       ("coremltools", ("coremltools",)),
                       ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
                       ("torch", ("torch",))):
        for d in dists:  # read from package metadata: importing coremltools on Linux prints warnings
            try:
                versions[key] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                continue
    if "tensorrt" not in versions:  # JetPack installs TensorRT's Python bindings without pip metadata
        try:
            import tensorrt  # type: ignore

            versions["tensorrt"] = tensorrt.__version__
        except Exception:  # noqa: BLE001
            pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
                       "asimddp", "i8mm", "bf16") if f in flags]
    return {
        "cpu": cpu, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(), "isa": isa, "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ----------------------------------------------------------------------------- memory
def _reset_peak() -> bool:
    """Reset the process's resident high-water mark (Linux), so each row reads its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(r / (1024 * 1024) if sys.platform == "darwin" else r / 1024, 1)
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------- data + metrics
@dataclass
class Scoring:
    """Labels matched to a model's classes by name."""

    images: Any
    labels: np.ndarray  # indices into data_classes
    data_classes: list[str]
    source: str

    def for_model(self, classes: list[str]) -> dict[str, Any]:
        """Indices of the scored samples, their labels as model-class indices, and the shared classes."""
        mc = [canonical(c) for c in classes]
        dc = [canonical(c) for c in self.data_classes]
        shared = [c for c in mc if c in dc]
        if not shared:
            raise EdgeferError(
                f"the data's classes ({', '.join(self.data_classes)}) share none with the model's ({', '.join(classes)})"
            )
        to_model = np.array([mc.index(c) if c in mc else -1 for c in dc])
        mapped = to_model[self.labels]
        keep = np.flatnonzero(mapped >= 0)
        return {
            "keep": keep, "y": mapped[keep], "shared": [classes[mc.index(c)] for c in shared],
            "mask": np.array([c in dc for c in mc]), "partial": len(shared) < len(mc) or len(shared) < len(dc),
            "dropped_classes": [self.data_classes[i] for i, c in enumerate(dc) if c not in mc],
            "unscored_classes": [classes[i] for i, c in enumerate(mc) if c not in dc],
        }


def load_scoring(path: str, usage: str | None, size: int | None, seed: int = 0) -> Scoring:
    """Labeled faces for accuracy, read and validated by :mod:`edgefer.datasets` (labels are
    indices inside the data's classes, so none is scored as another class by negative indexing)."""
    from .datasets import open_labeled

    if size is not None and size < 1:
        raise EdgeferError(f"--data-size must be at least 1, not {size}")
    t = open_labeled(path, usage=usage)
    idx = np.arange(len(t))
    if size is not None and size < len(t):
        idx = np.sort(np.random.default_rng(seed).choice(len(t), size, replace=False))
    images = t.fetch(idx)
    return Scoring(images, np.asarray(t.labels)[idx], list(t.classes),
                   f"{path}" + (f" [{usage}]" if t.kind == "fer2013-csv" else ""))


def accuracy(probs: np.ndarray, sc: dict[str, Any]) -> dict[str, Any]:
    """top-1/top-2/macro-F1/per-class recall over the shared classes (others masked out)."""
    p = probs[sc["keep"]].copy()
    p[:, ~sc["mask"]] = -np.inf
    y = sc["y"]
    order = np.argsort(-p, axis=1)
    pred = order[:, 0]
    top1 = float((pred == y).mean() * 100) if len(y) else float("nan")
    top2 = float((order[:, :2] == y[:, None]).any(1).mean() * 100) if len(y) else float("nan")
    recall, f1s = {}, []
    k = probs.shape[1]
    for c in range(k):
        if not sc["mask"][c]:
            continue
        tp = int(((pred == c) & (y == c)).sum())
        support = int((y == c).sum())
        predicted = int((pred == c).sum())
        r = tp / support if support else float("nan")
        prec = tp / predicted if predicted else 0.0
        f1s.append(2 * prec * r / (prec + r) if support and (prec + r) > 0 else 0.0)
        recall[c] = r * 100
    return {"top1": top1, "top2": top2, "macro_f1": float(np.mean(f1s) * 100) if f1s else float("nan"),
            "recall": recall, "pred": pred}


def kl_div(p_ref: np.ndarray, p: np.ndarray) -> float:
    eps = 1e-7
    a = np.clip(p_ref, eps, 1.0)
    b = np.clip(p, eps, 1.0)
    return float(np.mean(np.sum(a * (np.log(a) - np.log(b)), axis=1)))


# ----------------------------------------------------------------------------- timing
def _inputs(faces: np.ndarray, batches: list[int]) -> dict[int, np.ndarray]:
    """One contiguous input per batch size, cycling through ``faces``."""
    out = {}
    for b in batches:
        reps = int(np.ceil(b / len(faces)))
        out[b] = np.ascontiguousarray(np.concatenate([faces] * reps)[:b])
    return out


def time_round(run: Callable[[np.ndarray], Any], inputs: dict[int, np.ndarray], cfg: BenchConfig,
               warmup: int) -> dict[int, list[float]]:
    """One timing round: per batch size ``warmup`` untimed runs, then runs until this round's
    share of ``min_runs`` and ``min_seconds`` is reached (or its share of ``max_seconds``)."""
    r = max(1, int(cfg.repeats))
    min_runs = max(1, int(np.ceil(cfg.min_runs / r)))
    min_s, max_s = cfg.min_seconds / r, max(cfg.max_seconds / r, cfg.min_seconds / r)
    out: dict[int, list[float]] = {}
    for b, x in inputs.items():
        for _ in range(warmup):
            run(x)
        ms: list[float] = []
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            run(x)
            ms.append((time.perf_counter() - t0) * 1e3)
            spent = time.perf_counter() - t_start
            if (len(ms) >= min_runs and spent >= min_s) or spent >= max_s:
                break
        out[b] = ms
    return out


def latency_summary(rounds: list[list[float]]) -> dict[str, Any]:
    """Latency of one batch size from its timing rounds: percentiles over every run pooled, and
    the spread of the rounds' medians (p10 and p90 over rounds, and their ratio)."""
    a = np.concatenate([np.asarray(r, np.float64) for r in rounds])
    meds = [float(np.median(r)) for r in rounds]
    p10, p90 = float(np.percentile(meds, 10)), float(np.percentile(meds, 90))
    return {
        "p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
        "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4), "runs": int(len(a)),
        "repeats": len(rounds), "p50_repeats": [round(m, 4) for m in meds],
        "spread": {"p10": round(p10, 4), "p90": round(p90, 4), "ratio": round(p90 / p10, 4) if p10 > 0 else None},
    }


def time_batches(run: Callable[[np.ndarray], Any], faces: np.ndarray, batches: list[int], cfg: BenchConfig) -> dict:
    """Every round of one classifier back to back (the bench itself interleaves rounds across rows)."""
    inputs = _inputs(faces, batches)
    rounds: dict[int, list[list[float]]] = {b: [] for b in batches}
    for i in range(max(1, int(cfg.repeats))):
        for b, ms in time_round(run, inputs, cfg, cfg.warmup if i == 0 else REWARM).items():
            rounds[b].append(ms)
    return {f"b{b}": latency_summary(v) for b, v in rounds.items()}


#: untimed runs before each later round (caches went cold while other rows ran)
REWARM = 3


def spread_ratio(row: dict[str, Any]) -> float | None:
    """The widest p90/p10 of a row's per-round medians over its batch sizes (None: one round)."""
    ratios = [v["spread"]["ratio"] for v in (row.get("latency_ms") or {}).values()
              if isinstance(v.get("spread"), dict) and v["spread"].get("ratio") and v.get("repeats", 1) > 1]
    return max(ratios) if ratios else None


# ----------------------------------------------------------------------------- rows
def _row(target: str, precision: str, status: str, reason: str = "", **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "target": target, "precision": precision, "status": status, "reason": reason or None,
        "backend": BACKEND_OF.get(target, target), "artifact": None, "size_mb": None, "load_s": None,
        "latency_ms": {}, "throughput": None, "top1": None, "top2": None, "macro_f1": None, "top1_drop": None,
        "per_class_drop": {}, "worst_class": None, "agreement": None, "kl": None,
        "e2e_fps": None, "e2e_p99_ms": None, "decode_fps": None, "e2e_ratio": None, "cpu_ms_per_frame": None,
        "explain_ms": None,
        "explain_pct": None, "peak_mb": None,
        "executes": None, "threads": None,
    }
    row.update(kw)
    return row


def artifact_size_mb(art) -> float:
    total = 0
    for rel in art.manifest.files.values():
        for r in rel if isinstance(rel, list) else [rel]:
            p = art.root / r
            if p.is_file():
                total += p.stat().st_size
            elif p.is_dir():  # Core ML packages are folders
                total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return round(total / 1e6, 3)


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


class Bench:
    def __init__(self, cfg: BenchConfig, say: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.say = say or (lambda m: None)
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.scoring: Scoring | None = None
        self._ref_probs: np.ndarray | None = None
        self._ref_acc: dict[str, Any] | None = None
        self._decode: tuple[float, int] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -------------------------------------------------------------- plan
    def plan(self) -> list[tuple[str, str, str | None]]:
        """(target, precision, artifact path or None = export) for every row, FP32 first per target."""
        rows: list[tuple[str, str, str | None]] = []
        for t in self.cfg.targets:
            for p in sorted(self.cfg.precisions, key=PRECISIONS.index):
                rows.append((t, p, None))
        for a in self.cfg.artifacts:
            m = load(a).manifest
            rows.append(("ensemble" if m.kind == "ensemble" else m.target, m.precision, a))
        return rows

    def workdir(self) -> Path:
        if self.cfg.workdir:
            p = Path(self.cfg.workdir)
            p.mkdir(parents=True, exist_ok=True)
            return p
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgefer-bench-")
        return Path(self._tmp.name)

    def _base_artifact(self):
        """The model as an artifact when it already is one (bundled name or artifact folder)."""
        try:
            return load(self.cfg.model, kind="classifier")
        except EdgeferError:
            return None

    def obtain(self, target: str, precision: str) -> tuple[str | None, dict[str, Any] | None]:
        """An artifact for (target, precision): reuse the model when it already is one, else export."""
        base = self._base_artifact()
        if base is not None and base.manifest.target == target and base.manifest.precision == precision:
            return str(base.manifest_path or base.root), None
        if precision == "int8" and not self.cfg.calib:
            return None, _row(target, precision, "skipped",
                              "INT8 needs calibration faces: pass --calib (FER2013 csv, class folders, .npz, video)")
        try:
            from .export.api import export_model  # noqa: F401 - build-side: onnx, onnxruntime.quantization
        except ImportError as e:
            return None, _row(target, precision, "export-failed", f"exporting needs {e.name or e}: {install_hint('export')}")
        from .export.api import export_model

        out = self.workdir() / f"{Path(str(self.cfg.model)).stem}-{target}-{precision}"
        kw: dict[str, Any] = {"output": out, "progress": False, "arch": self.cfg.arch}
        if precision == "int8":
            kw.update(calib=self.cfg.calib, calib_size=self.cfg.calib_size, calib_method=self.cfg.calib_method)
        if target == "trt":
            kw["build_engine"] = True
        try:
            res = export_model(self.cfg.model, target, precision, **kw)
        except EdgeferError as e:
            return None, _row(target, precision, "export-failed", _one_line(e))
        except ImportError as e:  # a build-side package missing on a runtime-only install
            return None, _row(target, precision, "export-failed",
                              f"exporting needs {e.name or e}: {install_hint('export')}")
        except Exception as e:  # noqa: BLE001 - a row, not a crash
            log.debug("export failed", exc_info=True)
            return None, _row(target, precision, "export-failed", f"{type(e).__name__}: {_one_line(e)}")
        return str(res.path), None

    # -------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        for b in cfg.batches:
            if b < 1:
                raise EdgeferError("--batch sizes must be >= 1")
        if cfg.data:
            self.say(f"reading {cfg.data} ...")
            self.scoring = load_scoring(cfg.data, cfg.data_usage, cfg.data_size)
            self.say(f"  {len(self.scoring.labels)} labeled faces, classes {', '.join(self.scoring.data_classes)}")
        else:
            self.notes.append("accuracy needs labeled data: pass --data (FER2013 csv, class folders or .npz)")
        if cfg.video:
            from .sources import decode_only_fps

            self._decode = decode_only_fps(cfg.video, cfg.video_frames)
            self.say(f"decode-only: {self._decode[0]:.1f} fps over {self._decode[1]} frames of {cfg.video}")
        plan = self.plan()
        from .progress import progress

        bar = progress(plan, desc="bench", unit="row", disable=not cfg.progress, leave=False, every_s=0)
        for target, precision, given in bar:
            label = f"{target}/{precision}" + (f" ({Path(given).name})" if given else "")
            bar.set_postfix_str(label)
            backend = "auto" if target == "ensemble" else BACKEND_OF.get(target)
            if backend is None:
                self.rows.append(_row(target, precision, "unavailable", f"no backend runs {target} artifacts"))
                continue
            ok, why = available(backend) if backend != "auto" else (True, "")
            if not ok:
                self.rows.append(_row(target, precision, "unavailable", why))
                continue
            path = given
            if path is None:
                path, failed = self.obtain(target, precision)
                if failed is not None:
                    self.rows.append(failed)
                    continue
            row = self.measure(target, precision, path)
            row["label"] = label if given else None
            self.rows.append(row)
            if cfg.progress:
                bar.write(self.row_line(row) + (f" (timing round 1 of {cfg.repeats})"
                                                if cfg.repeats > 1 and row["status"] == "ok" else ""))
        bar.close()
        self.more_rounds()
        self.compare()
        return self.result()

    # -------------------------------------------------------------- repeated timing
    @staticmethod
    def _summarise_latency(row: dict[str, Any]) -> None:
        row["latency_ms"] = {f"b{b}": latency_summary(v) for b, v in row["_rounds"].items()}
        row["throughput"] = round(max(int(k[1:]) * 1e3 / v["mean"] for k, v in row["latency_ms"].items()), 1)

    def more_rounds(self) -> None:
        """Timing rounds 2..repeats, each over every row that ran (round-robin), then each row's
        latency from all its rounds and a note where the rounds disagree. Each round loads the
        row's classifier again (cached engines and compiled models make that cheap) rather than
        keeping every row loaded, so a row's peak memory stays its own."""
        cfg = self.cfg
        live = [r for r in self.rows if r.get("_live") is not None and r["status"] == "ok"]
        for r in self.rows:  # a row that failed after its first round keeps that round only
            if r["status"] != "ok":
                r.pop("_live", None)
        if cfg.repeats > 1 and live:
            self.say(f"timing rounds 2-{cfg.repeats} over {len(live)} row(s), interleaved ...")
        for _ in range(1, max(1, int(cfg.repeats))):
            for r in live:
                if r.get("_live") is None:
                    continue
                path, target = r["_live"]
                try:
                    clf = self._open(path, target)
                    inputs = _inputs(self._faces(clf.spec), cfg.batches)
                    for b, ms in time_round(clf.predict, inputs, cfg, cfg.warmup).items():
                        r["_rounds"][b].append(ms)
                    del clf
                except Exception as e:  # noqa: BLE001 - keep the rounds it has
                    r["_live"] = None
                    self.notes.append(f"{r['target']}/{r['precision']}: a later timing round failed "
                                      f"({_one_line(e)}); latency from the rounds before it")
        noisy = []
        for r in self.rows:
            r.pop("_live", None)
            if r["status"] != "ok" or not r.get("_rounds"):
                continue
            self._summarise_latency(r)
            wide = {b: v for b, v in r["latency_ms"].items()
                    if v["repeats"] > 1 and v["spread"]["ratio"] and v["spread"]["ratio"] > SPREAD_WARN}
            if wide:
                name = r["target"] + (f"[{Path(r['artifact']).name}]" if r.get("label") else "") + f"/{r['precision']}"
                noisy.append(name + ": " + ", ".join(
                    f"{b} {v['spread']['ratio']:.2f}x ({v['spread']['p10']:.3f}-{v['spread']['p90']:.3f} ms)"
                    for b, v in wide.items()))
        if noisy:
            self.notes.append(
                f"latency moved more than {SPREAD_WARN:g}x between timing rounds (p90/p10 of the rounds' medians over "
                f"{cfg.repeats} rounds) for " + "; ".join(noisy) + ". The machine was busy: compare these rows with "
                "care, or rerun on an idle machine / with more --repeats")

    def _faces(self, spec) -> np.ndarray:
        from .align import resize_faces

        if self.scoring is not None:
            n = min(64, len(self.scoring.labels))
            return resize_faces(self.scoring.images[:n], spec)
        rng = np.random.default_rng(0)  # latency does not depend on pixel values; accuracy is not measured
        return rng.integers(0, 256, (64, *spec.size, spec.channels), dtype=np.uint8)

    def _open(self, path: str, target: str):
        from .classify import EmotionClassifier

        opts: dict[str, Any] = {"threads": self.cfg.threads} if self.cfg.threads else {}
        return EmotionClassifier(path, backend=BACKEND_OF.get(target, "auto"), **opts)

    def measure(self, target: str, precision: str, path: str) -> dict[str, Any]:
        cfg = self.cfg
        row = _row(target, precision, "ok", artifact=path)
        _reset_peak()
        try:
            t0 = time.perf_counter()
            clf = self._open(path, target)
            row["load_s"] = round(time.perf_counter() - t0, 3)
            members = getattr(clf, "members", None)
            if members:  # an ensemble: what it deploys is its members
                row["size_mb"] = round(sum(artifact_size_mb(m.backend.artifact) for m in members), 3)
                row["members"] = [m.backend.artifact.describe() for m in members]
            else:
                row["size_mb"] = artifact_size_mb(clf.backend.artifact)
            info = clf.backend.info() if hasattr(clf.backend, "info") else {}
            row["executes"] = info.get("executes") or info.get("precision")
            threads = info.get("threads") if isinstance(info.get("threads"), int) else None
            row["threads"] = cfg.threads or threads or int(os.environ.get("EDGEFER_THREADS", "0") or 0) or None
            row["classes"] = list(clf.classes)
            faces = self._faces(clf.spec)
            inputs = _inputs(faces, cfg.batches)
            # round 1 now; the other rounds run after every row, interleaved (see the module doc)
            row["_rounds"] = {b: [ms] for b, ms in time_round(clf.predict, inputs, cfg, cfg.warmup).items()}
            row["_live"] = (path, target)
            self._summarise_latency(row)
            if self.scoring is not None:
                probs = clf.predict_images(self.scoring.images)
                sc = self.scoring.for_model(clf.classes)
                acc = accuracy(probs, sc)
                row.update(top1=round(acc["top1"], 3), top2=round(acc["top2"], 3), macro_f1=round(acc["macro_f1"], 3))
                row["recall"] = {clf.classes[c]: round(v, 3) for c, v in acc["recall"].items()}
                row["scored_on"] = {"faces": int(len(sc["y"])), "classes": sc["shared"],
                                    "dropped_data_classes": sc["dropped_classes"],
                                    "unscored_model_classes": sc["unscored_classes"]}
                if sc["partial"]:
                    note = (f"{target}/{precision}: scored on the shared classes {', '.join(sc['shared'])}"
                            + (f" (data classes {', '.join(sc['dropped_classes'])} left out)" if sc["dropped_classes"] else "")
                            + (f" (model classes {', '.join(sc['unscored_classes'])} masked)" if sc["unscored_classes"] else ""))
                    if note not in self.notes:
                        self.notes.append(note)
                row["_probs"] = probs
            if cfg.video:
                self.video_row(row, path, target)
        except EdgeferError as e:
            row.update(status="run-failed", reason=_one_line(e))
        except Exception as e:  # noqa: BLE001 - one row fails, the bench goes on
            log.debug("row failed", exc_info=True)
            row.update(status="run-failed", reason=f"{type(e).__name__}: {_one_line(e)}")
        row["peak_mb"] = peak_mb()
        return row

    def video_row(self, row: dict[str, Any], path: str, target: str) -> None:
        from .pipeline import Pipeline

        cfg = self.cfg
        opts: dict[str, Any] = {"threads": cfg.threads} if cfg.threads else {}
        explain = cfg.explain and target != "ensemble"  # heatmaps come from single classifiers
        backend = "onnxruntime" if target == "onnx" else "auto"
        try:
            pipe = Pipeline(detector=cfg.detector, classifier=path, backend=backend, explain=explain, **opts)
        except EdgeferError as e:
            if not explain:
                raise
            # no CAM output in this artifact: time the loop without heatmaps and say why
            row["explain_skipped"] = _one_line(e)[:200]
            explain = False
            pipe = Pipeline(detector=cfg.detector, classifier=path, backend=backend, **opts)
        drawn: list[float] = []
        for r in pipe.run(cfg.video, max_frames=cfg.video_frames):
            if explain:  # the overlay is part of what --explain costs, as in `edgefer run`
                from .explain import draw_heatmaps

                t0 = time.perf_counter()
                draw_heatmaps(r.image, r)
                drawn.append((time.perf_counter() - t0) * 1e3)
        st = pipe.stats
        st.finish()
        p = st.percentiles()
        row["e2e_fps"] = round(st.fps(), 2)
        cpu = st.cpu_ms_per_frame()
        row["cpu_ms_per_frame"] = None if cpu is None else round(cpu, 3)  # process CPU (all threads) / frames
        row["e2e_p99_ms"] = round(p.get("total", {}).get("p99", float("nan")), 2)
        row["e2e_p50_ms"] = round(p.get("total", {}).get("p50", float("nan")), 2)
        row["stage_p50_ms"] = {k: round(v["p50"], 3) for k, v in p.items()}
        if explain:
            cost = p.get("explain", {}).get("mean", 0.0) + (float(np.mean(drawn)) if drawn else 0.0)
            frame_ms = 1e3 / st.fps() if st.fps() else float("nan")
            row["explain_ms"] = round(cost, 3)  # maps picked and placed + drawn, per frame
            row["explain_pct"] = round(100 * cost / frame_ms, 2) if frame_ms == frame_ms else None
        row["video_frames"] = st.frames
        row["video_faces"] = st.faces
        if self._decode:
            row["decode_fps"] = round(self._decode[0], 1)
            row["e2e_ratio"] = round(row["e2e_fps"] / self._decode[0], 4) if self._decode[0] else None

    # -------------------------------------------------------------- compare to FP32
    def reference(self) -> dict[str, Any] | None:
        ok = [r for r in self.rows if r["status"] == "ok" and r["precision"] == "fp32" and "_probs" in r]
        onnx = [r for r in ok if r["target"] == "onnx" and not r.get("label")]
        return (onnx or ok or [None])[0]

    def compare(self) -> None:
        ref_default = self.reference()
        for r in self.rows:
            if r["status"] != "ok" or "_probs" not in r:
                continue
            same_target = [x for x in self.rows if x["status"] == "ok" and x["precision"] == "fp32" and "_probs" in x
                           and x["target"] == r["target"] and not x.get("label")]
            ref = same_target[0] if same_target and not r.get("label") else ref_default
            if ref is None or ref.get("classes") != r.get("classes"):
                continue
            r["reference"] = f"{ref['target']}/fp32"
            r["top1_drop"] = round(ref["top1"] - r["top1"], 3)
            drops = {c: round(ref["recall"][c] - v, 3) for c, v in r["recall"].items()
                     if c in ref["recall"] and not np.isnan(v) and not np.isnan(ref["recall"][c])}
            r["per_class_drop"] = drops
            if drops and max(drops.values()) > 0:
                r["worst_class"] = max(drops, key=drops.get)
            pr, pp = ref["_probs"], r["_probs"]
            r["agreement"] = round(float((pr.argmax(1) == pp.argmax(1)).mean() * 100), 3)
            r["kl"] = round(kl_div(pr, pp), 6)

    # -------------------------------------------------------------- outputs
    def result(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            rows.append({k: v for k, v in r.items() if not k.startswith("_")})
        cfg = self.cfg
        model: dict[str, Any] = {"ref": str(cfg.model), "detector": str(cfg.detector)}
        base = self._base_artifact()
        if base is not None:
            m = base.manifest
            model.update(name=m.name, arch=m.arch, classes=m.classes, input=asdict(m.input))
        settings = {"batches": cfg.batches, "threads": cfg.threads, "warmup": cfg.warmup, "min_runs": cfg.min_runs,
                    "min_seconds": cfg.min_seconds, "repeats": cfg.repeats, "spread_warn": SPREAD_WARN, "data": cfg.data, "data_usage": cfg.data_usage,
                    "data_size": cfg.data_size, "calib": cfg.calib, "calib_size": cfg.calib_size,
                    "calib_method": cfg.calib_method, "video": cfg.video, "video_frames": cfg.video_frames}
        return {"schema": SCHEMA, "machine": machine_info(), "model": model, "settings": settings,
                "notes": self.notes, "rows": rows}

    @staticmethod
    def row_line(r: dict[str, Any]) -> str:
        if r["status"] != "ok":
            return f"{r['target']}/{r['precision']}: {r['status']} ({r['reason']})"
        lat = ", ".join(f"{k} p50 {v['p50']:.3f} ms" for k, v in r["latency_ms"].items())
        acc = f", top-1 {r['top1']:.2f}%" if r.get("top1") is not None else ""
        vid = f", e2e {r['e2e_fps']:.1f} fps" if r.get("e2e_fps") is not None else ""
        return f"{r['target']}/{r['precision']}: {lat}{acc}{vid}"

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ----------------------------------------------------------------------------- renderers
def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    batches = [f"b{b}" for b in result["settings"]["batches"]]
    head = ["target", "prec", "status", "MB", "load s"] + [f"{b} p50 ms" for b in batches] + [f"{batches[0]} p99", "spread", "faces/s",
                                                                                           "top1", "drop", "agree", "worst class", "e2e fps", "ratio", "CPU ms/f", "peak MB"]
    lines = [head]
    for r in rows:
        name = r["target"] + (f"[{Path(r['artifact']).name}]" if r.get("label") else "")
        lat = r.get("latency_ms") or {}
        worst = None
        if r.get("worst_class"):
            worst = f"{r['worst_class']} {r['per_class_drop'][r['worst_class']]:+.1f}"
        lines.append([
            name, r["precision"], r["status"], _fmt(r["size_mb"], 2), _fmt(r["load_s"], 2),
            *[_fmt(lat.get(b, {}).get("p50"), 3) for b in batches], _fmt(lat.get(batches[0], {}).get("p99"), 3),
            _fmt_spread(r), _fmt(r["throughput"], 0), _fmt(r["top1"], 2), _fmt(r["top1_drop"], 2), _fmt(r["agreement"], 1), worst or "-",
            _fmt(r["e2e_fps"], 1), _fmt(r["e2e_ratio"], 3), _fmt(r.get("cpu_ms_per_frame"), 2), _fmt(r["peak_mb"], 0),
        ])
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(head))]
    out = ["  ".join(str(c).rjust(w) if i > 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(l, widths))) for l in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['target']}/{r['precision']} {r['status']}: {r['reason']}")
    reps = result["settings"].get("repeats")
    if reps and reps > 1 and any(r.get("latency_ms") for r in rows):
        out.append(f"latency: {reps} timing rounds per row, interleaved across rows; spread = p90/p10 of the "
                   f"rounds' medians, widest batch size ('!' above {SPREAD_WARN:g}x)")
    for n in result.get("notes", []):
        out.append(f"note: {n}")
    return "\n".join(out)


def _fmt_spread(r: dict[str, Any]) -> str:
    ratio = spread_ratio(r)
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" + ("!" if ratio > SPREAD_WARN else "")


CSV_FIXED = ["target", "precision", "status", "reason", "backend", "artifact", "size_mb", "load_s", "throughput", "top1",
             "top2", "macro_f1", "top1_drop", "worst_class", "agreement", "kl", "e2e_fps", "e2e_p99_ms", "decode_fps",
             "e2e_ratio", "cpu_ms_per_frame", "explain_ms", "explain_pct", "peak_mb", "executes", "threads"]
#: per batch size: percentiles over every run, then the rounds and the spread of their medians
CSV_LATENCY = ("p50", "p90", "p99", "repeats", "p50_p10", "p50_p90")


def _latency_cell(entry: dict[str, Any], q: str) -> Any:
    if q.startswith("p50_p"):
        return (entry.get("spread") or {}).get(q[4:])
    return entry.get(q)


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> Path:
    batches = [f"b{b}" for b in result["settings"]["batches"]]
    classes: list[str] = []
    for r in result["rows"]:
        for c in r.get("per_class_drop") or {}:
            if c not in classes:
                classes.append(c)
    cols = CSV_FIXED + [f"latency_{b}_{q}" for b in batches for q in CSV_LATENCY] + [f"drop_{c}" for c in classes]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in result["rows"]:
            vals = [r.get(c) for c in CSV_FIXED]
            lat = r.get("latency_ms") or {}
            vals += [_latency_cell(lat.get(b, {}), q) for b in batches for q in CSV_LATENCY]
            vals += [(r.get("per_class_drop") or {}).get(c) for c in classes]
            w.writerow(["" if v is None else v for v in vals])
    return p


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return p


#: the accuracy axis spans at least this many points: differences of hundredths of a point
#: (FP32 vs FP16, one face in 3,589) must not fill the panel and look like a collapse
MIN_ACC_SPAN = 2.0
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "mixed": "D"}


def _row_name(r: dict[str, Any]) -> str:
    return f"{r['target']}/{r['precision']}" + (f" {Path(r['artifact']).name}" if r.get("label") else "")


def row_colours(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One colour per row (target/precision, or artifact), the same in every panel of the plot."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"]
    names = list(dict.fromkeys(_row_name(r) for r in rows))
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _padded(lo: float, hi: float, min_span: float) -> tuple[float, float]:
    """Limits around [lo, hi] spanning at least ``min_span``, with a little room at both ends."""
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    pad = 0.08 * span
    return mid - span / 2 - pad, mid + span / 2 + pad


def plot(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Accuracy vs latency per row (latency only without --data), and per-class drop bars.

    Each row has one colour in both panels; the marker says the precision (legend), the
    horizontal bar the latency spread over timing rounds (p10-p90 of the rounds' medians), and
    the accuracy axis spans at least MIN_ACC_SPAN points.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        raise EdgeferError("--plot needs matplotlib: pip install matplotlib") from None
    ok = [r for r in result["rows"] if r["status"] == "ok" and r.get("latency_ms")]
    if not ok:
        raise EdgeferError("--plot: no row ran, nothing to plot")
    b0 = f"b{result['settings']['batches'][0]}"
    has_acc = any(r.get("top1") is not None for r in ok)
    drows = [r for r in ok if r.get("per_class_drop") and (r["precision"] != "fp32" or r.get("label"))]
    ncols = 2 if drows else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.8 * ncols, 4.8), squeeze=False)
    ax = axes[0][0]
    colours = row_colours(ok)
    ys: list[float] = []
    handles = []
    for r in ok:
        name = _row_name(r)
        lat = r["latency_ms"].get(b0) or next(iter(r["latency_ms"].values()))
        x = lat["p50"]
        y = r["top1"] if has_acc else r["throughput"]
        if y is None:
            continue
        ys.append(y)
        marker = "*" if r.get("label") else PRECISION_MARKERS.get(r["precision"], "D")
        sp = lat.get("spread") or {}
        if lat.get("repeats", 1) > 1 and sp.get("p10") is not None:
            ax.errorbar([x], [y], xerr=[[max(0.0, x - sp["p10"])], [max(0.0, sp["p90"] - x)]], fmt="none",
                        ecolor=colours[name], elinewidth=1.2, capsize=3, alpha=0.8)
        ax.scatter([x], [y], marker=marker, s=70, color=colours[name], edgecolors="black", linewidths=0.5, zorder=3)
        handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=8, markerfacecolor=colours[name],
                              markeredgecolor="black", markeredgewidth=0.5, label=name))
    if has_acc and ys:
        ax.set_ylim(*_padded(min(ys), max(ys), MIN_ACC_SPAN))
    ax.set_xlabel(f"latency p50 at batch {b0[1:]} (ms, lower is better; bars: p10-p90 over timing rounds)")
    ax.set_ylabel("top-1 (%)" if has_acc else "throughput (faces/s)")
    model = result["model"].get("name") or result["model"]["ref"]
    ax.set_title(f"{model}: {'accuracy' if has_acc else 'throughput'} vs latency")
    ax.grid(alpha=0.3)
    # the legend names every row (its colour, used in both panels) and says what the markers mean
    shapes = [Line2D([], [], linestyle="none", marker=m, markersize=7, color="0.35", label=p_)
              for p_, m in PRECISION_MARKERS.items() if any(r["precision"] == p_ and not r.get("label") for r in ok)]
    if any(r.get("label") for r in ok):
        shapes.append(Line2D([], [], linestyle="none", marker="*", markersize=9, color="0.35", label="--artifact row"))
    ax.legend(handles=handles + shapes, fontsize=7, loc="best", title="row / marker = precision", title_fontsize=7)
    if drows:
        ax2 = axes[0][1]
        classes = list(dict.fromkeys(c for r in drows for c in r["per_class_drop"]))
        width = 0.8 / len(drows)
        for i, r in enumerate(drows):
            vals = [r["per_class_drop"].get(c, 0.0) for c in classes]
            ax2.bar(np.arange(len(classes)) + i * width, vals, width, label=_row_name(r), color=colours[_row_name(r)],
                    edgecolor="black", linewidth=0.4)
        ax2.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
        ax2.set_xticklabels(classes, rotation=30)
        ax2.axhline(0, color="k", lw=0.8)
        lo, hi = ax2.get_ylim()
        ax2.set_ylim(*_padded(min(lo, 0.0), max(hi, 0.0), MIN_ACC_SPAN))
        ax2.set_ylabel("recall drop vs FP32 (points, positive = worse)")
        ax2.set_title("per-class recall drop")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def gate(result: dict[str, Any], max_drop: float) -> list[str]:
    """FP16/INT8 rows that lose more than ``max_drop`` points of top-1 against FP32."""
    bad = []
    for r in result["rows"]:
        if r["status"] == "ok" and r["precision"] in ("fp16", "int8") and r.get("top1_drop") is not None:
            if r["top1_drop"] > max_drop:
                bad.append(f"{r['target']}/{r['precision']} loses {r['top1_drop']:.2f} points (> {max_drop:g})")
    return bad


# ----------------------------------------------------------------------------- schema
_NUM = {"type": ["number", "null"]}
_LAT = {"type": "object", "required": ["p50", "p90", "p99"],
        "properties": {
            **{q: {"type": "number", "minimum": 0} for q in ("p50", "p90", "p99", "mean")},
            "runs": {"type": "integer", "minimum": 1},
            # timing rounds (interleaved across rows) and the spread of their medians; written by every
            # bench since repeats were added, absent from older files of the same schema
            "repeats": {"type": "integer", "minimum": 1},
            "p50_repeats": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
            "spread": {"type": "object", "required": ["p10", "p90", "ratio"], "additionalProperties": False,
                       "properties": {"p10": {"type": "number", "minimum": 0}, "p90": {"type": "number", "minimum": 0},
                                      "ratio": {"type": ["number", "null"], "minimum": 1}}},
        },
        "dependentRequired": {"repeats": ["spread", "p50_repeats"], "spread": ["repeats"]}}
#: JSON Schema (draft 2020-12) of the bench's JSON output, schema 1 (documented in benchmarks/README.md)
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgefer bench result",
    "type": "object",
    "required": ["schema", "machine", "model", "settings", "notes", "rows"],
    "properties": {
        "schema": {"const": SCHEMA},
        "machine": {"type": "object", "required": ["cpu", "cores", "os", "versions"],
                    "properties": {"cores": {"type": ["integer", "null"]}, "versions": {"type": "object"}}},
        "model": {"type": "object", "required": ["ref"]},
        "settings": {"type": "object", "required": ["batches"],
                     "properties": {"batches": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                                    "repeats": {"type": "integer", "minimum": 1},
                                    "spread_warn": {"type": "number", "minimum": 1}}},
        "notes": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {
            "type": "object",
            "required": ["target", "precision", "status", "reason", "size_mb", "load_s", "latency_ms", "throughput",
                         "top1", "top2", "macro_f1", "top1_drop", "per_class_drop", "agreement", "kl", "e2e_fps",
                         "e2e_p99_ms", "decode_fps", "peak_mb"],
            "properties": {
                "target": {"enum": list(TARGETS) + ["ensemble"]},
                "precision": {"enum": list(PRECISIONS) + ["mixed"]},
                "status": {"enum": list(STATUSES)},
                "reason": {"type": ["string", "null"]},
                "latency_ms": {"type": "object", "patternProperties": {"^b[0-9]+$": _LAT}, "additionalProperties": False},
                "per_class_drop": {"type": "object", "additionalProperties": {"type": "number"}},
                "top1": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "top2": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "agreement": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                **{k: _NUM for k in ("size_mb", "load_s", "throughput", "macro_f1", "top1_drop", "kl", "e2e_fps",
                                     "e2e_p99_ms", "decode_fps", "e2e_ratio", "cpu_ms_per_frame", "peak_mb", "explain_ms",
                                     "explain_pct")},
            },
            # a row that ran has its numbers; one that did not says why
            "if": {"properties": {"status": {"const": "ok"}}},
            "then": {"properties": {"size_mb": {"type": "number"}, "load_s": {"type": "number"},
                                    "throughput": {"type": "number"}, "latency_ms": {"minProperties": 1}}},
            "else": {"properties": {"reason": {"type": "string"}}},
        }},
    },
}
