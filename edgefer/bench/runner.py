"""The bench runner: plans the rows, exports or loads each artifact, measures it, and collects
the result (see :mod:`edgefer.bench` for what a row holds and why timing is interleaved).

Each concern it drives lives in its own module: :mod:`.timing` (latency rounds),
:mod:`.scoring` (accuracy and the FP32 comparison), :mod:`.video` (the end-to-end loop),
:mod:`.machine` (machine facts, peak memory) and :mod:`.schema` (the row and result shape).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import load
from ..backends import available
from ..errors import EdgeferError
from ..extras import install_hint
from .config import BACKEND_OF, PRECISIONS, SPREAD_WARN, BenchConfig
from .machine import machine_info, peak_mb, reset_peak
from .schema import SCHEMA, new_row, one_line
from .scoring import (
    Scoring,
    accuracy,
    compare_to_reference,
    load_scoring,
    reference_row,
    score_row,
)
from .timing import batch_inputs, latency_summary, time_round
from .video import measure_video

log = logging.getLogger(__name__)


def artifact_size_mb(art) -> float:
    """Megabytes the artifact deploys: every file its manifest names (a Core ML package is a folder)."""
    total = 0
    for rel in art.manifest.files.values():
        for r in rel if isinstance(rel, list) else [rel]:
            p = art.root / r
            if p.is_file():
                total += p.stat().st_size
            elif p.is_dir():  # Core ML packages are folders
                total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return round(total / 1e6, 3)


class Bench:
    """One bench run: :meth:`run` measures every planned row and returns the result dict
    (schema in :mod:`.schema`); :meth:`close` removes the temporary export folder."""

    def __init__(self, cfg: BenchConfig, say: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.say = say or (lambda m: None)
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.scoring: Scoring | None = None
        self._through = None  # the pasted frames and their detections (--through-detector)
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
            return None, new_row(target, precision, "skipped",
                              "INT8 needs calibration faces: pass --calib (FER2013 csv, class folders, .npz, video)")
        try:
            from ..export.api import export_model  # noqa: F401 - build-side: onnx, onnxruntime.quantization
        except ImportError as e:
            return None, new_row(target, precision, "export-failed", f"exporting needs {e.name or e}: {install_hint('export')}")
        from ..export.api import export_model

        out = self.workdir() / f"{Path(str(self.cfg.model)).stem}-{target}-{precision}"
        kw: dict[str, Any] = {"output": out, "progress": False, "arch": self.cfg.arch}
        if precision == "int8":
            kw.update(calib=self.cfg.calib, calib_size=self.cfg.calib_size, calib_method=self.cfg.calib_method)
        if target == "trt":
            kw["build_engine"] = True
        try:
            res = export_model(self.cfg.model, target, precision, **kw)
        except EdgeferError as e:
            return None, new_row(target, precision, "export-failed", one_line(e))
        except ImportError as e:  # a build-side package missing on a runtime-only install
            return None, new_row(target, precision, "export-failed",
                              f"exporting needs {e.name or e}: {install_hint('export')}")
        except Exception as e:  # noqa: BLE001 - a row, not a crash
            log.debug("export failed", exc_info=True)
            return None, new_row(target, precision, "export-failed", f"{type(e).__name__}: {one_line(e)}")
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
            from ..sources import decode_only_fps

            self._decode = decode_only_fps(cfg.video, cfg.video_frames)
            self.say(f"decode-only: {self._decode[0]:.1f} fps over {self._decode[1]} frames of {cfg.video}")
        plan = self.plan()
        from ..progress import progress

        bar = progress(plan, desc="bench", unit="row", disable=not cfg.progress, leave=False, every_s=0)
        for target, precision, given in bar:
            label = f"{target}/{precision}" + (f" ({Path(given).name})" if given else "")
            bar.set_postfix_str(label)
            backend = "auto" if target == "ensemble" else BACKEND_OF.get(target)
            if backend is None:
                self.rows.append(new_row(target, precision, "unavailable", f"no backend runs {target} artifacts"))
                continue
            ok, why = available(backend) if backend != "auto" else (True, "")
            if not ok:
                self.rows.append(new_row(target, precision, "unavailable", why))
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
                    inputs = batch_inputs(self._faces(clf.spec), cfg.batches)
                    for b, ms in time_round(clf.predict, inputs, cfg, cfg.warmup).items():
                        r["_rounds"][b].append(ms)
                    del clf
                except Exception as e:  # noqa: BLE001 - keep the rounds it has
                    r["_live"] = None
                    self.notes.append(f"{r['target']}/{r['precision']}: a later timing round failed "
                                      f"({one_line(e)}); latency from the rounds before it")
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
        from ..align import resize_faces

        if self.scoring is not None:
            n = min(64, len(self.scoring.labels))
            return resize_faces(self.scoring.images[:n], spec)
        rng = np.random.default_rng(0)  # latency does not depend on pixel values; accuracy is not measured
        return rng.integers(0, 256, (64, *spec.size, spec.channels), dtype=np.uint8)

    def _open(self, path: str, target: str):
        from ..classify import EmotionClassifier

        opts: dict[str, Any] = {"threads": self.cfg.threads} if self.cfg.threads else {}
        return EmotionClassifier(path, backend=BACKEND_OF.get(target, "auto"), **opts)

    def measure(self, target: str, precision: str, path: str) -> dict[str, Any]:
        cfg = self.cfg
        row = new_row(target, precision, "ok", artifact=path)
        reset_peak()
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
            inputs = batch_inputs(faces, cfg.batches)
            # round 1 now; the other rounds run after every row, interleaved (see the package doc)
            row["_rounds"] = {b: [ms] for b, ms in time_round(clf.predict, inputs, cfg, cfg.warmup).items()}
            row["_live"] = (path, target)
            self._summarise_latency(row)
            if self.scoring is not None:
                score_row(row, clf, self.scoring, self.notes)
                if cfg.through_sizes:
                    self.through_row(row, clf)
            if cfg.video:
                self.video_row(row, path, target)
        except EdgeferError as e:
            row.update(status="run-failed", reason=one_line(e))
        except Exception as e:  # noqa: BLE001 - one row fails, the bench goes on
            log.debug("row failed", exc_info=True)
            row.update(status="run-failed", reason=f"{type(e).__name__}: {one_line(e)}")
        row["peak_mb"] = peak_mb()
        return row

    def through_row(self, row: dict[str, Any], clf: Any) -> None:
        """Accuracy through the detector loop (:mod:`.through`); the detections are shared by every row."""
        from ..detect import FaceDetector
        from .through import ThroughConfig, ThroughLoop, score_through

        if self._through is None:
            opts: dict[str, Any] = {"threads": self.cfg.threads} if self.cfg.threads else {}
            det = FaceDetector(self.cfg.detector, **opts)
            self._through = ThroughLoop(det, self.scoring.images, ThroughConfig(sizes=tuple(self.cfg.through_sizes),
                                                                                    sensor_noise=self.cfg.through_noise))
        row["through"] = score_through(self._through, clf, row["_probs"], self.scoring.for_model(clf.classes), accuracy)

    def video_row(self, row: dict[str, Any], path: str, target: str) -> None:
        measure_video(row, path, target, self.cfg, self._decode)

    # -------------------------------------------------------------- compare to FP32
    def reference(self) -> dict[str, Any] | None:
        return reference_row(self.rows)

    def compare(self) -> None:
        compare_to_reference(self.rows)

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
        if cfg.through_sizes:
            settings["through_sizes"] = list(cfg.through_sizes)
            settings["through_noise"] = cfg.through_noise
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
