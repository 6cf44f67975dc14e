"""The shape of a bench result: the row skeleton every row starts from, and the JSON Schema
(draft 2020-12) of the whole result, versioned by ``SCHEMA`` and documented in
benchmarks/README.md.

Both live here so that a field added to a row and its place in the schema are one edit apart;
the tests validate real results against :data:`JSON_SCHEMA`.
"""

from __future__ import annotations

from typing import Any

from .config import BACKEND_OF, PRECISIONS, STATUSES, TARGETS

SCHEMA = 1  # additive changes keep the number (fields only added, none removed or retyped)


def new_row(target: str, precision: str, status: str, reason: str = "", **kw: Any) -> dict[str, Any]:
    """A row with every field of the schema, unset (None or empty) unless given."""
    row: dict[str, Any] = {
        "target": target, "precision": precision, "status": status, "reason": reason or None,
        "backend": BACKEND_OF.get(target, target), "artifact": None, "size_mb": None, "load_s": None,
        "latency_ms": {}, "throughput": None, "top1": None, "top2": None, "macro_f1": None, "top1_drop": None,
        "per_class_drop": {}, "worst_class": None, "agreement": None, "kl": None,
        "e2e_fps": None, "e2e_p99_ms": None, "decode_fps": None, "e2e_ratio": None, "cpu_ms_per_frame": None,
        "explain_ms": None,
        "explain_pct": None, "peak_mb": None,
        "executes": None, "threads": None,
    }
    row.update(kw)
    return row


def one_line(e: BaseException) -> str:
    """An error as a row's reason: its first line, at most 300 characters (a row, not a traceback)."""
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]


_NUM = {"type": ["number", "null"]}
_LAT = {"type": "object", "required": ["p50", "p90", "p99"],
        "properties": {
            **{q: {"type": "number", "minimum": 0} for q in ("p50", "p90", "p99", "mean")},
            "runs": {"type": "integer", "minimum": 1},
            # timing rounds (interleaved across rows) and the spread of their medians; written by every
            # bench since repeats were added, absent from older files of the same schema
            "repeats": {"type": "integer", "minimum": 1},
            "p50_repeats": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
            "spread": {"type": "object", "required": ["p10", "p90", "ratio"], "additionalProperties": False,
                       "properties": {"p10": {"type": "number", "minimum": 0}, "p90": {"type": "number", "minimum": 0},
                                      "ratio": {"type": ["number", "null"], "minimum": 1}}},
        },
        "dependentRequired": {"repeats": ["spread", "p50_repeats"], "spread": ["repeats"]}}
#: JSON Schema (draft 2020-12) of the bench's JSON output, schema 1 (documented in benchmarks/README.md)
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgefer bench result",
    "type": "object",
    "required": ["schema", "machine", "model", "settings", "notes", "rows"],
    "properties": {
        "schema": {"const": SCHEMA},
        "machine": {"type": "object", "required": ["cpu", "cores", "os", "versions"],
                    "properties": {"cores": {"type": ["integer", "null"]}, "versions": {"type": "object"}}},
        "model": {"type": "object", "required": ["ref"]},
        "settings": {"type": "object", "required": ["batches"],
                     "properties": {"batches": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                                    "repeats": {"type": "integer", "minimum": 1},
                                    "spread_warn": {"type": "number", "minimum": 1}}},
        "notes": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {
            "type": "object",
            "required": ["target", "precision", "status", "reason", "size_mb", "load_s", "latency_ms", "throughput",
                         "top1", "top2", "macro_f1", "top1_drop", "per_class_drop", "agreement", "kl", "e2e_fps",
                         "e2e_p99_ms", "decode_fps", "peak_mb"],
            "properties": {
                "target": {"enum": list(TARGETS) + ["ensemble"]},
                "precision": {"enum": list(PRECISIONS) + ["mixed"]},
                "status": {"enum": list(STATUSES)},
                "reason": {"type": ["string", "null"]},
                "latency_ms": {"type": "object", "patternProperties": {"^b[0-9]+$": _LAT}, "additionalProperties": False},
                "per_class_drop": {"type": "object", "additionalProperties": {"type": "number"}},
                "top1": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "top2": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                "agreement": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
                **{k: _NUM for k in ("size_mb", "load_s", "throughput", "macro_f1", "top1_drop", "kl", "e2e_fps",
                                     "e2e_p99_ms", "decode_fps", "e2e_ratio", "cpu_ms_per_frame", "peak_mb", "explain_ms",
                                     "explain_pct")},
            },
            # a row that ran has its numbers; one that did not says why
            "if": {"properties": {"status": {"const": "ok"}}},
            "then": {"properties": {"size_mb": {"type": "number"}, "load_s": {"type": "number"},
                                    "throughput": {"type": "number"}, "latency_ms": {"minProperties": 1}}},
            "else": {"properties": {"reason": {"type": "string"}}},
        }},
    },
}
