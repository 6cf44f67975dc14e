"""The torch model zoo: one registry of architectures, by name.

Each entry maps a registry name to ``module:function`` that builds the torch module; the
module itself also defines the architecture's input spec and default classes. Imports are lazy
so that ``edgefer.train.zoo`` is cheap to import.
"""

from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "mini-xception": "edgefer.train.zoo.mini_xception:build",
    "retinaface-mnet025": "edgefer.train.zoo.retinaface:build",
    "edgenet": "edgefer.train.zoo.edgenet:build",
    "emotorch-baseline": "edgefer.train.zoo.emotorch:build_baseline",
    "emotorch-enhanced-v2": "edgefer.train.zoo.emotorch:build_enhanced_v2",
    "deep-emotion": "edgefer.train.zoo.deep_emotion:build",
    "resnet18": "edgefer.train.zoo.resnet:build",
    "mobilenetv3-small": "edgefer.train.zoo.mobilenetv3:build",
}


def names() -> list[str]:
    return sorted(REGISTRY)


def build(name: str, **kwargs):
    """Build the torch module registered as ``name``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    mod, fn = REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod), fn)(**kwargs)
