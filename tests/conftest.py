"""Shared fixtures: real data from ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# tests compare outputs across runs: keep `--backend auto` on its first-available rule (ONNX Runtime
# for .onnx) unless a test asks for the measured choice (tests/test_backend_auto.py does)
os.environ.setdefault("EDGEFER_AUTO", "first")
SHARED = Path(os.environ.get("EDGEFER_SHARED", ROOT.parent / "shared"))


def shared_file(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{rel} not found under {SHARED} (set EDGEFER_SHARED to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def publictest():
    """FER2013 PublicTest arrays: images (N,48,48) uint8, labels (N,) int64."""
    d = np.load(shared_file("data/fer2013/publictest.npz"))
    return {"images": d["images"], "labels": d["labels"], "classes": [str(c) for c in d["classes"]]}


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return shared_file("data/photos")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return shared_file("data/video")
