"""RetinaFace with a MobileNet-0.25 backbone, rebuilt from the seed checkpoint's keys and shapes.

The checkpoint (``retinaface_mobilenet0.25.pth``, MIT, trained on WIDER FACE) is the face
detector of the emotion_xai seed project's live demo. Structure, as the state dict spells it:

* ``body.stage1..3``: MobileNetV1 at width 0.25. ``stage1.0`` is a full 3x3 conv; every other
  block is a depthwise 3x3 + pointwise 1x1 pair (indices 0/1 and 3/4: conv, BN; 2 and 5 are the
  activations, which carry no weights). Strides 2 at 8, 32, 64, 128 and 256 channels, so the
  three stages end at strides 8, 16 and 32 with 64, 128 and 256 channels.
* ``fpn``: 1x1 laterals to 64 channels, top-down nearest upsampling to the exact lateral size,
  3x3 merges.
* ``ssh1..3``: context modules: a 3x3 branch (32 ch) and two stacked 3x3 branches sharing a first
  conv (16 ch each), concatenated then ReLU.
* ``ClassHead/BboxHead/LandmarkHead.{0,1,2}``: 1x1 convs, two anchors per location.

Leaky ReLU slope is 0.1 wherever a layer has at most 64 output channels in the FPN / SSH and
everywhere in the backbone; the detections' parity with the ONNX export is tested.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN_BGR = (104.0, 117.0, 123.0)
MIN_SIZES = [[16, 32], [64, 128], [256, 512]]
STEPS = [8, 16, 32]
VARIANCES = [0.1, 0.2]
ANCHORS = 2


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, leaky: float | None = 0.1) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return layers


def _full(cin, cout, stride, leaky=0.1):
    return nn.Sequential(*_conv_bn(cin, cout, 3, stride, leaky=leaky))


def _dw(cin, cout, stride, leaky=0.1):
    return nn.Sequential(*_conv_bn(cin, cin, 3, stride, groups=cin, leaky=leaky), *_conv_bn(cin, cout, 1, 1, leaky=leaky))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            _full(3, 8, 2), _dw(8, 16, 1), _dw(16, 32, 2), _dw(32, 32, 1), _dw(32, 64, 2), _dw(64, 64, 1)
        )
        self.stage2 = nn.Sequential(_dw(64, 128, 2), *[_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_dw(128, 256, 2), _dw(256, 256, 1))

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return c1, c2, c3


class FPN(nn.Module):
    def __init__(self, in_channels=(64, 128, 256), out=64):
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1 = nn.Sequential(*_conv_bn(in_channels[0], out, 1, leaky=leaky))
        self.output2 = nn.Sequential(*_conv_bn(in_channels[1], out, 1, leaky=leaky))
        self.output3 = nn.Sequential(*_conv_bn(in_channels[2], out, 1, leaky=leaky))
        self.merge1 = nn.Sequential(*_conv_bn(out, out, 3, leaky=leaky))
        self.merge2 = nn.Sequential(*_conv_bn(out, out, 3, leaky=leaky))

    def forward(self, feats):
        o1 = self.output1(feats[0])
        o2 = self.output2(feats[1])
        o3 = self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return o1, o2, o3


class SSH(nn.Module):
    def __init__(self, cin=64, out=64):
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.conv3X3 = nn.Sequential(*_conv_bn(cin, out // 2, 3, leaky=None))
        self.conv5X5_1 = nn.Sequential(*_conv_bn(cin, out // 4, 3, leaky=leaky))
        self.conv5X5_2 = nn.Sequential(*_conv_bn(out // 4, out // 4, 3, leaky=None))
        self.conv7X7_2 = nn.Sequential(*_conv_bn(out // 4, out // 4, 3, leaky=leaky))
        self.conv7x7_3 = nn.Sequential(*_conv_bn(out // 4, out // 4, 3, leaky=None))

    def forward(self, x):
        a = self.conv3X3(x)
        b1 = self.conv5X5_1(x)
        b = self.conv5X5_2(b1)
        c = self.conv7x7_3(self.conv7X7_2(b1))
        return F.relu(torch.cat([a, b, c], dim=1))


class _Head(nn.Module):
    def __init__(self, cin: int, per_anchor: int):
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, ANCHORS * per_anchor, 1)

    def forward(self, x):
        y = self.conv1x1(x).permute(0, 2, 3, 1)
        return y.reshape(y.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """Returns (loc [N,A,4], class logits [N,A,2], landmarks [N,A,10]) for a BGR-minus-mean NCHW input."""

    def __init__(self):
        super().__init__()
        self.body = Backbone()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.ClassHead = nn.ModuleList([_Head(64, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(64, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(64, 10) for _ in range(3)])

    def forward(self, x):
        f1, f2, f3 = self.fpn(self.body(x))
        feats = (self.ssh1(f1), self.ssh2(f2), self.ssh3(f3))
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        cls = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, cls, ldm


class RetinaFaceExport(nn.Module):
    """uint8 NHWC BGR ``image`` -> ``loc``, ``conf`` (face probability), ``landms``: normalisation in-graph."""

    def __init__(self, model: RetinaFace):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, image):
        x = image.permute(0, 3, 1, 2).to(torch.float32) - self.mean
        loc, cls, ldm = self.model(x)
        return loc, F.softmax(cls, dim=-1)[..., 1], ldm


def load_checkpoint(obj) -> dict:
    """The plain state dict of a checkpoint (strips a DataParallel ``module.`` prefix)."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def build(weights: str | Path | None = None, **_) -> RetinaFace:
    model = RetinaFace()
    if weights is not None:
        sd = load_checkpoint(torch.load(str(weights), map_location="cpu", weights_only=True))
        model.load_state_dict(sd, strict=True)
    return model.eval()
