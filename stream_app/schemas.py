"""The Avro schemas of `schemas/`, loaded once, and a validator that says *where* a record is wrong.

Producers send JSON; the schemas are the contract. `avro.io.validate` only answers yes or no, and an
operator reading a DLQ header at 3 a.m. needs "drawer.email: expected string or null, got int".
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import avro.schema
from avro.schema import Schema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# Files that define named types others refer to come first.
_LOAD_ORDER = ("party", "subscriber.ready")

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class SchemaError(ValueError):
    """A value does not match its topic's schema; the message names the field."""


@cache
def schemas() -> dict[str, Schema]:
    names = avro.schema.Names()
    rank = {stem: i for i, stem in enumerate(_LOAD_ORDER)}
    files = sorted(SCHEMA_DIR.glob("*.avsc"), key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    loaded: dict[str, Schema] = {}
    for path in files:
        loaded[path.stem] = avro.schema.make_avsc_object(json.loads(path.read_text()), names)
    return loaded


def schema_for(topic: str) -> Schema:
    return schemas()[topic]


def validate(topic: str, value: Any) -> dict[str, Any]:
    """Check `value` against the topic's schema; return it with defaults filled in."""
    return _check(schema_for(topic), value, "")


def _where(path: str) -> str:
    return path or "value"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "int", float: "float", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _check(schema: Schema, value: Any, path: str) -> Any:
    kind = schema.type
    if kind == "record":
        if not isinstance(value, dict):
            raise SchemaError(f"{_where(path)}: expected object, got {_type_name(value)}")
        out: dict[str, Any] = {}
        for field in schema.fields:  # type: ignore[attr-defined]
            sub = f"{path}.{field.name}" if path else field.name
            if field.name in value:
                out[field.name] = _check(field.type, value[field.name], sub)
            elif field.has_default:
                out[field.name] = field.default
            else:
                raise SchemaError(f"{sub}: missing required field")
        return out
    if kind == "union":
        branches = schema.schemas  # type: ignore[attr-defined]
        errors = []
        for branch in branches:
            try:
                return _check(branch, value, path)
            except SchemaError as exc:
                errors.append(exc)
        allowed = " or ".join(b.type if b.type != "record" else b.name for b in branches)
        raise SchemaError(f"{_where(path)}: expected {allowed}, got {_type_name(value)}")
    if kind == "null":
        if value is not None:
            raise SchemaError(f"{_where(path)}: expected null, got {_type_name(value)}")
        return None
    if kind == "string":
        if not isinstance(value, str):
            raise SchemaError(f"{_where(path)}: expected string, got {_type_name(value)}")
        return value
    if kind in _INT_RANGE:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{_where(path)}: expected integer, got {_type_name(value)}")
        low, high = _INT_RANGE[kind]
        if not low <= value <= high:
            raise SchemaError(f"{_where(path)}: {value} out of range for {kind}")
        return value
    if kind in {"float", "double"}:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(f"{_where(path)}: expected number, got {_type_name(value)}")
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise SchemaError(f"{_where(path)}: expected boolean, got {_type_name(value)}")
        return value
    if kind == "enum":
        symbols = schema.symbols  # type: ignore[attr-defined]
        if value not in symbols:
            raise SchemaError(f"{_where(path)}: {value!r} is not one of {', '.join(symbols)}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise SchemaError(f"{_where(path)}: expected array, got {_type_name(value)}")
        items = schema.items  # type: ignore[attr-defined]
        return [_check(items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise SchemaError(f"{_where(path)}: expected object, got {_type_name(value)}")
        values = schema.values  # type: ignore[attr-defined]
        return {k: _check(values, v, f"{path}.{k}") for k, v in value.items()}
    raise SchemaError(f"{_where(path)}: unsupported schema type {kind}")
