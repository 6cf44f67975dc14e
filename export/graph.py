"""ONNX graph clean-ups that make one FP32 graph quantize and convert cleanly everywhere.

* :func:`simplify` folds constant subgraphs (shape arithmetic the TorchScript exporter leaves
  behind, e.g. the pad sizes of a Keras ``same`` max pool) with ONNX Runtime's basic graph
  optimisations and shape inference, via ``onnxruntime.quantization.shape_inference``.
* :func:`fold_pad_into_maxpool` turns ``Pad(value=-inf) -> MaxPool`` into one ``MaxPool``
  with ``pads``. The two are the same function (MaxPool ignores padded cells), but a calibrator
  sees ``-inf`` in the Pad output and derives an infinite INT8 scale, which wrecks the whole
  model (top-1 collapses to chance); TensorRT and OpenVINO also prefer the fused form.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from edgefer.trt_readiness import const_values

log = logging.getLogger(__name__)

#: a Pad constant at or below this is treated as -inf for max pooling
NEG_INF_THRESHOLD = -1e30


def fold_pad_into_maxpool(model) -> int:
    """Fuse ``Pad(constant -inf, spatial only) -> MaxPool`` pairs in place; returns how many."""
    from onnx import helper

    vals = const_values(model)
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in model.graph.output}
    removed = []
    for pad in list(model.graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 2:
            continue
        mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        if mode not in (b"constant", "constant"):
            continue
        pads = vals.get(pad.input[1])
        value = vals.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.array(0.0)
        if len(pad.input) > 3 and pad.input[3]:  # axes input (opset 18+): leave alone
            continue
        if pads is None or value is None or float(np.asarray(value).reshape(-1)[0]) > NEG_INF_THRESHOLD:
            continue
        pads = np.asarray(pads).reshape(-1).astype(int)
        rank = len(pads) // 2
        if rank != 4 or pads[0] or pads[1] or pads[4] or pads[5]:
            continue  # batch/channel padding is not max-pool padding
        users = consumers.get(pad.output[0], [])
        if len(users) != 1 or users[0].op_type != "MaxPool" or pad.output[0] in graph_outputs:
            continue
        pool = users[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or attrs.get("ceil_mode", 0):
            continue
        if attrs.get("dilations") and any(d != 1 for d in attrs["dilations"]):
            continue
        old = list(attrs.get("pads", [0, 0, 0, 0]))
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        kernel = attrs["kernel_shape"]
        if new[0] >= kernel[0] or new[2] >= kernel[0] or new[1] >= kernel[1] or new[3] >= kernel[1]:
            continue  # ONNX requires pads smaller than the window
        for a in list(pool.attribute):
            if a.name == "pads":
                pool.attribute.remove(a)
        pool.attribute.append(helper.make_attribute("pads", [int(v) for v in new]))
        pool.input[0] = pad.input[0]
        removed.append(pad)
    for n in removed:
        model.graph.node.remove(n)
    if removed:
        _drop_unused_initializers(model)
    return len(removed)


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)
    keep = [n for n in model.graph.node if n.op_type != "Constant" or any(o in used for o in n.output)]
    del model.graph.node[:]
    model.graph.node.extend(keep)


def simplify(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Constant-fold, infer shapes and fuse Pad/MaxPool: the graph every precision starts from."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    with tempfile.TemporaryDirectory(prefix="edgefer-simplify-") as tmp:
        mid = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(mid), skip_symbolic_shape=False)
        except Exception as e:  # symbolic shape inference fails on some graphs: retry without it
            log.info("symbolic shape inference failed (%s); retrying with ONNX shape inference only", e)
            quant_pre_process(str(src), str(mid), skip_symbolic_shape=True)
        model = onnx.load(str(mid))
    n = fold_pad_into_maxpool(model)
    if n:
        log.info("fused %d Pad(-inf) -> MaxPool pairs", n)
    # keep the original's metadata (ORT's optimiser drops it)
    orig = onnx.load(str(src), load_external_data=False)
    if not model.metadata_props and orig.metadata_props:
        model.metadata_props.extend(orig.metadata_props)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst
