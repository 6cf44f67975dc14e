"""FP16 ONNX: float16 weights and arithmetic, with the model's uint8/float32 interface kept.

``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)`` converts every
float tensor and puts casts at float32 graph inputs/outputs. Our graphs start with
``Cast(uint8 -> float)``: the converter marks that Cast's output float16 but leaves its ``to``
attribute at FLOAT, and ONNX Runtime then refuses the model ("Type (tensor(float16)) of
output arg ... does not match expected type"). :func:`convert` repairs such casts so the
uint8 pixels are cast straight to float16.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def fix_casts(model) -> int:
    """Set ``to`` of Casts whose declared output is float16 but whose attribute says float."""
    from onnx import TensorProto

    declared = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
    }
    fixed = 0
    for n in model.graph.node:
        if n.op_type != "Cast":
            continue
        for a in n.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT and declared.get(n.output[0]) == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT16
                fixed += 1
    return fixed


def convert(src: str | Path, dst: str | Path) -> Path:
    """Write a float16 copy of ``src`` whose inputs and outputs keep their types."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    with warnings.catch_warnings(record=True) as caught:
        # weights below float16's range are clamped to +-1e-7 (one warning each): count them instead
        warnings.simplefilter("always")
        m16 = float16.convert_float_to_float16(model, keep_io_types=True)
    clamped = sum("will be truncated" in str(w.message) for w in caught)
    if clamped:
        log.info("float16: %d tiny weights clamped to +-1e-7", clamped)
    fix_casts(m16)
    onnx.checker.check_model(m16)
    onnx.save(m16, str(dst))
    return Path(dst)
