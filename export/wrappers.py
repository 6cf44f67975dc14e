"""Torch wrappers that put a classifier's preprocessing and softmax inside the exported graph.

Every bundled classifier takes raw ``uint8`` pixels, so the runtime never needs to know a model's
normalisation: it crops, resizes to ``input.size``, converts to ``input.color`` and feeds the
bytes. :class:`ClassifierWithPreprocess` does the rest in the graph::

    image uint8 [N, H, W, C]  ->  float  ->  (x - mean) / std  ->  NCHW  ->  model  ->  softmax  ->  probs

:func:`export_classifier_onnx` exports such a wrapper (legacy TorchScript exporter, opset 17,
dynamic batch, one self-contained .onnx file) and :meth:`ClassifierWithPreprocess.input_spec`
gives the manifest's :class:`~edgefer.artifact.InputSpec` to match.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from edgefer.artifact import InputSpec

CHANNELS = {"gray": 1, "bgr": 3, "rgb": 3}


def _per_channel(values: float | Sequence[float], channels: int, what: str) -> torch.Tensor:
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * channels
    if len(vals) != channels:
        raise ValueError(f"{what} needs 1 or {channels} values, got {len(vals)}")
    if what == "std" and any(v == 0 for v in vals):
        raise ValueError("std must not contain 0")
    return torch.tensor(vals, dtype=torch.float32).view(1, channels, 1, 1)


class ClassifierWithPreprocess(nn.Module):
    """uint8 pixels in, class probabilities (or logits) out.

    ``model`` takes NCHW float ``(pixel - mean) / std`` and returns logits [N, K]. ``mean`` and
    ``std`` are in pixel units (0..255), one value or one per channel. ``color`` names the
    channel order the model was trained on (``gray``: 1 channel; ``bgr``/``rgb``: 3); the
    runtime feeds that order, the graph does not convert. ``layout`` is the layout of the
    graph's input (``NHWC``, what image libraries produce, or ``NCHW``). ``tta="flip"`` runs
    each face and its mirror image as one batch inside the graph and returns the mean of their
    probabilities (logits out: the log of that mean), so test-time augmentation costs the
    runtime one call, not two.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        color: str = "gray",
        softmax: bool = True,
        layout: str = "NHWC",
        tta: str | None = None,
    ):
        super().__init__()
        if tta not in (None, "flip"):
            raise ValueError(f"tta must be None or 'flip', not {tta!r}")
        self.tta = tta
        if color not in CHANNELS:
            raise ValueError(f"color must be one of {sorted(CHANNELS)}, not {color!r}")
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be NHWC or NCHW, not {layout!r}")
        self.model = model
        self.color = color
        self.channels = CHANNELS[color]
        self.softmax = softmax
        self.layout = layout
        self.register_buffer("mean", _per_channel(mean, self.channels, "mean"))
        self.register_buffer("std", _per_channel(std, self.channels, "std"))

    @property
    def output_name(self) -> str:
        return "probs" if self.softmax else "logits"

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (or float) pixels in the artifact's layout -> the module's NCHW normalised input."""
        x = image.to(torch.float32)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.normalise(image)
        if self.tta == "flip":
            out = self.model(torch.cat([x, torch.flip(x, [3])], 0))
            probs = torch.softmax(out, dim=1).reshape(2, -1, out.shape[1]).mean(0)
            return probs if self.softmax else torch.log(probs)
        out = self.model(x)
        return torch.softmax(out, dim=1) if self.softmax else out

    def input_spec(self, size: Sequence[int], name: str = "image", batch="dynamic") -> InputSpec:
        """The manifest input spec for this wrapper at ``size`` = (height, width)."""
        return InputSpec(
            name=name,
            dtype="uint8",
            layout=self.layout,
            size=[int(size[0]), int(size[1])],
            color=self.color,
            mean=[float(v) for v in self.mean.flatten().tolist()],
            std=[float(v) for v in self.std.flatten().tolist()],
            batch=batch,
        )

    def example_input(self, size: Sequence[int], batch: int = 1) -> torch.Tensor:
        h, w = int(size[0]), int(size[1])
        shape = (batch, h, w, self.channels) if self.layout == "NHWC" else (batch, self.channels, h, w)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def export_classifier_onnx(
    wrapper: ClassifierWithPreprocess,
    path: str | os.PathLike,
    size: Sequence[int],
    input_name: str = "image",
    opset: int = 17,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``wrapper`` to a single ONNX file with a dynamic batch axis and check it.

    The spatial size is fixed (``size`` = height, width), so any size-dependent padding in the
    model becomes constants. ``metadata`` goes into the model's ``metadata_props``.
    """

    out_name = wrapper.output_name
    path = trace_onnx(wrapper, wrapper.example_input(size, batch=2), path, [input_name], [out_name],
                      {input_name: {0: "batch"}, out_name: {0: "batch"}}, opset)
    return finish_onnx(path, metadata)


def trace_onnx(module: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike, input_names: list[str],
               output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int = 17) -> Path:
    """Trace ``module`` (in eval mode, no grad) on ``example`` into ONNX at ``path`` (folders made).

    The TorchScript exporter (``dynamo=False``): it folds size-dependent values (e.g. "same" pads)
    into constants, which is intended here since every spatial size is fixed or declared dynamic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    return path


def finish_onnx(path: Path, metadata: dict | None = None) -> Path:
    """Add ``metadata`` to an exported graph, check it fully and save it as one self-contained file."""
    import onnx

    model = onnx.load(str(path))
    if metadata:
        for k, v in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path), save_as_external_data=False)
    if path.with_name(path.name + ".data").exists():
        raise RuntimeError(f"{path}.data was written: the model should be one self-contained file")
    return path
