"""Model artifacts: model files plus a JSON manifest that says how to feed them.

The artifact is the unit everything exchanges (export writes them, the runtime loads them, the
bench measures them). Nothing downstream guesses input size, colour, normalisation, class
names or precision: it reads the manifest. This module is the one definition of the schema.

An artifact is addressed by any of:

* a bundled name (``mini-xception``, ``retinaface-mnet025``), resolved in ``edgefer/assets``;
* a directory holding ``manifest.json``;
* a manifest ``.json`` file;
* a model file (``.onnx``, ``.xml``, ``.engine``, ``.mlpackage``) with ``<stem>.json`` or
  ``manifest.json`` beside it.

Manifest schema 1 (JSON object)::

    schema       1
    format       "edgefer-artifact"
    name         str                      human name, e.g. "mini-xception"
    kind         "classifier" | "detector" | "ensemble"
    arch         str                      zoo architecture, e.g. "mini-xception"
    target       "onnx" | "openvino" | "trt" | "coreml"
    precision    "fp32" | "fp16" | "int8"
    files        {role: relative path}    role "model" is required (ensembles: "members", a list of
                                          member manifests relative to this one; target and
                                          precision may be "mixed"; extra.ensemble.rule
                                          "mean" | "vote", see edgefer.ensemble)
    checksums    {relative path: "sha256:<hex>"}
    input        InputSpec (see below)
    output       classifier: "probs" | "logits"; detector: "retinaface"
    classes      [str]                    classifiers: output order
    crop         {"scale": float, "align": "eyes" | "none"}   classifiers: how faces are cut
    detector     {...}                    detectors: prior-box parameters
    provenance   {...}                    where the weights came from, conversion command, tools
    license      str
    calibration  {...} | null             INT8: source, count, method, seed
    extra        {...}                    e.g. extra.cam (a class activation map output, see
                                          edgefer.explain), extra.ensemble (rule, members)

InputSpec::

    name      graph input name
    dtype     "uint8"  -> raw pixels are fed; normalisation happens inside the graph
              "float32" -> the runtime feeds (pixel - mean) / std
    layout    "NHWC" | "NCHW"
    size      [height, width] or null (dynamic spatial size, detectors)
    color     "gray" | "bgr" | "rgb"
    mean, std per-channel, in pixel units (0..255); recorded for uint8 inputs too
    batch     "dynamic" or a fixed int
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgeferError

SCHEMA = 1
FORMAT = "edgefer-artifact"
KINDS = ("classifier", "detector", "ensemble")
TARGETS = ("onnx", "openvino", "trt", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_SUFFIXES = (".onnx", ".xml", ".engine", ".plan", ".mlpackage", ".mlmodel")

ASSETS = Path(__file__).resolve().parent / "assets"

#: bundled artifacts, by name and alias
BUNDLED = {
    "mini-xception": "mini_xception.json",
    "mini-xception-cam": "mini_xception_cam.json",  # same weights + the in-graph CAM output (edgefer.explain)
    "retinaface-mnet025": "retinaface_mnet025.json",
    # our edge-first classifier, trained here: the default (train/runs/edgenet-fer2013-s4, the face and
    # its mirror image in one batch-2 inference), its CAM twin, and the one-inference student distilled
    # from it (train/runs/edgenet-fer2013-s5) for machines where the second pass costs too much
    "edgenet": "edgenet.json",
    "edgenet-cam": "edgenet_cam.json",
    "edgenet-fast": "edgenet_fast.json",
}
ALIASES = {
    "default": "edgenet",
    "fer": "mini-xception",
    "mini_xception": "mini-xception",
    "retinaface": "retinaface-mnet025",
}
DEFAULT_CLASSIFIER = "edgenet"
DEFAULT_DETECTOR = "retinaface-mnet025"


@dataclass
class InputSpec:
    name: str = "image"
    dtype: str = "uint8"
    layout: str = "NHWC"
    size: list[int] | None = None
    color: str = "gray"
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    batch: Any = "dynamic"

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def validate(self) -> None:
        if self.dtype not in ("uint8", "float32"):
            raise ValueError(f"input.dtype must be uint8 or float32, not {self.dtype!r}")
        if self.layout not in ("NHWC", "NCHW"):
            raise ValueError(f"input.layout must be NHWC or NCHW, not {self.layout!r}")
        if self.color not in ("gray", "bgr", "rgb"):
            raise ValueError(f"input.color must be gray, bgr or rgb, not {self.color!r}")
        if self.size is not None and (
            len(self.size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.size)
        ):
            raise ValueError(f"input.size must be [height, width] or null, not {self.size!r}")
        for key in ("mean", "std"):
            vals = getattr(self, key)
            if len(vals) not in (1, self.channels):
                raise ValueError(f"input.{key} needs 1 or {self.channels} values")
        if any(s == 0 for s in self.std):
            raise ValueError("input.std must not contain 0")


@dataclass
class Manifest:
    name: str
    kind: str
    target: str = "onnx"
    precision: str = "fp32"
    files: dict[str, Any] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    output: str = "probs"
    arch: str | None = None
    classes: list[str] | None = None
    crop: dict[str, Any] | None = None
    detector: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = {
            "schema": self.schema,
            "format": FORMAT,
            "name": self.name,
            "kind": self.kind,
            "arch": self.arch,
            "target": self.target,
            "precision": self.precision,
            "files": self.files,
            "checksums": self.checksums,
            "input": self.input.__dict__.copy(),
            "output": self.output,
            "classes": self.classes,
            "crop": self.crop,
            "detector": self.detector,
            "provenance": self.provenance,
            "license": self.license,
            "calibration": self.calibration,
            "extra": self.extra,
        }
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        if not isinstance(d, dict):
            raise ValueError("manifest is not a JSON object")
        if d.get("format") != FORMAT:
            raise ValueError(f"not an edgefer manifest (format is {d.get('format')!r})")
        schema = d.get("schema")
        if schema != SCHEMA:
            raise ValueError(f"manifest schema {schema!r} is not supported (this edgefer reads {SCHEMA})")
        known = set(cls.__dataclass_fields__) | {"format"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown manifest keys: {', '.join(sorted(unknown))}")
        kw = {k: v for k, v in d.items() if k != "format"}
        for key in ("name", "kind"):
            if key not in kw:
                raise ValueError(f"manifest lacks {key!r}")
        inp = kw.get("input", {})
        if not isinstance(inp, dict):
            raise ValueError("manifest 'input' must be an object")
        try:
            kw["input"] = InputSpec(**inp)
        except TypeError as e:
            raise ValueError(f"manifest 'input': {e}") from None
        m = cls(**kw)
        m.validate()
        return m

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        # an ensemble of members on different targets / precisions says so: "mixed"
        mixed = ("mixed",) if self.kind == "ensemble" else ()
        if self.target not in TARGETS + mixed:
            raise ValueError(f"target must be one of {TARGETS + mixed}, not {self.target!r}")
        if self.precision not in PRECISIONS + mixed:
            raise ValueError(f"precision must be one of {PRECISIONS + mixed}, not {self.precision!r}")
        if self.kind == "ensemble":
            if not self.files.get("members"):
                raise ValueError("an ensemble manifest needs files.members")
        elif "model" not in self.files:
            raise ValueError("manifest lacks files.model")
        self.input.validate()
        if self.kind == "classifier":
            if not self.classes or not all(isinstance(c, str) for c in self.classes):
                raise ValueError("a classifier manifest needs a list of class names")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("class names must be unique")
            if self.output not in ("probs", "logits"):
                raise ValueError(f"classifier output must be probs or logits, not {self.output!r}")
            if self.input.size is None:
                raise ValueError("a classifier needs a fixed input.size")
        if self.kind == "detector" and self.output not in ("retinaface",):
            raise ValueError(f"unsupported detector output {self.output!r}")

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        self.validate()
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def cache_dir() -> Path:
    """Where edgefer keeps what it builds or fetches: ``$EDGEFER_CACHE``, or ``~/.cache/edgefer``."""
    env = os.environ.get("EDGEFER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgefer"


def sha256_file(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file, or of every file below a directory (an .mlpackage)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode())
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass
class Artifact:
    """A manifest and the directory its relative file paths are resolved against."""

    manifest: Manifest
    root: Path
    manifest_path: Path | None = None

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.files["model"]

    def path(self, role: str) -> Path:
        return self.root / self.manifest.files[role]

    def verify(self) -> None:
        """Check that every file exists and matches its checksum."""
        for role, rel in self.manifest.files.items():
            rels = rel if isinstance(rel, list) else [rel]
            for r in rels:
                if not (self.root / r).exists():
                    raise EdgeferError(f"{self.describe()}: file {r!r} ({role}) is missing")
        for rel, digest in self.manifest.checksums.items():
            p = self.root / rel
            if not p.exists():
                raise EdgeferError(f"{self.describe()}: file {rel!r} is missing")
            got = sha256_file(p)
            if got != digest:
                raise EdgeferError(
                    f"{self.describe()}: {rel} does not match its manifest checksum (corrupt or replaced file)"
                )

    def describe(self) -> str:
        m = self.manifest
        return f"{m.name} [{m.kind}, {m.target}, {m.precision}]"


def write_artifact(manifest: Manifest, directory: str | os.PathLike, manifest_name: str = "manifest.json") -> Path:
    """Fill in checksums of the manifest's files (which must already be in ``directory``) and save it."""
    directory = Path(directory)
    sums = {}
    for rel in manifest.files.values():
        for r in rel if isinstance(rel, list) else [rel]:
            p = directory / r
            if p.suffix == ".json" or not p.exists():
                continue
            sums[r] = sha256_file(p)
            # external ONNX weights travel with the model
            data = p.with_name(p.name + ".data")
            if data.exists():
                sums[data.name] = sha256_file(data)
    manifest.checksums = sums
    return manifest.save(directory / manifest_name)


