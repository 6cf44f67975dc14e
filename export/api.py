"""``export_model``: one model -> one artifact for a target and precision (what ``edgefer export`` runs).

The public entry point. ``export_model(model, target=..., precision=..., **options)`` builds an
:class:`~edgefer.export.request.ExportRequest` (the options are its fields: ``calib``,
``calib_size``, ``val``, ``max_drop``, ``output``, ...) and runs it through
:func:`edgefer.export.pipeline.run`, whose module doc lists the stages. The names callers used
from this module before the pipeline was split out are re-exported here.
"""

from __future__ import annotations

from typing import Any

from .crops import CheckSplit, check_split, map_labels
from .output import ExportResult, default_output, tool_versions
from .pipeline import run
from .request import (
    CALIB_METHODS,
    DEFAULT_CHECK,
    INT8_VARIANTS,
    ExportRequest,
    command_line,
)


def export_model(model: str, target: str = "onnx", precision: str = "fp32", **options: Any) -> ExportResult:
    """Export ``model`` to an artifact folder for ``target`` at ``precision``.

    ``options`` are :class:`ExportRequest` fields (the CLI's options: ``calib``, ``calib_size``,
    ``calib_method``, ``calib_usage``, ``calib_detect``, ``seed``, ``arch``, ``classes``,
    ``device``, ``nncf``, ``max_drop``, ``val``, ``val_usage``, ``val_size``, ``int8_variant``,
    ``output``, ``progress``, ``check_size``, ``build_engine``).
    """
    return run(ExportRequest(source=model, target=target, precision=precision, **options))


__all__ = [
    "CALIB_METHODS",
    "DEFAULT_CHECK",
    "INT8_VARIANTS",
    "CheckSplit",
    "ExportRequest",
    "ExportResult",
    "check_split",
    "command_line",
    "default_output",
    "export_model",
    "map_labels",
    "tool_versions",
]
