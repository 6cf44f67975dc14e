"""Deep-Emotion (Minaee, Minaei & Abdolrashidi 2019, arXiv 1902.01019): an attentional CNN.

A small CNN classifies the face *after* a spatial transformer has warped it: a localisation
network looks at the 48x48 face and predicts a 2x3 affine transform, which resamples the input
(``affine_grid`` + ``grid_sample``), so the classifier attends to the parts of the face that
matter (the paper shows it learning to focus on the mouth and eyes). As in the paper:

* classifier: conv 3x3 (10) -> conv 3x3 (10) -> max pool 2 -> ReLU -> conv 3x3 (10) ->
  conv 3x3 (10) -> BatchNorm -> max pool 2 -> ReLU -> dropout -> fc 810 -> 50 -> ReLU -> fc 50 -> K;
* localisation: conv 7x7 (8) -> max pool 2 -> ReLU -> conv 5x5 (10) -> max pool 2 -> ReLU ->
  fc 640 -> 32 -> ReLU -> fc 32 -> 6, the last layer initialised to the identity transform.

Export: ``F.affine_grid`` becomes ONNX ``AffineGrid``, which needs opset 20 (or the dynamo
exporter's decomposition). Because the input size is fixed, the sampling grid is just
``base @ theta^T`` with a constant ``base`` of pixel-centre coordinates -- the same numbers
``affine_grid(align_corners=False)`` computes -- so :class:`AffineGrid` writes it that way: one
MatMul and a Reshape, plus ``GridSample`` (opset 16). The graph then exports with the default
TorchScript exporter at opset 17 into one file and runs on ONNX Runtime and OpenVINO alike.

Inputs: NCHW float ``pixel / 255`` (MEAN 0, STD 255), gray 48x48, FER2013's 7 classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgefer.classes import FER2013

INPUT_SIZE = (48, 48)
IN_CHANNELS = 1
COLOR = "gray"
CLASSES = FER2013
MEAN = (0.0,)
STD = (255.0,)


class AffineGrid(nn.Module):
    """``F.affine_grid(theta, (N, C, H, W), align_corners=False)`` for a fixed H x W, as a MatMul."""

    def __init__(self, height: int, width: int):
        super().__init__()
        ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
        xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, height * width, 3)
        self.register_buffer("base", base, persistent=False)  # a constant, not a weight
        self.height, self.width = height, width

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        grid = torch.matmul(self.base, theta.transpose(1, 2))  # (N, H*W, 2): x, y
        return grid.reshape(-1, self.height, self.width, 2)


class DeepEmotion(nn.Module):
    """NCHW float in, logits [N, num_classes] out."""

    def __init__(self, num_classes: int = len(CLASSES), in_channels: int = IN_CHANNELS,
                 input_size: tuple[int, int] = INPUT_SIZE, dropout: float = 0.5):
        super().__init__()
        h, w = input_size
        self.conv1 = nn.Conv2d(in_channels, 10, 3)
        self.conv2 = nn.Conv2d(10, 10, 3)
        self.conv3 = nn.Conv2d(10, 10, 3)
        self.conv4 = nn.Conv2d(10, 10, 3)
        self.bn = nn.BatchNorm2d(10)
        self.dropout = nn.Dropout(dropout)
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(10 * fh * fw, 50)
        self.fc2 = nn.Linear(50, num_classes)
        self.loc = nn.Sequential(
            nn.Conv2d(in_channels, 8, 7), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(8, 10, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        )
        lh, lw = ((h - 6) // 2 - 4) // 2, ((w - 6) // 2 - 4) // 2
        self.fc_loc = nn.Sequential(nn.Linear(10 * lh * lw, 32), nn.ReLU(inplace=True), nn.Linear(32, 6))
        nn.init.zeros_(self.fc_loc[2].weight)  # start from the identity transform
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.grid = AffineGrid(h, w)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial transformer: warp ``x`` by the affine transform the localiser predicts."""
        theta = self.fc_loc(torch.flatten(self.loc(x), 1)).view(-1, 2, 3)
        return F.grid_sample(x, self.grid(theta), mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform(x)
        x = F.relu(F.max_pool2d(self.conv2(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.bn(self.conv4(self.conv3(x))), 2))
        x = self.dropout(torch.flatten(x, 1))
        return self.fc2(F.relu(self.fc1(x)))


def build(num_classes: int = len(CLASSES), **kw) -> DeepEmotion:
    """Registry entry ``deep-emotion``."""
    return DeepEmotion(num_classes=num_classes, **kw)
