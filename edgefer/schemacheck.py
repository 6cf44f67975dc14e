"""A small reader of JSON Schema, enough to apply ``manifest_schema.json`` at run time.

The manifest schema is one file that documents the manifest and is checked by the test suite
with the ``jsonschema`` package. The runtime must not need that package (a Jetson or a Mac
runs edgefer with numpy, OpenCV, ONNX Runtime and click only), so this module applies the
same file itself. It knows the subset of draft 2020-12 the schema uses and refuses any other
keyword, so the schema cannot silently grow a rule the runtime would ignore.

Messages are one line, name the field with a dotted path (``crop.scale``, ``input.size[0]``)
and say what was expected. A schema node may carry ``x-message`` (an annotation that
``jsonschema`` ignores) to say in words what its rules mean.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: keywords this reader applies
APPLIED = {
    "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "items", "minItems", "maxItems", "uniqueItems",
    "properties", "required", "additionalProperties", "propertyNames", "minProperties",
    "maxProperties", "anyOf", "allOf", "not", "if", "then", "else", "$ref",
}
#: keywords that only annotate (ignored here as by any validator)
ANNOTATIONS = {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples", "x-message"}

_TYPE_WORDS = {
    "object": "an object", "array": "a list", "string": "a string", "number": "a number",
    "integer": "an integer", "boolean": "true or false", "null": "null",
}


class SchemaViolation(ValueError):
    """A value that does not satisfy the schema; the message is one line."""


def json_type(value: Any) -> str:
    """The JSON type name of a Python value as json.loads makes them (tuples read as lists)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    t = json_type(value)
    if name == "number":
        return t in ("integer", "number")
    if name == "integer":
        # JSON Schema: 1.0 is an integer; the runtime wants Python ints for sizes and steps, and
        # json.loads gives ints for "1", so a manifest that writes 1.0 is refused here (stricter)
        return t == "integer"
    return t == name


