"""Whole frames: how an INT8 detector is calibrated and checked (the plan :class:`DetectorFrames`).

A classifier is calibrated and checked on face crops; a detector sees whole frames, at the size
the runtime feeds it (the long side scaled to ``det_size``, never upscaled, as
:class:`edgefer.detect.FaceDetector` does). So here the calibration inputs are frames of the
user's videos / photos resized that way, and the check is not top-1 agreement but detection
agreement on held-out frames: the faces the FP32 detector finds that the INT8 one also finds
(IoU >= 0.5), the INT8 faces the FP32 one does not, the IoU and score shift of the matched ones.

Why bother: on this project's 2-core Xeon (AVX-512 VNNI) OpenVINO runs the INT8 RetinaFace
MobileNet-0.25 at a 640 px long side in about 4.4 ms against 7.7 ms for ONNX Runtime FP32 and
9.8 ms for OpenVINO FP32, and detection bounds the video loop. ONNX Runtime's own INT8 kernels
are slower than its FP32 on this graph (about 16 ms): the export says so, it does not hide it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edgefer.errors import EdgeferError

from . import quantize as q
from .job import CalibData, Qdq

if TYPE_CHECKING:
    from edgefer.artifact import Manifest

    from .job import Built, Job

IOU_MATCH = 0.5
CONFIDENT = 0.8  # FP32 face score above which a face counts as confidently detected
DET_SIZE = 640  # the runtime's default long side (edgefer run --det-size)


def read_frames(calib: str | Path, count: int, seed: int = 0,
                det_size: int | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Up to ``count`` BGR frames spread over a video, a photo, or a folder of them, each scaled
    as read to what the detector sees at ``det_size`` (the detector would scale them the same
    way, so nothing changes but the memory: hundreds of 1080p frames are gigabytes)."""
    from edgefer.calibration.datasets import IMAGE_SUFFIXES, VIDEO_SUFFIXES, media_files
    from edgefer.calibration.samples import _video_frames

    from edgefer.detect import detector_input_size

    p = Path(calib).expanduser()
    if not p.exists():
        raise EdgeferError(f"--calib {calib}: no such file or folder")
    files = [p] if p.is_file() else media_files(p, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
    if not files:
        raise EdgeferError(f"--calib {calib}: a detector calibrates on whole frames: give videos, photos or a folder of them")
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    images = [f for f in files if f.suffix.lower() not in VIDEO_SUFFIXES]
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []

    def keep(frame: np.ndarray) -> None:
        ih, iw, _ = detector_input_size(*frame.shape[:2], det_size)
        frames.append(frame if (ih, iw) == frame.shape[:2] else cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_LINEAR))

    if images:
        pick = images if len(images) <= count else [images[i] for i in sorted(rng.permutation(len(images))[:count])]
        for f in pick:
            im = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if im is not None:
                keep(im)
    if videos:
        per = max(1, (count - len(frames) + len(videos) - 1) // len(videos))
        for v in videos:
            for frame in _video_frames(v, per):
                keep(frame)
    if not frames:
        raise EdgeferError(f"--calib {calib}: no readable frame")
    if len(frames) > count:
        keep = sorted(rng.permutation(len(frames))[:count])
        frames = [frames[i] for i in keep]
    return frames, {"source": str(calib), "kind": "frames", "files": len(files), "frames": len(frames)}


class FrameBatches:
    """Frames already at the detector's input size (:func:`read_frames`) as model-ready batches,
    built one slice at a time (``x[a:b]``, ``len(x)``, ``x.shape``).

    Activation ranges are collected in batches, so every frame is brought to the most common
    input shape (a different aspect ratio is stretched: harmless for ranges). Stacking all of
    them up front would hold a second copy of every frame; calibration only ever needs one batch.
    """

    def __init__(self, frames: list[np.ndarray]):
        if not frames:
            raise ValueError("no frames")
        self.frames = frames
        self.hw: tuple[int, int] = Counter(f.shape[:2] for f in frames).most_common(1)[0][0]
        self.shape = (len(frames), *self.hw, frames[0].shape[2] if frames[0].ndim == 3 else 1)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, s: slice) -> np.ndarray:
        ih, iw = self.hw
        return np.stack([cv2.resize(f, (iw, ih), interpolation=cv2.INTER_LINEAR) if f.shape[:2] != (ih, iw) else f
                         for f in self.frames[s]])


def model_inputs(frames: list[np.ndarray]) -> np.ndarray:
    """All of :class:`FrameBatches` as one array (for callers that want them at once)."""
    return FrameBatches(frames)[:]


def float_convs(onnx_path: Path) -> list[str]:
    """Convs kept in float: the first (it sees raw pixels) and the output heads (the last conv on every
    path to an output: box offsets, face scores and landmarks need their resolution; they are 1x1
    convs, a sliver of the compute)."""
    import onnx

    g = onnx.load(str(onnx_path)).graph
    producer = {o: n for n in g.node for o in n.output}
    keep: list[str] = []
    for out in g.output:
        stack, seen = [out.name], set()
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if n is None or id(n) in seen:
                continue
            seen.add(id(n))
            if n.op_type == "Conv":
                keep.append(n.name)
                continue
            stack.extend(n.input)
    first = next((n for n in g.node if n.op_type == "Conv"), None)
    if first is not None:
        keep.append(first.name)
    return sorted(set(k for k in keep if k))


