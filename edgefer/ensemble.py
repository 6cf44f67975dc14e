"""Ensembles as an artifact kind: several classifiers, one combined answer.

An ensemble artifact is a manifest (kind ``ensemble``) that names member artifacts by paths
relative to itself (``files.members``) and a combination rule (``extra.ensemble.rule``). The
members may be any mix of targets, backends and precisions (an FP32 ONNX, an OpenVINO INT8, a
TensorRT FP16 engine...) as long as they predict the same class set; their class *order* may
differ (each member's columns are mapped by class name). Loading it through
:class:`edgefer.classify.EmotionClassifier` is transparent: ``predict``, ``predict_images`` and
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

Write one with :func:`write_ensemble` or ``python -m edgefer.ensemble -o DIR --rule vote A B C``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .align import resize_faces
from .artifact import ALIASES, BUNDLED, Artifact, InputSpec, Manifest, load, write_artifact
from .classes import canonical
from .classify import EmotionClassifier
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
            "rule": self.owner.rule,
            "members": [m.backend.info() | {"artifact": m.backend.artifact.describe()} for m in self.owner.members],
        }


class EnsembleClassifier(EmotionClassifier):
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
        from .backends import ALIASES as BACKEND_ALIASES, REGISTRY

        art = getattr(self, "_artifact", None) or (artifact if isinstance(artifact, Artifact) else load(artifact))
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
        self.members: list[EmotionClassifier] = []
        self.maps: list[np.ndarray] = []
        for i, rel in enumerate(rels):
            mart = load(art.root / rel)
            if mart.manifest.kind != "classifier":
                raise EdgeferError(f"{art.describe()}: member {rel} is a {mart.manifest.kind}, members must be classifiers")
            want = per_member[i].get("backend") if i < len(per_member) and isinstance(per_member[i], dict) else None
            b = want or (name if name in REGISTRY and mart.manifest.target in REGISTRY[name][2] else "auto")
            self.members.append(EmotionClassifier(mart, backend=b, **backend_options))
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

    def _member_batch(self, batch: np.ndarray, member: EmotionClassifier) -> np.ndarray:
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

    Members given by path are referenced relative to the new manifest (keep them where they
    are, or move the whole tree together); bundled members (``mini-xception``) are copied into
    ``directory/members/`` so the ensemble does not depend on where edgefer is installed.
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
    for ref, art in arts:
        src = art.manifest_path
        if isinstance(ref, str) and _is_bundled(ref):
            dest = directory / "members" / ALIASES.get(ref, ref)
            dest.mkdir(parents=True, exist_ok=True)
            for rel in art.manifest.files.values():
                for r in rel if isinstance(rel, list) else [rel]:
                    shutil.copy2(art.root / r, dest / r)
            shutil.copy2(src, dest / "manifest.json")
            src = dest / "manifest.json"
        rel = Path(os.path.relpath(src.resolve(), directory.resolve())).as_posix()
        rels.append(rel)
        mm = art.manifest
        entries.append({"path": rel, "name": mm.name, "arch": mm.arch, "target": mm.target, "precision": mm.precision})
    mans = [a.manifest for _, a in arts]
    man = Manifest(
        name=name or f"ensemble-{rule}-" + "+".join(m.name for m in mans),
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
    ap = argparse.ArgumentParser(prog="python -m edgefer.ensemble",
                                 description="Write an ensemble artifact from classifier artifacts.",
                                 epilog="example: python -m edgefer.ensemble -o ens/ --rule vote mini-xception mx-int8/ edgenet-onnx/")
    ap.add_argument("members", nargs="+", help="classifier artifacts (folders, manifests, bundled names)")
    ap.add_argument("-o", "--output", required=True, type=Path, help="ensemble folder (gets manifest.json)")
    ap.add_argument("--rule", choices=RULES, default="mean", help="mean of probabilities, or max-vote (default: mean)")
    ap.add_argument("--name", default=None, help="name in the manifest")
    args = ap.parse_args(argv)
    try:
        argv = sys.argv[1:] if argv is None else argv
        path = write_ensemble(args.members, args.rule, args.output, args.name,
                              command=" ".join(["python -m edgefer.ensemble", *argv]))
        EnsembleClassifier(path)  # loads: members resolve from the written paths
    except EdgeferError as e:
        print(f"edgefer: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
