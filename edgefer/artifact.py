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

The full rules (types, ranges, which fields each kind needs) are in ``manifest_schema.json``
beside this module, a JSON Schema that documents the manifest; :meth:`Manifest.validate`
applies that same file (through :mod:`edgefer.schemacheck`, no ``jsonschema`` needed), plus the
rules a schema cannot say (see ``EXTRA_RULES``).

Artifacts arrive from elsewhere, so loading trusts nothing the manifest says about files:

* every path it names (``files``, ``checksums`` keys, ensemble members) must be relative and
  resolve, after symlinks, to a regular file inside the manifest's folder (an ``.mlpackage``
  model may be a folder; its entries must be regular files, no symlinks). Nothing is opened
  before its type is known, so a FIFO or ``/dev/zero`` is refused instead of read forever;
* every file named in ``files`` carries a sha256 digest in ``checksums`` (as do the files a
  runtime reads beside the model: ``model.onnx.data``, the ``.bin`` of an OpenVINO ``.xml``),
  and every digest is checked before a backend sees the file;
* the manifest itself is a regular file of at most 4 MiB, standard JSON (no NaN/Infinity,
  no duplicate keys), nested at most 32 deep.

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

import json
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from .digests import _file_kind, _norm, _open_regular, sha256_file
from .errors import EdgeferError
from .schemacheck import SchemaViolation, Validator, check_plain_json

SCHEMA = 1
FORMAT = "edgefer-artifact"
KINDS = ("classifier", "detector", "ensemble")
TARGETS = ("onnx", "openvino", "trt", "coreml")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_SUFFIXES = (".onnx", ".xml", ".engine", ".plan", ".mlpackage", ".mlmodel")

ASSETS = Path(__file__).resolve().parent / "assets"
#: the JSON Schema of the manifest (package data): documentation and the runtime's rules in one file
SCHEMA_FILE = Path(__file__).resolve().parent / "manifest_schema.json"
#: a manifest larger than this is refused before it is parsed (the bundled ones are under 8 KiB)
MAX_MANIFEST_BYTES = 4 << 20
#: deepest JSON nesting a manifest may use (the bundled ones use 6)
MAX_DEPTH = 32
#: rules the JSON Schema cannot express, applied by Manifest.validate after the schema
EXTRA_RULES = (
    "detector.steps and detector.min_sizes have the same length (one entry per feature map)",
)

#: bundled artifacts, by name and alias
BUNDLED = {
    "mini-xception": "mini_xception.json",
    "mini-xception-cam": "mini_xception_cam.json",  # same weights + the in-graph CAM output (edgefer.explain)
    "retinaface-mnet025": "retinaface_mnet025.json",
    # our edge-first classifier, trained here: the previous default (train/runs/edgenet-fer2013-s4, its
    # epochs selected on PublicTest; the face and its mirror image in one batch-2 inference), its CAM
    # twin, and the one-inference student distilled from it (train/runs/edgenet-fer2013-s5)
    "edgenet": "edgenet.json",
    "edgenet-cam": "edgenet_cam.json",
    "edgenet-fast": "edgenet_fast.json",
    # the first default selected on a carve of the training data, never on a test split
    # (train/runs/edgenet-carved-r2, then -r3-views-mix: runtime views and FERPlus votes blended into
    # FER2013's labels), its CAM twin, and the same weights in one pass (no flip)
    "edgenet2": "edgenet2.json",
    "edgenet2-cam": "edgenet2_cam.json",
    "edgenet2-fast": "edgenet2_fast.json",
    # the default: edgenet2's weights distilled from an ensemble of carve-selected students beside
    # FERPlus votes (train/runs/edgenet-carved-r6-distill-mix, -r7-distill-mix), then camera noise,
    # blur and JPEG (-r9-camera-mild), then runtime views cut from noisy frames (-r11-noisy-views),
    # with the logit adjustment chosen on the same carve folded into its output layer (rare-class recall)
    "edgenet3": "edgenet3.json",
    "edgenet3-cam": "edgenet3_cam.json",
    "edgenet3-fast": "edgenet3_fast.json",
}
ALIASES = {
    "default": "edgenet3",
    "fer": "mini-xception",
    "mini_xception": "mini-xception",
    "retinaface": "retinaface-mnet025",
}
DEFAULT_CLASSIFIER = "edgenet3"
DEFAULT_DETECTOR = "retinaface-mnet025"


