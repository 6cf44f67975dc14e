"""Ensembles as an artifact kind: several classifiers, one combined answer.

An ensemble artifact is a manifest (kind ``ensemble``) that names member artifacts by paths
relative to itself, inside its folder (``files.members``) and a combination rule (``extra.ensemble.rule``). The
members may be any mix of targets, backends and precisions (an FP32 ONNX, an OpenVINO INT8, a
TensorRT FP16 engine...) as long as they predict the same class set; their class *order* may
differ (each member's columns are mapped by class name). An ensemble is a classifier made of
classifiers: :class:`EnsembleClassifier` extends :class:`edgefer.classifier.Classifier` and holds
one per member. Loading it through :class:`edgefer.classify.EmotionClassifier` (which sits above
both and opens whichever kind a reference names) is transparent: ``predict``, ``predict_images`` and
``__call__`` return the combined probabilities, so ``edgefer run --classifier ENSEMBLE`` and the
bench use it like any classifier. Per frame each member runs one batch of its own crops (its
own input size, colour and crop geometry).

Rules (``combine``):

``mean``
    the mean of the members' probabilities.
``vote``
    max-vote as in the EmotionGAN project: each member votes for its top class; the class with
    the most votes wins; a tie is broken by the highest mean probability among the tied classes
    (then by class order). Returned distribution: ``(votes + mean) / (members + 1)``. It sums to
    1, its argmax is exactly the voted class (a class with fewer votes cannot overtake it because
    the mean probabilities differ by less than 1, and among tied classes the mean decides), and
    its maximum reads as agreement: 3 of 3 votes give at least 0.75, a split vote much less.

Write one with :func:`write_ensemble` or ``edgefer ensemble -o DIR --rule vote A B C``
(``python -m edgefer.ensemble`` runs the same command).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .align import resize_faces
from .artifact import ALIASES, BUNDLED, Artifact, InputSpec, Manifest, load, sha256_file, write_artifact
from .backends import ALIASES as BACKEND_ALIASES, REGISTRY
from .classes import canonical
from .classifier import Classifier
from .errors import EdgeferError

RULES = ("mean", "vote")


# ----------------------------------------------------------------------------- rules
def combine_mean(probs: np.ndarray) -> np.ndarray:
    """(M members, K faces, C classes) -> (K, C): mean of the members' probabilities."""
    return np.asarray(probs, np.float32).mean(axis=0)


def combine_vote(probs: np.ndarray) -> np.ndarray:
    """(M, K, C) -> (K, C) ``(votes + mean) / (M + 1)``: argmax = max-vote, ties to the highest mean."""
    p = np.asarray(probs, np.float32)
    m, k, c = p.shape
    votes = np.zeros((k, c), np.float32)
    top = p.argmax(axis=2)  # (M, K)
    for j in range(m):
        votes[np.arange(k), top[j]] += 1.0
    return (votes + p.mean(axis=0)) / (m + 1)


def combine(probs: np.ndarray, rule: str) -> np.ndarray:
    if rule == "mean":
        return combine_mean(probs)
    if rule == "vote":
        return combine_vote(probs)
    raise EdgeferError(f"unknown ensemble rule {rule!r}; choose {' or '.join(RULES)}")


# ----------------------------------------------------------------------------- class sets
def class_mapping(reference: Sequence[str], member: Sequence[str], what: str) -> np.ndarray:
    """Column indices of ``member``'s outputs in ``reference`` order; refuses a different class set."""
    ref = [canonical(c) for c in reference]
    mem = [canonical(c) for c in member]
    if sorted(ref) != sorted(mem) or len(set(mem)) != len(mem):
        missing = [c for c in ref if c not in mem]
        extra = [c for c in mem if c not in ref]
        detail = "; ".join(x for x in (f"lacks {', '.join(missing)}" if missing else "",
                                       f"adds {', '.join(extra)}" if extra else "") if x) or "differs"
        raise EdgeferError(f"ensemble members must predict the same classes: {what} has "
                           f"[{', '.join(member)}], the first member [{', '.join(reference)}] ({detail})")
    return np.array([mem.index(c) for c in ref], np.int64)


def _ensemble_spec(members: Sequence[Manifest]) -> InputSpec:
    """The ensemble's own input for ``predict(batch)``: uint8 NHWC at the first member's size."""
    first = members[0].input
    color = "gray" if all(m.input.color == "gray" for m in members) else "bgr"
    return InputSpec(name="image", dtype="uint8", layout="NHWC", size=list(first.size), color=color,
                     mean=[0.0], std=[1.0], batch="dynamic")


def _common(values: Sequence[str]) -> str:
    return values[0] if len(set(values)) == 1 else "mixed"


