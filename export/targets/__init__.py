"""Export targets: one module per runtime, each a :class:`~.base.Target` (see ``base.py``).

``TARGETS`` (name -> target) is the registry the CLI's ``--target`` and the request check read;
its order is ``edgefer.artifact.TARGETS``. Adding a target is one module here and one line below.
"""

from __future__ import annotations

from .base import Target
from .coreml import CoreMLTarget
from .onnx import OnnxTarget
from .openvino import OpenVINOTarget
from .trt import TensorRTTarget

TARGETS: dict[str, Target] = {t.name: t for t in (OnnxTarget(), OpenVINOTarget(), TensorRTTarget(), CoreMLTarget())}

__all__ = ["TARGETS", "Target"]
