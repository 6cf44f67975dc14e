"""MobileNetV3-Small (Howard et al. 2019, arXiv 1905.02244) in plain PyTorch: the seed live demo's classifier.

The seed live demo fine-tuned an ImageNet MobileNetV3-Small on RAF-DB faces at 224x224 RGB; this
module is our own implementation of the architecture from the paper (Table 2), so the zoo can
train, export and benchmark it without torchvision:

* stem: 3x3 stride-2 conv to 16 channels, BatchNorm, hard-swish;
* eleven "bneck" blocks (inverted residuals): an optional 1x1 expansion conv, a depthwise
  k x k conv (stride 1 or 2), an optional squeeze-and-excitation gate, a linear 1x1 projection;
  a residual add when the stride is 1 and the channel count is unchanged. Early blocks use ReLU,
  later ones hard-swish, as in :data:`BLOCKS`;
* squeeze-and-excitation: global average pool, 1x1 conv to ``expand / 4`` channels (rounded to a
  multiple of 8), ReLU, 1x1 conv back, hard-sigmoid, channel-wise scale;
* last stage: 1x1 conv to 576 channels, BN, hard-swish; global average pool; the head
  ``Linear(576, 1024) -> hard-swish -> dropout -> Linear(1024, num_classes)`` (the paper's two
  non-BN 1x1 convs after the pool).

BatchNorm uses eps 1e-3 and momentum 0.01 (the paper's TensorFlow defaults). The submodule
layout (``features.N.block.M``, ``classifier.0`` / ``classifier.3``) follows the common PyTorch
naming of this network, so a state dict saved from a fine-tuned torchvision
``mobilenet_v3_small`` (as the seed demo's) loads with ``strict=True``; :func:`load_checkpoint`
reads ``num_classes`` from its head.

Input: by default 224x224 RGB with ImageNet normalisation (``(pixel - MEAN) / STD``, pixel
units), as the seed demo. ``build(in_channels=1)`` makes a grayscale variant, and any input
size from 32 px up works (the head pools globally), e.g. 64x64 gray FER2013 faces: that
variant has other input constants than the module's (:data:`GRAY64`). About 1.5 M parameters
with 7 classes; about 56 MMACs at 224x224 RGB, 5.2 MMACs at 64x64 gray.

ONNX export uses only Conv, BatchNormalization (folded), Relu, HardSwish, HardSigmoid,
GlobalAveragePool, Mul, Add, Flatten and Gemm, which ONNX Runtime and OpenVINO both run.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from edgefer.classes import FER2013
from edgefer.errors import EdgeferError

INPUT_SIZE = (224, 224)  # height, width
IN_CHANNELS = 3
COLOR = "rgb"
CLASSES = FER2013  # RAF-DB's basic set is the same 7 emotions (in another order)
MEAN = (123.675, 116.28, 103.53)  # ImageNet mean and std in pixel units (0..255)
STD = (58.395, 57.12, 57.375)
#: input constants of the grayscale 64 px variant, ``build(in_channels=1)``
GRAY64 = {"size": (64, 64), "color": "gray", "mean": (127.5,), "std": (127.5,), "in_channels": 1}

STEM_CHANNELS = 16
LAST_CHANNELS = 576
HEAD_CHANNELS = 1024
DROPOUT = 0.2
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
#: Table 2 of the paper: (kernel, expansion channels, output channels, SE, activation, stride)
BLOCKS: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)


def round8(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never more than 10% below ``value``."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> optional activation; ``groups=cin`` makes it depthwise."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "relu"):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gate: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid -> scale the input."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    """One bneck block: [1x1 expand] -> k x k depthwise -> [SE] -> 1x1 linear projection (+ input)."""

    def __init__(self, cin: int, kernel: int, expand: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, not {stride}")
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != cin:
            layers.append(ConvBNAct(cin, expand, 1, act=act))
        layers.append(ConvBNAct(expand, expand, kernel, stride, groups=expand, act=act))
        if se:
            layers.append(SqueezeExcite(expand, round8(expand / 4)))
        layers.append(ConvBNAct(expand, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3Small(nn.Module):
    """NCHW normalised float in, logits [N, num_classes] out."""

    def __init__(
        self,
        num_classes: int = len(CLASSES),
        in_channels: int = IN_CHANNELS,
        blocks: Sequence[tuple[int, int, int, bool, str, int]] = BLOCKS,
        dropout: float = DROPOUT,
    ):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [ConvBNAct(in_channels, STEM_CHANNELS, 3, 2, act="hswish")]
        c = STEM_CHANNELS
        for kernel, expand, cout, se, act, stride in blocks:
            layers.append(InvertedResidual(c, kernel, expand, cout, se, act, stride))
            c = cout
        layers.append(ConvBNAct(c, LAST_CHANNELS, 1, act="hswish"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(LAST_CHANNELS, HEAD_CHANNELS),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(HEAD_CHANNELS, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build(num_classes: int = len(CLASSES), in_channels: int = IN_CHANNELS, **kw: Any) -> MobileNetV3Small:
    """Registry entry ``mobilenetv3-small``: 224 px RGB by default, ``in_channels=1`` for gray."""
    return MobileNetV3Small(num_classes=num_classes, in_channels=in_channels, **kw)


def load_checkpoint(obj: Any) -> tuple[dict, dict]:
    """(state dict, build kwargs) of a plain or nested state dict of this network (ours, or a
    torchvision ``mobilenet_v3_small`` one): ``num_classes`` and ``in_channels`` are read from
    the weights' shapes."""
    sd = obj
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict", "model", "net", "weights", "ema"):
            if isinstance(obj.get(key), dict):
                sd = obj[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EdgeferError("not a MobileNetV3-Small state dict")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):  # DataParallel, torch.compile
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    sd = out
    if "classifier.3.weight" not in sd or "features.0.0.weight" not in sd:
        raise EdgeferError("not a MobileNetV3-Small state dict (no features.0.0 / classifier.3 weights)")
    kw = {"num_classes": int(sd["classifier.3.weight"].shape[0]),
          "in_channels": int(sd["features.0.0.weight"].shape[1])}
    return sd, kw
