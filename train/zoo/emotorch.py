"""The EmoTorch seed models (MIT): a baseline CNN and "enhanced model V2", 48x48 gray, 4 classes.

Written from the checkpoints' descriptions and their state dicts' keys and shapes (their
training code is not available):

* **baseline** (``emotorch-baseline``, 6,964 parameters; a PyTorch recreation of EmoPy's
  ConvolutionalNN): ``conv1``-``conv4`` are 4x4 *valid* convolutions with 10 filters and ReLU,
  with a 2x2 max pool after ``conv2`` and after ``conv4`` (48 -> 45 -> 42 -> 21 -> 18 -> 15 -> 7),
  then flatten (10 x 7 x 7 = 490, NCHW order) and ``fc`` 490 -> 4.
* **enhanced V2** (``emotorch-enhanced-v2``, 321,892 parameters): three blocks of
  (3x3 conv, padding 1, with bias + BatchNorm + ReLU) x 2, 2x2 max pool and Dropout2d
  (0.2 / 0.3 / 0.4), with 32 / 64 / 128 channels; global average pool; ``fc1`` 128 -> 256 +
  BatchNorm1d + ReLU + Dropout(0.4); ``fc2`` 256 -> 4.

Both take a gray 48x48 face scaled to [0, 1] (pixel / 255: MEAN 0, STD 255) and return logits
in the order ``anger, fear, calm, surprise``. The ``.pth`` files are dicts holding
``model_state_dict`` and ``model_config`` (plus optimizer state that inference ignores);
:func:`load_checkpoint` unwraps them, and plain state dicts (a fine-tuned model saved by
``edgefer train``) load too. The checkpoints themselves are not part of edgefer: pass their path
(tests read them from the shared development folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgefer.classes import EMOTORCH4
from edgefer.errors import EdgeferError

INPUT_SIZE = (48, 48)
IN_CHANNELS = 1
COLOR = "gray"
CLASSES = EMOTORCH4  # anger, fear, calm, surprise
MEAN = (0.0,)
STD = (255.0,)
#: how the EmoTorch classes correspond to FER2013's (for scoring on FER2013: calm ~ neutral)
FER2013_MAP = {"anger": "angry", "fear": "fear", "calm": "neutral", "surprise": "surprise"}
CHECKPOINTS = {
    "emotorch-baseline": "baseline_convnn_4class.pth",
    "emotorch-enhanced-v2": "enhanced_v2_4class.pth",
}


class EmoTorchBaseline(nn.Module):
    """EmoPy's ConvolutionalNN as recreated by EmoTorch: NCHW [0, 1] float in, logits out."""

    def __init__(self, num_classes: int = len(CLASSES), filters: int = 10, kernel_size: int = 4,
                 in_channels: int = IN_CHANNELS, image_size: tuple[int, int] = INPUT_SIZE):
        super().__init__()
        k = kernel_size
        self.conv1 = nn.Conv2d(in_channels, filters, k)
        self.conv2 = nn.Conv2d(filters, filters, k)
        self.conv3 = nn.Conv2d(filters, filters, k)
        self.conv4 = nn.Conv2d(filters, filters, k)
        h, w = image_size
        for _ in range(2):  # two (conv, conv, pool) stages of valid convs
            h, w = (h - 2 * (k - 1)) // 2, (w - 2 * (k - 1)) // 2
        self.fc = nn.Linear(filters * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        return self.fc(torch.flatten(x, 1))


class EmoTorchEnhancedV2(nn.Module):
    """EmoTorch's enhanced model V2: NCHW [0, 1] float in, logits out."""

    def __init__(self, num_classes: int = len(CLASSES), in_channels: int = IN_CHANNELS,
                 widths: tuple[int, int, int] = (32, 64, 128), dropout: float = 0.4,
                 block_dropout: tuple[float, float, float] = (0.2, 0.3, 0.4)):
        super().__init__()
        c = in_channels
        for i, w in enumerate(widths):
            a, b = 2 * i + 1, 2 * i + 2
            setattr(self, f"conv{a}", nn.Conv2d(c, w, 3, padding=1))
            setattr(self, f"bn{a}", nn.BatchNorm2d(w))
            setattr(self, f"conv{b}", nn.Conv2d(w, w, 3, padding=1))
            setattr(self, f"bn{b}", nn.BatchNorm2d(w))
            setattr(self, f"drop{i + 1}", nn.Dropout2d(block_dropout[i]))
            c = w
        self.n_blocks = len(widths)
        self.fc1 = nn.Linear(c, 256)
        self.bn_fc1 = nn.BatchNorm1d(256)
        self.drop_fc = nn.Dropout(dropout)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_blocks):
            a, b = 2 * i + 1, 2 * i + 2
            x = F.relu(getattr(self, f"bn{a}")(getattr(self, f"conv{a}")(x)))
            x = F.relu(getattr(self, f"bn{b}")(getattr(self, f"conv{b}")(x)))
            x = getattr(self, f"drop{i + 1}")(F.max_pool2d(x, 2))
        x = x.mean(dim=(2, 3))
        x = self.drop_fc(F.relu(self.bn_fc1(self.fc1(x))))
        return self.fc2(x)


def build_baseline(num_classes: int = len(CLASSES), filters: int = 10, kernel_size: int = 4, **_: Any) -> EmoTorchBaseline:
    """Registry entry ``emotorch-baseline`` (ignores other architectures' keyword arguments)."""
    return EmoTorchBaseline(num_classes=num_classes, filters=filters, kernel_size=kernel_size)


def build_enhanced_v2(num_classes: int = len(CLASSES), **_: Any) -> EmoTorchEnhancedV2:
    """Registry entry ``emotorch-enhanced-v2``."""
    return EmoTorchEnhancedV2(num_classes=num_classes)


def load_checkpoint(obj: Any) -> tuple[dict, dict]:
    """(state dict, build kwargs) of an EmoTorch ``.pth`` (``model_state_dict`` + ``model_config``)
    or of a plain state dict. The kwargs are read from the weights' shapes, so either builder
    accepts them."""
    sd = obj.get("model_state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EdgeferError("not an EmoTorch checkpoint (model_state_dict) or a state dict")
    sd = {k: v for k, v in sd.items()}
    kw: dict[str, Any] = {}
    head = "fc.weight" if "fc.weight" in sd else "fc2.weight" if "fc2.weight" in sd else None
    if head is not None:
        kw["num_classes"] = int(sd[head].shape[0])
    if "fc.weight" in sd and "conv1.weight" in sd:  # baseline
        kw["filters"] = int(sd["conv1.weight"].shape[0])
        kw["kernel_size"] = int(sd["conv1.weight"].shape[-1])
    return sd, kw


def default_checkpoint(arch: str) -> Path:
    """Where the development checkout keeps the checkpoint (``$EDGEFER_SHARED`` or ``../shared``)."""
    root = Path(os.environ.get("EDGEFER_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    return root / "weights" / "emotorch" / CHECKPOINTS[arch]


def pretrained(arch: str = "emotorch-enhanced-v2", path: str | os.PathLike | None = None) -> nn.Module:
    """The EmoTorch model with its published weights (eval mode), from ``path`` or the shared folder."""
    p = Path(path) if path else default_checkpoint(arch)
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    sd, kw = load_checkpoint(obj)
    model = (build_baseline if arch == "emotorch-baseline" else build_enhanced_v2)(**kw)
    model.load_state_dict(sd, strict=True)
    return model.eval()