def member_labels(manifests: Sequence[Manifest]) -> list[str]:
    """One distinct, readable name per member: its manifest name, plus target and precision where
    two members share a name (an FP32 and an INT8 EdgeNet are ``edgenet-onnx-fp32`` and
    ``edgenet-openvino-int8``, not ``edgenet`` twice), plus its position if that still collides."""
    names = [m.name for m in manifests]
    labels = [n if names.count(n) == 1 else f"{n}-{m.target}-{m.precision}" for n, m in zip(names, manifests)]
    return [lab if labels.count(lab) == 1 else f"{lab}-{i + 1}" for i, lab in enumerate(labels)]


# ----------------------------------------------------------------------------- runtime
class _EnsembleBackend:
    """The backend face of an ensemble (what `edgefer run`'s summary and the bench read)."""

    name = "ensemble"

    def __init__(self, owner: "EnsembleClassifier", art: Artifact):
        self.owner = owner
        self.artifact = art
        self.manifest = art.manifest
        self.output_names = ["probs"]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return [self.owner.predict(batch)]

    def info(self) -> dict[str, Any]:
        return {
            "backend": "ensemble",
            "target": self.manifest.target,
            "precision": self.manifest.precision,
            "device": ",".join(sorted({str(m.backend.info().get("device", "cpu")) for m in self.owner.members})),
            "threads": ",".join(sorted({str(m.backend.info().get("threads", "runtime default")) for m in self.owner.members})),
            "rule": self.owner.rule,
            "members": [m.backend.info() | {"artifact": m.backend.artifact.describe()} for m in self.owner.members],
        }


class EnsembleClassifier(Classifier):
    """Members run one batch each; their probabilities (in the first member's class order) are combined.

    ``backend``: ``auto`` lets each member pick the backend for its target; a named backend is
    used for the members it can run (the others stay on ``auto``). ``last_member_probs`` keeps
    the members' probabilities of the latest call (M, K, C), for inspection.

    ``threads`` defaults to 1 per member: members run back to back, and each runtime's thread
    pool keeps spinning after its own run, stealing the cores from the next member. Measured
    here (2 cores, batch 1): mini-XCEPTION + 2 EdgeNets voting 12.9 ms/face with the runtimes'
    default pools, 2.7 ms/face with one thread each. Pass ``threads=N`` (``edgefer run
    --threads N``) to override.
    """

    def __init__(self, artifact: Any, backend: str = "auto", **backend_options: Any):
        art = artifact if isinstance(artifact, Artifact) else load(artifact)
        m = art.manifest
        if m.kind != "ensemble":
            raise EdgeferError(f"{art.describe()} is not an ensemble")
        ens = (m.extra or {}).get("ensemble") or {}
        self.rule = str(ens.get("rule", "mean"))
        if self.rule not in RULES:
            raise EdgeferError(f"{art.describe()}: unknown ensemble rule {self.rule!r}; choose {' or '.join(RULES)}")
        rels = m.files.get("members") or []
        if len(rels) < 2:
            raise EdgeferError(f"{art.describe()}: an ensemble needs at least 2 members, it lists {len(rels)}")
        per_member = ens.get("members") or []
        name = BACKEND_ALIASES.get(backend, backend)
        if not backend_options.get("threads"):
            backend_options = {**backend_options, "threads": 1}
        self.members: list[Classifier] = []
        self.maps: list[np.ndarray] = []
        for i, rel in enumerate(rels):
            mart = load(art.root / rel)
            if mart.manifest.kind != "classifier":
                raise EdgeferError(f"{art.describe()}: member {rel} is a {mart.manifest.kind}, members must be classifiers")
            want = per_member[i].get("backend") if i < len(per_member) and isinstance(per_member[i], dict) else None
            b = want or (name if name in REGISTRY and mart.manifest.target in REGISTRY[name][2] else "auto")
            self.members.append(Classifier(mart, backend=b, **backend_options))
        ref = list(m.classes or self.members[0].classes)
        for rel, mem in zip(rels, self.members):
            self.maps.append(class_mapping(ref, mem.classes, f"member {rel}"))
        self.backend = _EnsembleBackend(self, art)
        self.manifest = m
        self.spec = m.input if m.input.size else _ensemble_spec([x.manifest for x in self.members])
        self.classes = ref
        self.crop = m.crop or self.members[0].crop
        self._buf = None
        self._cam_index = None
        self._probs_index = 0
        self.last_member_probs: np.ndarray | None = None

    def _combine(self, outs: list[np.ndarray]) -> np.ndarray:
        p = np.stack([o[:, idx] for o, idx in zip(outs, self.maps)])
        self.last_member_probs = p
        return combine(p, self.rule)

    def _member_batch(self, batch: np.ndarray, member: Classifier) -> np.ndarray:
        s, ms = self.spec, member.spec
        if (ms.dtype, ms.layout, ms.color, list(ms.size)) == ("uint8", "NHWC", s.color, list(s.size)):
            return batch
        imgs = batch[..., 0] if batch.shape[-1] == 1 else batch
        return resize_faces(imgs, ms)

    def predict(self, batch: np.ndarray, with_cam: bool = False):
        """Combined probabilities for uint8 NHWC faces at the ensemble's input size (``self.spec``)."""
        if with_cam:
            raise EdgeferError(f"{self.backend.artifact.describe()} is an ensemble: heatmaps come from single classifiers")
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self._combine([mem.predict(self._member_batch(batch, mem)) for mem in self.members])

    def __call__(self, frame: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None = None,
                 color_cache: dict | None = None, with_cam: bool = False):
        if with_cam:
            return self.predict(np.zeros((0,)), with_cam=True)
        if len(boxes) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self._combine([mem(frame, boxes, landmarks, color_cache) for mem in self.members])

    def predict_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return self._combine([mem.predict_images(images, batch_size) for mem in self.members])


