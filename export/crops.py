"""Face crops: how a classifier is calibrated and checked (every export but an INT8 detector's).

* calibration (INT8): crops from real face data, class-balanced, fixed seed (``--calib``);
* the check: ``--val`` faces, else a test split of the calibration data where it has one (FER2013
  CSV PublicTest rows, a Kaggle ``test/``, a ``publictest.npz`` beside ``train.npz``), else
  held-out calibration crops, named by their split so nobody reads them as test accuracy;
* quantization: the QDQ variant that runs correctly on the target and this CPU, measured on the
  check faces (:func:`edgefer.export.quantize.choose_variant`);
* validation: the written artifact run through edgefer's backend on the check faces, compared
  with the FP32 graph (agreement; top-1 and drop when labels are known).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefer.classes import canonical
from edgefer.errors import EdgeferError

from . import quantize as q
from .job import CalibData, Qdq

if TYPE_CHECKING:
    from edgefer.artifact import Manifest

    from .job import Built, Job


def map_labels(data_classes: list[str], model_classes: list[str], labels: np.ndarray) -> np.ndarray:
    """Dataset label indices -> model output indices, by canonical emotion name."""
    mc = [canonical(c) for c in model_classes]
    dc = [canonical(c) for c in data_classes]
    if dc == mc:
        return labels
    missing = [c for c in {dc[i] for i in np.unique(labels)} if c not in mc]
    if missing:
        raise EdgeferError(
            f"validation labels {', '.join(sorted(missing))} are not classes of the model ({', '.join(model_classes)})"
        )
    lut = np.array([mc.index(c) if c in mc else -1 for c in dc], np.int64)
    return lut[labels]


@dataclass
class CheckSplit:
    """Which split the check's faces come from (see :func:`check_split`)."""

    calib_split: str | None  # the calibration data's split: Training, PublicTest, PrivateTest, or None (unknown)
    source: str | None = None  # another source with a split the model was not trained on, or None
    usage: str | None = None  # the usage (FER2013 CSV rows / Kaggle folders) to read from ``source``
    split: str | None = None  # the split of ``source``

    @property
    def name(self) -> str:
        return Path(self.source).name if self.source else ""


#: words in an .npz name -> the FER2013-style split it holds
_NPZ_SPLITS = (("privatetest", "PrivateTest"), ("publictest", "PublicTest"), ("test", "PublicTest"),
               ("val", "PublicTest"), ("train", "Training"))


def _npz_split(name: str) -> str | None:
    low = name.lower()
    for word, split in _NPZ_SPLITS:
        if word in low:
            return split
    return None


def check_split(calib: str, calib_usage: str | None) -> CheckSplit | None:
    """The split of the calibration data, and a test split of the same data to check on instead.

    Held-out calibration crops are held out from *calibration*; drawn from a Training split,
    they are faces the model was most likely trained on, and a top-1 on them (86.67% for
    EdgeNet, against 69.66% on PublicTest) reads as an accuracy it does not have. So: a FER2013
    CSV with PublicTest rows, a Kaggle root with a test/ (or val/) folder, or a ``train*.npz``
    with a ``publictest*.npz`` / ``test*.npz`` / ``val*.npz`` beside it is checked on that split;
    other data is checked on held-out calibration crops whose split is named where known.
    """
    from edgefer.datasets import class_folder_root, open_labeled

    p = Path(calib)
    usage = calib_usage or "Training"
    if p.is_file() and p.suffix.lower() == ".csv":
        if usage != "Training":
            return CheckSplit(usage)
        try:
            open_labeled(p, usage="PublicTest")  # the file has PublicTest rows (FER2013's Usage column)
        except EdgeferError:
            return CheckSplit(None)  # no Usage column, or no PublicTest rows: the split is unknown
        return CheckSplit("Training", str(p), "PublicTest", "PublicTest")
    if p.is_dir():
        train_root, test_root = class_folder_root(p, "Training"), class_folder_root(p, "PublicTest")
        if train_root is None or test_root is None or train_root.resolve() == test_root.resolve():
            return CheckSplit(None)
        if usage != "Training":
            return CheckSplit("PublicTest")
        return CheckSplit("Training", str(p), "PublicTest", "PublicTest")
    if p.is_file() and p.suffix.lower() == ".npz":
        split = _npz_split(p.stem)
        if split != "Training":
            return CheckSplit(split)
        tests = [f for f in p.parent.glob("*.npz") if f != p and _npz_split(f.stem) in ("PublicTest", "PrivateTest")]
        for f in sorted(tests, key=lambda f: (_npz_split(f.stem) != "PublicTest", f.name)):
            return CheckSplit("Training", str(f), None, _npz_split(f.stem))
        return CheckSplit("Training")
    return None  # videos and photos: unlabeled, the check is agreement with FP32 only