def _read_manifest(path: Path) -> Manifest:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeferError(f"cannot read manifest {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise EdgeferError(f"manifest {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    try:
        return Manifest.from_dict(d)
    except (ValueError, TypeError) as e:
        raise EdgeferError(f"manifest {path} is invalid: {e}") from None


def resolve(ref: str | os.PathLike) -> Path:
    """The manifest path for an artifact reference (bundled name, directory, json or model file)."""
    s = str(ref)
    name = ALIASES.get(s, s)
    if name in BUNDLED and not Path(s).exists():
        return ASSETS / BUNDLED[name]
    p = Path(s).expanduser()
    if not p.exists():
        known = ", ".join(sorted(BUNDLED))
        raise EdgeferError(f"model {s!r} not found: give an artifact path or a bundled name ({known})")
    if p.is_dir() and p.suffix != ".mlpackage":
        m = p / "manifest.json"
        if m.exists():
            return m
        raise EdgeferError(f"{p} has no manifest.json: not an edgefer artifact")
    if p.suffix == ".json":
        return p
    if p.suffix in MODEL_SUFFIXES:
        for cand in (p.with_suffix(".json"), p.parent / "manifest.json"):
            if cand.exists():
                return cand
        raise EdgeferError(
            f"{p} has no manifest beside it ({p.with_suffix('.json').name} or manifest.json); "
            "create one with `edgefer export` so edgefer knows how to feed it"
        )
    raise EdgeferError(f"{p} is not a model artifact (expected a directory, .json or model file)")


def load(ref: str | os.PathLike, kind: str | None = None, verify: bool = True) -> Artifact:
    """Load and validate an artifact; ``kind`` rejects a detector passed as classifier and so on."""
    mpath = resolve(ref)
    m = _read_manifest(mpath)
    art = Artifact(manifest=m, root=mpath.parent, manifest_path=mpath)
    if kind is not None and m.kind != kind and not (kind == "classifier" and m.kind == "ensemble"):
        raise EdgeferError(f"{ref} is a {m.kind}, not a {kind}")
    if verify:
        art.verify()
    return art