def bundled_names() -> str:
    """The bundled names as one phrase for ``--help`` texts (``export``, ``explain``, ``run``):
    written from :data:`BUNDLED`, so a help text never lists two names of six again."""
    names = sorted(BUNDLED, key=lambda n: (n == DEFAULT_DETECTOR, n.endswith("-cam"), n != DEFAULT_CLASSIFIER, n))
    parts = [f"{n} (default)" if n == DEFAULT_CLASSIFIER else f"{n} (detector)" if n == DEFAULT_DETECTOR else n
             for n in names]
    cams = [n for n in names if n.endswith("-cam")]
    return ", ".join(parts) + ("; the -cam twins add the heatmap output" if cams else "")


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
        """Apply the schema's ``input`` rules (ValueError with one line)."""
        d = dict(self.__dict__)
        check_plain_json(d, MAX_DEPTH, "input")
        _validator().check(d, manifest_schema()["$defs"]["input"], "input")


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
        """A validated manifest from parsed JSON; ValueError (one line) when any rule is broken."""
        if not isinstance(d, dict):
            raise ValueError("manifest is not a JSON object")
        if d.get("format") != FORMAT:
            raise ValueError(f"not an edgefer manifest (format is {_short(d.get('format'))})")
        schema = d.get("schema")
        if schema != SCHEMA or isinstance(schema, bool):
            raise ValueError(f"manifest schema {_short(schema)} is not supported (this edgefer reads {SCHEMA})")
        _check_dict(d)
        kw = {k: v for k, v in d.items() if k != "format"}
        kw["input"] = InputSpec(**kw["input"])
        m = cls(**kw)
        m.validate()
        return m

    def validate(self) -> None:
        """Apply ``manifest_schema.json`` and :data:`EXTRA_RULES` (ValueError with one line)."""
        _check_dict(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        self.validate()
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path


def _short(value: Any, limit: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (``manifest_schema.json``), parsed once."""
    return json.loads(SCHEMA_FILE.read_text())


@lru_cache(maxsize=1)
def _validator() -> Validator:
    return Validator(manifest_schema())


def _check_dict(d: dict[str, Any]) -> None:
    """Schema and extra rules on a manifest as a JSON-like dict; ValueError with one line."""
    try:
        check_plain_json(d, MAX_DEPTH)
        _validator().check(d)
    except SchemaViolation as e:
        raise ValueError(str(e)) from None
    det = d.get("detector")
    if d.get("kind") == "detector" and isinstance(det, dict):
        if len(det["steps"]) != len(det["min_sizes"]):
            raise ValueError(
                f"detector.steps has {len(det['steps'])} entries and detector.min_sizes {len(det['min_sizes'])}: "
                "they need one each per feature map"
            )


def cache_dir() -> Path:
    """Where edgefer keeps what it builds or fetches: ``$EDGEFER_CACHE``, or ``~/.cache/edgefer``."""
    env = os.environ.get("EDGEFER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgefer"


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

    def named_files(self) -> dict[str, str]:
        """Every relative path in ``files`` (members expanded), normalised, -> its role."""
        out: dict[str, str] = {}
        for role, rel in self.manifest.files.items():
            for r in rel if isinstance(rel, list) else [rel]:
                out[_norm(str(r))] = role
        return out

    def confine(self, rel: str, role: str, allow_dir: bool = False) -> Path:
        """The real path of ``rel``: relative, inside the artifact folder after symlinks, and a
        regular file (or, with ``allow_dir``, a folder). Checked with stat only: nothing is opened."""
        what = f"{self.describe()}: file {rel!r} ({role})"
        pure = PurePosixPath(str(rel).replace("\\", "/"))
        if not str(rel) or pure.is_absolute() or ".." in pure.parts or (len(str(rel)) > 1 and str(rel)[1] == ":"):
            raise EdgeferError(f"{what} is not a relative path inside the artifact folder")
        root = self.root.resolve()
        p = root / pure
        if not os.path.lexists(p):
            raise EdgeferError(f"{what} is missing")
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise EdgeferError(f"{what} cannot be resolved ({getattr(e, 'strerror', None) or e})") from None
        if real != root and root not in real.parents:
            raise EdgeferError(f"{what} resolves to {real}, outside the artifact folder {root}")
        mode = os.stat(real).st_mode
        if not (stat.S_ISREG(mode) or (allow_dir and stat.S_ISDIR(mode))):
            raise EdgeferError(f"{what} is {_file_kind(mode)}, not a regular file")
        return real

    def check_paths(self) -> dict[str, Path]:
        """Confine every path the manifest names and require a checksum for each named file;
        returns checksum key -> real path. Cheap (stat only): runs on every load."""
        named = self.named_files()
        sums = {_norm(k): v for k, v in self.manifest.checksums.items()}
        real: dict[str, Path] = {}
        for rel, role in named.items():
            real[rel] = self.confine(rel, role, allow_dir=role == "model" and rel.endswith(".mlpackage"))
        for rel in sums:
            if rel not in real:
                real[rel] = self.confine(rel, "checksum", allow_dir=rel.endswith(".mlpackage"))
        for rel, role in named.items():
            if rel not in sums:
                raise EdgeferError(f"{self.describe()}: file {rel} ({role}) has no checksum in the manifest")
        # files a runtime reads beside the model without the manifest naming them
        model = self.manifest.files.get("model")
        if isinstance(model, str):
            m = PurePosixPath(_norm(model))
            beside = [m.with_name(m.name + ".data")] if m.suffix == ".onnx" else [m.with_suffix(".bin")] if m.suffix == ".xml" else []
            for b in beside:
                if os.path.lexists(self.root / b) and b.as_posix() not in sums:
                    raise EdgeferError(f"{self.describe()}: {b} beside the model has no checksum in the manifest")
        return {rel: real[rel] for rel in sums}

    def verify(self) -> None:
        """Check that every named file is confined to the folder, has a checksum, and matches it."""
        sums = {_norm(k): v for k, v in self.manifest.checksums.items()}
        for rel, real in self.check_paths().items():
            if sha256_file(real) != sums[rel]:
                raise EdgeferError(
                    f"{self.describe()}: {rel} does not match its manifest checksum (corrupt or replaced file)"
                )

    def describe(self) -> str:
        m = self.manifest
        return f"{m.name} [{m.kind}, {m.target}, {m.precision}]"


def write_artifact(manifest: Manifest, directory: str | os.PathLike, manifest_name: str = "manifest.json") -> Path:
    """Fill in checksums of the manifest's files (which must already be in ``directory``) and save it.

    Every file in ``files`` gets a digest (ensemble member manifests too), plus the files a
    runtime reads beside the model: ONNX external weights (``<model>.onnx.data``) and the
    ``.bin`` of an OpenVINO ``.xml``. A named file that is not there is an error: the artifact
    would not load.
    """
    directory = Path(directory)
    sums: dict[str, str] = {}
    for role, rel in manifest.files.items():
        for r in rel if isinstance(rel, list) else [rel]:
            r = _norm(str(r))
            p = directory / r
            if not p.exists():
                raise EdgeferError(f"cannot write the manifest: {r} ({role}) is not in {directory}")
            sums[r] = sha256_file(p)
            pr = PurePosixPath(r)
            for side in ([pr.with_name(pr.name + ".data")] if pr.suffix == ".onnx" else
                         [pr.with_suffix(".bin")] if pr.suffix == ".xml" else []):
                if (directory / side).is_file():
                    sums[side.as_posix()] = sha256_file(directory / side)
    manifest.checksums = sums
    return manifest.save(directory / manifest_name)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {dup!r} appears twice in one object")
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (manifests hold finite numbers only)")


def _read_manifest(path: Path) -> Manifest:
    try:
        st = os.stat(path)
    except OSError as e:
        raise EdgeferError(f"cannot read manifest {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise EdgeferError(f"manifest {path} is {_file_kind(st.st_mode)}, not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise EdgeferError(f"manifest {path} is {st.st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes")
    try:
        with os.fdopen(_open_regular(path), "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeferError(f"cannot read manifest {path}: {e}") from None
    try:
        d = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise EdgeferError(f"manifest {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    except RecursionError:
        raise EdgeferError(f"manifest {path} nests too deep to read (a manifest is at most {MAX_DEPTH} levels deep)") from None
    except ValueError as e:
        raise EdgeferError(f"manifest {path} is not valid JSON ({e})") from None
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