def int8_extra(choice: q.VariantChoice, cpu: dict[str, Any], runtime: str, chk_desc: str | None) -> dict[str, Any]:
    """manifest.extra.int8 of a measured QDQ variant choice."""
    return {
        **q.describe_variant(choice.variant),
        "format": "QDQ (explicit quantization)",
        "chosen_for": runtime,
        "reason": choice.reason,
        "measured": choice.scores,
        "measured_on": chk_desc,
        "cpu": cpu["cpu"],
        "vnni": cpu["vnni"],
        "tensorrt_ready": q.VARIANTS[choice.variant]["symmetric"] and q.VARIANTS[choice.variant]["activation"] == "int8",
    }


class FaceCrops:
    """The plan of classifiers (and of FP32/FP16 exports of anything): face crops in, top-1 out."""

    allows_nncf = True
    builds_engine = True

    @staticmethod
    def method(job: Job) -> str:
        return job.req.calib_method if job.req.calib_method is not None else "minmax"

    def check(self, job: Job) -> None:
        req, man0 = job.req, job.manifest0
        if req.precision == "int8" and man0.kind != "classifier":
            raise EdgeferError(f"INT8 export of {man0.kind}s is not supported; use --fp16")
        if req.precision == "int8" and not req.calib and job.target.int8_needs_calib:
            raise EdgeferError(
                "--int8 needs calibration data: pass --calib with face data the model will see, e.g. "
                "fer2013.csv, a .npz of faces (edgefer calibrate), a folder of class folders, or a video/photos of "
                f"faces (--calib-size N, default {req.calib_size})"
            )

    def collect(self, job: Job) -> CalibData:
        from edgefer.calibration.datasets import open_labeled
        from edgefer.calibration.samples import collect

        from edgefer.align import resize_faces

        from .validate import predict_onnxruntime

        req, man0, target = job.req, job.manifest0, job.target
        spec, classifier = man0.input, man0.kind == "classifier"
        d = CalibData()
        if req.val is not None:
            if not classifier:
                raise EdgeferError("--val measures classifiers; the model is a " + man0.kind)
            job.steps("read validation data")
            table = open_labeled(req.val, usage=req.val_usage)
            idx = np.arange(len(table))
            if req.val_size and req.val_size < len(idx):
                idx = np.sort(np.random.default_rng(req.seed).permutation(len(idx))[:req.val_size])
            d.val_x = resize_faces(table.fetch(idx), spec)
            d.val_y = map_labels(table.classes, man0.classes, table.labels[idx])
        cal = check = None
        split = check_split(req.calib, req.calib_usage) if req.calib and d.val_x is None and classifier else None
        other = split if split is not None and split.source is not None and req.check_size > 0 else None
        crops = {"detect": req.calib_detect, "progress": req.progress, "model_classes": man0.classes}
        if req.precision == "int8" and req.calib and target.calibrates_on_crops():
            job.steps("collect calibration crops")
            want_check = 0 if (d.val_x is not None or other is not None) else req.check_size
            cs = collect(req.calib, spec, man0.crop, count=req.calib_size, seed=req.seed, usage=req.calib_usage,
                         holdout=want_check, **crops)
            cal, check = cs.split(min(req.calib_size, len(cs)))
            if other is not None:
                check = collect(other.source, spec, man0.crop, count=req.check_size, seed=req.seed, usage=other.usage,
                                **crops)
            if cal.labels is not None and cal.classes:
                counts = np.bincount(cal.labels, minlength=len(cal.classes))
                cal.provenance["per_class"] = {c: int(k) for c, k in zip(cal.classes, counts)}
            if len(check) == 0 and d.val_x is None:
                check = cal
                job.messages.append(f"only {len(cal)} calibration crops: checked on the calibration crops themselves "
                                    "(no held-out faces)")
        elif req.calib and d.val_x is None and classifier and target.checked_on_faces:
            # FP32/FP16 need no calibration, but faces given with --calib still check the result
            job.steps("collect check crops")
            src_, usage_ = (other.source, other.usage) if other is not None else (req.calib, req.calib_usage)
            check = collect(src_, spec, man0.crop, count=req.check_size, seed=req.seed, usage=usage_, **crops)
        self._describe_check(job, d, cal, check, split, other)
        d.ref = predict_onnxruntime(job.fp32, d.chk_x) if d.chk_x is not None else None
        d.cal_x = cal.model_input(spec) if cal is not None else None
        if cal is not None:
            d.record = {**{k: v for k, v in cal.provenance.items() if k not in ("requested",)},
                        "method": "nncf" if job.nncf else self.method(job), "count": len(cal)}
            if check is not None and check is not cal and d.val_x is None and other is None:
                d.record["held_out_checked"] = len(check)
        d.extra["check_data"] = d.chk_desc
        return d

    @staticmethod
    def _describe_check(job: Job, d: CalibData, cal, check, split: CheckSplit | None, other: CheckSplit | None) -> None:
        """What the result is checked on: --val, else held-out or test-split crops, else nothing."""
        req, man0 = job.req, job.manifest0
        if d.val_x is not None:
            d.chk_x, d.chk_y = d.val_x, d.val_y
            d.chk_desc, d.chk_split = f"--val {Path(req.val).name} ({len(d.val_x)} faces)", "--val"
            return
        if check is None:
            return
        d.chk_x = check.model_input(man0.input)
        if check.labels is not None and check.classes and man0.kind == "classifier":
            try:
                d.chk_y = map_labels(check.classes, man0.classes, check.labels)
            except EdgeferError:
                d.chk_y = None
        if other is not None:
            d.chk_split = other.split
            d.chk_desc = (f"{len(d.chk_x)} faces of the {other.split} split of {other.name} "
                          f"(not the calibration data's {split.calib_split} split)")
            return
        d.chk_split = split.calib_split if split is not None else None
        held = "held-out " if cal is not None and check is not cal else ""
        where = f"the {d.chk_split} split of {Path(req.calib).name}" if d.chk_split else Path(req.calib).name
        d.chk_desc = f"{len(d.chk_x)} {held}crops from {where}"
        if d.chk_split == "Training":
            d.chk_desc += " (training faces: the model may have learnt them, so top-1 reads high)"
        if d.chk_y is not None and d.chk_split != "PublicTest" and d.chk_split != "PrivateTest":
            job.messages.append(
                f"the check's faces come from {where}, not from a test split: its top-1 is not the model's "
                "accuracy; pass --val DATA (e.g. fer2013.csv, whose PublicTest rows are used, or publictest.npz) "
                "to measure it on faces the model was not trained on")

    def quantize(self, job: Job) -> Qdq:
        from .validate import simulate_qdq

        d, target = job.data, job.target
        check = q.CheckFaces(d.chk_x, d.ref, d.chk_y, d.chk_desc)
        choice = q.choose_variant(target.name, job.fp32, job.work, job.manifest0.input.name, d.cal_x, check,
                                  target.qdq_runner(job.req.device), simulate_qdq, method=self.method(job),
                                  forced=job.req.int8_variant, cpu=job.cpu)
        return Qdq(choice.path, int8_extra(choice, job.cpu, target.int8_runtime, d.chk_desc))

    def validate(self, job: Job, man: Manifest, built: Built) -> dict[str, Any] | None:
        from .validate import compare, predict_artifact

        d, target = job.data, job.target
        if d.chk_x is None:
            return None
        if target.check_backend is not None:
            pred, binfo = predict_artifact(job.staging, d.chk_x, target.check_backend,
                                           **target.check_options(job.req.device))
            validation = {**compare(pred, d.ref, d.chk_y), "on": d.chk_desc, "split": d.chk_split, "backend": binfo}
            man.extra["validation"] = validation
            target.review(job, binfo)
            return validation
        simulated = built.extra.get("int8", {}).get("simulated")
        if target.simulated_by is not None and simulated is not None:
            return {**simulated, "on": d.chk_desc, "split": d.chk_split, "backend": target.simulated_by}
        return None
