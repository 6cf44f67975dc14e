"""Checkpoints and their JSON sidecar: what ``edgefer train`` hands to ``edgefer export``.

A trained model is two files:

* ``<name>.pth`` -- a plain state dict (``torch.save(model.state_dict())``), loadable with
  ``torch.load(path, weights_only=True)``: no pickled Python objects, nothing to trust;
* ``<name>.pth.json`` -- the sidecar (the checkpoint's file name plus ``.json``), so export needs
  no ``--arch`` or ``--classes``::

    format      "edgefer-checkpoint"
    schema      1
    arch        zoo registry name, e.g. "edgenet"
    build       keyword arguments of ``zoo.build(arch, **build)``, e.g. {"num_classes": 7}
    classes     [str]  output order of the logits
    input       {"size": [h, w], "color": "gray"|"bgr"|"rgb", "mean": [..], "std": [..]}
                (pixel units; the model takes NCHW float (pixel - mean) / std)
    metrics     {"val_top1": .., "val_macro_f1": .., "epoch": .., ...} of these weights
    data        {"train": {...}, "val": {...}} provenance: path, kind, usage, sha256, count,
                class counts, soft labels
    selected_on what chose these weights (best epoch): {"kind": "carved", "fraction", "seed",
                "size", "train_size", "class_counts", "rows_sha256" (sha256 of the sorted
                file rows held out), "data_sha256"} or {"kind": "external", "path",
                "test_like", ...}; "warnings" when an --init / --teacher had seen those faces
    report      (optional) final scores on --report sets, never used to select
                (:mod:`edgefer.train.report`)
    command     the command line that trained it
    training    the full training configuration
    created     ISO 8601 time; "torch": torch version; "weights": "ema" | "raw"

Resume state (``last.pt``) is a separate, larger file (model, EMA, optimizer, history) that
also loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgefer.errors import EdgeferError

SIDECAR_FORMAT = "edgefer-checkpoint"
SIDECAR_SCHEMA = 1


def sidecar_path(ckpt: str | os.PathLike) -> Path:
    """``best.pth`` -> ``best.pth.json``."""
    p = Path(ckpt)
    return p.with_name(p.name + ".json")


def write_sidecar(ckpt: str | os.PathLike, info: dict[str, Any]) -> Path:
    d = {"format": SIDECAR_FORMAT, "schema": SIDECAR_SCHEMA, **info}
    for key in ("arch", "classes", "input"):
        if key not in d:
            raise ValueError(f"sidecar lacks {key!r}")
    path = sidecar_path(ckpt)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(d, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_sidecar(ckpt: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``ckpt`` (None when there is none); errors are one line."""
    path = sidecar_path(ckpt)
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeferError(f"cannot read checkpoint sidecar {path}: {e}") from None
    if not isinstance(d, dict) or d.get("format") != SIDECAR_FORMAT:
        raise EdgeferError(f"{path} is not an edgefer checkpoint sidecar (format {d.get('format') if isinstance(d, dict) else None!r})")
    if d.get("schema") != SIDECAR_SCHEMA:
        raise EdgeferError(f"{path}: sidecar schema {d.get('schema')!r} is not supported (this edgefer reads {SIDECAR_SCHEMA})")
    return d


def save_state_dict(model, path: str | os.PathLike) -> Path:
    """``torch.save(model.state_dict())`` atomically (a crash never leaves half a file)."""
    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # on the CPU whatever device trained it: the file loads on CPU-only machines without map_location
    torch.save({k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return path


def load_state_dict(path: str | os.PathLike) -> dict:
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)