# ----------------------------------------------------------------------------- writing
def _is_bundled(ref: str) -> bool:
    return ALIASES.get(ref, ref) in BUNDLED and not Path(ref).exists()


def write_ensemble(members: Sequence[Any], rule: str, directory: str | os.PathLike, name: str | None = None,
                   command: str | None = None) -> Path:
    """Write an ensemble manifest naming ``members`` (artifact references) into ``directory``.

    Every member is copied into ``directory/members/`` (bundled ones under their name, others
    as ``<i>-<name>``) with its checksummed files: a manifest names only files inside its own
    folder, so the ensemble moves as one folder and does not depend on where edgefer is installed.
    Refuses (one-line :class:`EdgeferError`) an unknown rule, fewer than two members, a
    non-classifier member, or members with different class sets.
    """
    if rule not in RULES:
        raise EdgeferError(f"unknown ensemble rule {rule!r}; choose {' or '.join(RULES)}")
    if len(members) < 2:
        raise EdgeferError(f"an ensemble needs at least 2 members, got {len(members)}")
    directory = Path(directory)
    arts = []
    for ref in members:
        art = ref if isinstance(ref, Artifact) else load(ref)
        if art.manifest.kind != "classifier":
            raise EdgeferError(f"{ref}: {art.describe()} is a {art.manifest.kind}; ensemble members must be classifiers")
        arts.append((str(ref), art))
    first = arts[0][1].manifest
    for ref, art in arts[1:]:
        class_mapping(first.classes, art.manifest.classes, f"{ref} ({art.describe()})")
    directory.mkdir(parents=True, exist_ok=True)
    rels, entries = [], []
    labels = member_labels([a.manifest for _, a in arts])
    for i, (ref, art) in enumerate(arts):
        # a manifest names only files inside its own folder (edgefer.artifact): every member is
        # copied in, with its files and their checksums, under members/<bundled name or i-name>
        slug = ALIASES.get(ref, ref) if isinstance(ref, str) and _is_bundled(ref) else f"{i}-{art.manifest.name}"
        dest = directory / "members" / "".join(c if c.isalnum() or c in "-_." else "_" for c in slug)
        dest.mkdir(parents=True, exist_ok=True)
        for r, real in art.check_paths().items():
            (dest / r).parent.mkdir(parents=True, exist_ok=True)
            if real.is_dir():  # a Core ML package
                shutil.copytree(real, dest / r, dirs_exist_ok=True)
            else:
                shutil.copy2(real, dest / r)
        shutil.copy2(art.manifest_path, dest / "manifest.json")
        src = dest / "manifest.json"
        rel = Path(os.path.relpath(src.resolve(), directory.resolve())).as_posix()
        rels.append(rel)
        mm = art.manifest
        # the member's manifest digest (which covers its model files through their own checksums)
        # and its model files' digests, so a reader of this manifest alone can tell members apart
        entries.append({"path": rel, "name": labels[i], "model": mm.name, "arch": mm.arch, "target": mm.target,
                        "precision": mm.precision, "sha256": sha256_file(src),
                        "files": dict(sorted(mm.checksums.items()))})
    mans = [a.manifest for _, a in arts]
    man = Manifest(
        name=name or f"ensemble-{rule}-" + "+".join(labels),
        kind="ensemble",
        target=_common([m.target for m in mans]),
        precision=_common([m.precision for m in mans]),
        files={"members": rels},
        input=_ensemble_spec(mans),
        output="probs",
        arch="ensemble",
        classes=list(first.classes),
        crop=first.crop,
        provenance={"command": command or f"edgefer.ensemble.write_ensemble({[str(r) for r in members]}, {rule!r})"},
        license="; ".join(sorted({m.license for m in mans})),
        extra={"ensemble": {"rule": rule, "members": entries}},
    )
    return write_artifact(man, directory)


def main(argv: list[str] | None = None) -> int:
    """``python -m edgefer.ensemble ...``: the same command as ``edgefer ensemble ...`` (kept for
    scripts written before the subcommand existed)."""
    from .cli import main as cli_main

    return cli_main(["ensemble", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
