"""ResNet-18 (He et al. 2016) adapted to small grayscale faces (48-64 px): the accuracy reference.

ImageNet's ResNet-18 shrinks its input 4x before the first residual stage (7x7 stride-2 conv
and a 3x3 stride-2 max pool), which would leave a 48x48 face at 12x12 after the stem. The
small-image adaptation used for CIFAR and FER2013 keeps the resolution instead: a 3x3 stride-1
stem conv on one (gray) channel and no max pool, then the usual four stages of two basic
blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2 -> 48, 24, 12, 6 px), global average
pool, dropout and a linear layer. About 11.2 M parameters and 1.3 GMACs at 48x48: accurate, and
far too slow for a per-face budget on a CPU (see the zoo table in train/README.md) -- it is
the teacher / upper bound, :mod:`.edgenet` is the model to ship.

Any input size from 32 px up works (the head pools globally); ``INPUT_SIZE`` is FER2013's 48.
Inputs: NCHW float ``(pixel - 128) / 64``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from edgefer.classes import FER2013

INPUT_SIZE = (48, 48)
IN_CHANNELS = 1
COLOR = "gray"
CLASSES = FER2013
MEAN = (128.0,)
STD = (64.0,)
WIDTHS = (64, 128, 256, 512)
DEPTHS = (2, 2, 2, 2)  # ResNet-18


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + skip)


class ResNet(nn.Module):
    """NCHW float in, logits [N, num_classes] out."""

    def __init__(self, num_classes: int = len(CLASSES), in_channels: int = IN_CHANNELS,
                 widths: tuple[int, ...] = WIDTHS, depths: tuple[int, ...] = DEPTHS, dropout: float = 0.2):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers = []
        c = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(c, w, 1 if i == 0 else 2)] + [BasicBlock(w, w, 1) for _ in range(d - 1)]
            layers.append(nn.Sequential(*blocks))
            c = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def build(num_classes: int = len(CLASSES), **kw) -> ResNet:
    """Registry entry ``resnet18``."""
    return ResNet(num_classes=num_classes, **kw)