def _canon(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal (1 == 1.0, True != 1)."""
    t = json_type(value)
    if t == "boolean":
        return ("b", value)
    if t in ("integer", "number"):
        return ("n", float(value))
    if t == "array":
        return ("a", tuple(_canon(v) for v in value))
    if t == "object":
        return ("o", tuple(sorted((k, _canon(v)) for k, v in value.items())))
    return (t, value)


def _short(value: Any, limit: int = 60) -> str:
    try:
        s = json.dumps(value)
    except (TypeError, ValueError):
        s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _sub(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Validator:
    """Applies one schema document (with its ``$defs``) to values; ``check`` raises on the first error."""

    def __init__(self, schema: dict[str, Any]):
        self.root = schema
        self._compiled: dict[str, re.Pattern] = {}
        self._audit(schema, "#")

    # ------------------------------------------------------------------ schema sanity
    def _audit(self, node: Any, where: str) -> None:
        if isinstance(node, bool):
            return
        if not isinstance(node, dict):
            raise TypeError(f"schema node {where} is not an object")
        unknown = set(node) - APPLIED - ANNOTATIONS
        if unknown:
            raise TypeError(f"schema node {where} uses keywords this reader does not apply: {sorted(unknown)}")
        for key in ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else"):
            if key in node:
                self._audit(node[key], f"{where}/{key}")
        for key in ("properties", "$defs"):
            for name, sub in node.get(key, {}).items():
                self._audit(sub, f"{where}/{key}/{name}")
        for key in ("anyOf", "allOf"):
            for i, sub in enumerate(node.get(key, [])):
                self._audit(sub, f"{where}/{key}/{i}")
        if "pattern" in node:
            self._compiled[node["pattern"]] = re.compile(node["pattern"])
        if "$ref" in node:
            self._resolve(node["$ref"])

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise TypeError(f"only local references are supported, not {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    # ------------------------------------------------------------------ checking
    def check(self, value: Any, schema: dict[str, Any] | None = None, path: str = "") -> None:
        """Raise :class:`SchemaViolation` with one line when ``value`` breaks ``schema`` (default: the root)."""
        err = self.error(value, self.root if schema is None else schema, path)
        if err is not None:
            raise SchemaViolation(err)

    def error(self, value: Any, schema: Any, path: str) -> str | None:
        """The first violation of ``schema`` by ``value`` at ``path`` as a message, or None."""
        if schema is True:
            return None
        if schema is False:
            return f"{path or 'the manifest'} is not allowed"
        err = self._error(value, schema, path)
        if err is not None and "x-message" in schema:
            msg = schema["x-message"]
            return f"{path} {msg}" if msg.split(" ", 1)[0] in ("must", "needs", "is", "has") and path else msg
        return err

    def _error(self, value: Any, s: dict[str, Any], path: str) -> str | None:
        where = path or "the manifest"
        if "$ref" in s:
            err = self.error(value, self._resolve(s["$ref"]), path)
            if err:
                return err
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_is_type(value, t) for t in types):
                want = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
                return f"{where} must be {want}, not {_TYPE_WORDS.get(json_type(value), json_type(value))}"
        if "const" in s and _canon(value) != _canon(s["const"]):
            return f"{where} must be {_short(s['const'])}, not {_short(value)}"
        if "enum" in s and _canon(value) not in {_canon(v) for v in s["enum"]}:
            return f"{where} must be one of {', '.join(_short(v) for v in s['enum'])}, not {_short(value)}"
        t = json_type(value)
        if t in ("integer", "number"):
            if not math.isfinite(value):
                return f"{where} must be a finite number, not {value}"
            if "minimum" in s and value < s["minimum"]:
                return f"{where} must be >= {s['minimum']}, not {value}"
            if "exclusiveMinimum" in s and not value > s["exclusiveMinimum"]:
                return f"{where} must be > {s['exclusiveMinimum']}, not {value}"
            if "maximum" in s and value > s["maximum"]:
                return f"{where} must be <= {s['maximum']}, not {value}"
            if "exclusiveMaximum" in s and not value < s["exclusiveMaximum"]:
                return f"{where} must be < {s['exclusiveMaximum']}, not {value}"
        elif t == "string":
            if "minLength" in s and len(value) < s["minLength"]:
                return f"{where} must not be empty" if s["minLength"] == 1 else f"{where} needs at least {s['minLength']} characters"
            if "maxLength" in s and len(value) > s["maxLength"]:
                return f"{where} must be at most {s['maxLength']} characters long"
            if "pattern" in s and not self._compiled[s["pattern"]].search(value):
                return f"{where} {_short(value)} does not match {s['pattern']}"
        elif t == "array":
            if "minItems" in s and len(value) < s["minItems"]:
                return f"{where} must have at least {s['minItems']} item{'s' if s['minItems'] != 1 else ''}, not {len(value)}"
            if "maxItems" in s and len(value) > s["maxItems"]:
                return f"{where} must have at most {s['maxItems']} item{'s' if s['maxItems'] != 1 else ''}, not {len(value)}"
            if s.get("uniqueItems") and len({_canon(v) for v in value}) != len(value):
                return f"{where} has duplicate items"
            if "items" in s:
                for i, item in enumerate(value):
                    err = self.error(item, s["items"], _sub(path, i))
                    if err:
                        return err
        elif t == "object":
            for key in s.get("required", []):
                if key not in value:
                    return f"{where} lacks {key!r}" if path else f"manifest lacks {key!r}"
            if "minProperties" in s and len(value) < s["minProperties"]:
                return f"{where} must not be empty" if s["minProperties"] == 1 else f"{where} needs at least {s['minProperties']} entries"
            if "maxProperties" in s and len(value) > s["maxProperties"]:
                return f"{where} must have at most {s['maxProperties']} entries, not {len(value)}"
            if "propertyNames" in s:
                for key in value:
                    err = self.error(key, s["propertyNames"], f"{where} key {_short(key)}")
                    if err:
                        return err
            props = s.get("properties", {})
            for key, sub in props.items():
                if key in value:
                    err = self.error(value[key], sub, _sub(path, key))
                    if err:
                        return err
            if "additionalProperties" in s:
                extra = [k for k in value if k not in props]
                if s["additionalProperties"] is False and extra:
                    names = ", ".join(sorted(str(k) for k in extra))
                    return f"unknown keys in {path}: {names}" if path else f"unknown manifest keys: {names}"
                for key in extra:
                    err = self.error(value[key], s["additionalProperties"], _sub(path, key))
                    if err:
                        return err
        for sub in s.get("allOf", []):
            err = self.error(value, sub, path)
            if err:
                return err
        if "anyOf" in s:
            errs = [self.error(value, sub, path) for sub in s["anyOf"]]
            if all(errs):
                return f"{where}: {' / '.join(dict.fromkeys(e for e in errs if e))}"
        if "not" in s and self.error(value, s["not"], path) is None:
            return f"{where} is not allowed as {_short(value)}"
        if "if" in s:
            branch = s.get("then") if self.error(value, s["if"], path) is None else s.get("else")
            if branch is not None:
                err = self.error(value, branch, path)
                if err:
                    return err
        return None


def check_plain_json(value: Any, max_depth: int = 32, what: str = "manifest") -> None:
    """Refuse what JSON cannot carry or what would hurt a reader: NaN/Inf, non-string keys,
    non-JSON types, and nesting deeper than ``max_depth`` (walked without recursion)."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        v, depth, path = stack.pop()
        if depth > max_depth:
            raise SchemaViolation(f"{what} nests deeper than {max_depth} levels (at {path or 'the top'})")
        t = json_type(v)
        if t == "number":
            if not math.isfinite(v):
                raise SchemaViolation(f"{path or what} is {v}: a {what} holds finite numbers only")
        elif t == "object":
            for k, sub in v.items():
                if not isinstance(k, str):
                    raise SchemaViolation(f"{what} key {k!r} at {path or 'the top'} is not a string")
                stack.append((sub, depth + 1, _sub(path, k)))
        elif t == "array":
            stack.extend((sub, depth + 1, _sub(path, i)) for i, sub in enumerate(v))
        elif t not in ("null", "boolean", "integer", "string"):
            raise SchemaViolation(f"{path or what} is a {t}, which JSON cannot hold")