def detection_agreement(ref_det, det, frames: list[np.ndarray]) -> dict[str, Any]:
    """How the detector ``det`` agrees with ``ref_det`` (callables frame -> Detections) on ``frames``."""
    from edgefer.track import iou_matrix

    n_ref = n_new = matched = n_conf = matched_conf = 0
    ious, dscore = [], []
    for f in frames:
        a, b = ref_det(f), det(f)
        n_ref += len(a.boxes)
        n_new += len(b.boxes)
        m = iou_matrix(a.boxes, b.boxes)
        used = set()
        n_conf += int((a.scores >= CONFIDENT).sum())
        for i in np.argsort(-a.scores) if len(a.boxes) else []:
            if m.shape[1] == 0:
                break
            row = m[i].copy()
            row[list(used)] = -1
            j = int(row.argmax())
            if row[j] >= IOU_MATCH:
                used.add(j)
                matched += 1
                matched_conf += int(a.scores[i] >= CONFIDENT)
                ious.append(float(row[j]))
                dscore.append(abs(float(a.scores[i]) - float(b.scores[j])))
    return {
        "frames": len(frames), "fp32_faces": n_ref, "faces": n_new, "matched": matched,
        "recall_vs_fp32": matched / n_ref if n_ref else 1.0,
        "precision_vs_fp32": matched / n_new if n_new else 1.0,
        # faces near the score threshold come and go with any small change (another input size
        # does it too); the confident ones are the faces a user sees in every frame
        "fp32_confident_faces": n_conf, "confident_score": CONFIDENT,
        "recall_confident_vs_fp32": matched_conf / n_conf if n_conf else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "mean_abs_score_shift": float(np.mean(dscore)) if dscore else None,
        "iou_match": IOU_MATCH,
    }


def check_detector(ref_artifact, staging: Path, backend: str, frames: list[np.ndarray], det_size: int,
                   **options: Any) -> dict[str, Any]:
    """Detection agreement of the exported INT8 detector (on ``backend``) with the FP32 source."""
    from edgefer.detect import FaceDetector

    ref = FaceDetector(ref_artifact, det_size=det_size)
    new = FaceDetector(str(staging), backend=backend, det_size=det_size, **options)
    out = detection_agreement(ref, new, frames)
    out["backend"] = backend
    return out


class DetectorFrames:
    """The plan of INT8 detectors: frames in, detections compared with the FP32 detector's."""

    allows_nncf = False  # always the QDQ graph (--nncf is not applied to detectors)
    builds_engine = False  # TensorRT: the engine is built on the device from the INT8 ONNX

    @staticmethod
    def method(job: Job) -> str:
        # min/max ranges of whole frames are set by rare outliers (they lost a third of the faces)
        return job.req.calib_method if job.req.calib_method is not None else "percentile"

    def check(self, job: Job) -> None:
        if job.target.name not in ("onnx", "openvino", "trt"):
            raise EdgeferError(f"INT8 detectors export to onnx, openvino or trt, not {job.target.name} "
                               "(use --fp16 for Core ML)")
        if not job.req.calib:
            raise EdgeferError("--int8 needs calibration frames for a detector: pass --calib with videos or photos "
                               "of the scenes it will see (--calib-size N frames)")

    def collect(self, job: Job) -> CalibData:
        req = job.req
        job.steps("read calibration frames")
        frames, prov = read_frames(req.calib, req.calib_size + max(8, req.calib_size // 4), req.seed, DET_SIZE)
        # every 5th frame is held out for the check (spread over every source), the rest calibrate
        if len(frames) >= 5:
            chk_frames = frames[4::5]
            cal_frames = [f for i, f in enumerate(frames) if i % 5 != 4]
        else:
            cal_frames = chk_frames = frames
            job.messages.append(f"only {len(frames)} calibration frames: checked on the calibration frames themselves")
        x = FrameBatches(cal_frames)  # batches are made as the calibration asks for them
        record = {**prov, "method": self.method(job), "count": len(cal_frames), "input_hw": list(x.shape[1:3]),
                  "det_size": DET_SIZE}
        return CalibData(cal_x=x, check_frames=chk_frames, record=record)

    def quantize(self, job: Job) -> Qdq:
        """One variant (forced, or the first this target and CPU run correctly), output heads kept float."""
        forced = None if job.req.int8_variant == "auto" else job.req.int8_variant
        cpu = job.cpu
        v = forced or q.candidates(job.target.name, cpu)[0]
        keep = float_convs(job.fp32)
        path = q.quantize_qdq(job.fp32, job.work / f"det-{v}.onnx", job.manifest0.input.name, job.data.cal_x,
                              variant=v, method=self.method(job), batch_size=8, cache_dir=job.work, exclude=keep)
        reason = (f"forced by --int8-variant {v}" if forced else
                  f"{cpu['cpu']}: {v} is the variant that runs correctly here (see export/README.md)")
        return Qdq(path, {**q.describe_variant(v), "cpu": cpu["cpu"], "vnni": cpu["vnni"], "float_convs": keep,
                          "reason": reason})

    def validate(self, job: Job, man: Manifest, built: Built) -> dict[str, Any] | None:
        target, src = job.target, job.src
        if target.check_backend is None:
            return None
        ref = src.artifact if src.artifact is not None else src.ref
        validation = check_detector(ref, job.staging, target.check_backend, job.data.check_frames, DET_SIZE,
                                    **target.check_options(job.req.device))
        validation["on"] = (f"{validation['frames']} held-out frames of {Path(job.req.calib).name} "
                            f"at a {DET_SIZE} px long side")
        man.extra["validation"] = validation
        return validation
