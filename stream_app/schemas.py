"""The Avro schemas of `schemas/`, loaded once, and a validator that says *where* a record is wrong.

Producers send JSON; the schemas are the contract. `avro.io.validate` only answers yes or no, and an
operator reading a DLQ header at 3 a.m. needs "drawer.email: expected null or string, got int".

Every input record is validated, so each schema is compiled once into a tree of small checks: the
walk over avro's Schema objects, comparing type names at every node, cost ~13 us a record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import avro.schema
from avro.schema import Schema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# Files that define named types others refer to come first.
_LOAD_ORDER = ("party", "subscriber.ready")

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}

# The Python types a check of each Avro type can accept (a superset): a union skips the branches
# that cannot take a value instead of letting them raise. Other types (enum) may take anything.
_ACCEPTS: dict[str, type | tuple[type, ...]] = {
    "null": type(None),
    "string": str,
    "boolean": bool,
    "int": int,
    "long": int,
    "float": (int, float),
    "double": (int, float),
    "array": list,
    "map": dict,
    "record": dict,
}

# A compiled schema: returns the value with defaults filled in, or raises _Mismatch.
Check = Callable[[Any], Any]


class SchemaError(ValueError):
    """A value does not match its topic's schema; the message names the field."""


class _Mismatch(Exception):
    """A compiled check refused a value: why, and the steps to it (innermost first).

    Each record, array or map adds its step while the exception passes through it, so the path is
    built only for a refused value, not for every field of every valid one.
    """

    def __init__(self, problem: str, step: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.steps = [] if step is None else [step]


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
    try:
        clean: dict[str, Any] = _compiled(topic)(value)
    except _Mismatch as exc:
        raise SchemaError(f"{_where(_path(exc.steps))}: {exc.problem}") from None
    return clean


@cache
def _compiled(topic: str) -> Check:
    return _compile(schema_for(topic), {})


def _path(steps: list[str]) -> str:
    """`drawer.email`, `rows[3].email` or `detail.key` from the steps, innermost first."""
    path = ""
    for step in reversed(steps):
        # A field is a bare Avro name (never starting with `[` or `.`); an index or a map key
        # carries its own separator, even at the top.
        if step[0] in "[.":
            path += step
        else:
            path = f"{path}.{step}" if path else step
    return path


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


def _compile(schema: Schema, records: dict[str, Check]) -> Check:
    """The check of `schema`; `records` holds the record types compiled so far, by full name."""
    kind = schema.type
    if kind == "record":
        return _record(schema, records)
    if kind == "union":
        return _union(schema, records)
    if kind == "array":
        return _array(_compile(schema.items, records))  # type: ignore[attr-defined]
    if kind == "map":
        return _map(_compile(schema.values, records))  # type: ignore[attr-defined]
    if kind == "enum":
        return _enum(schema.symbols)  # type: ignore[attr-defined]
    if kind in _INT_RANGE:
        return _integer(kind)
    simple = {"null": _null, "string": _string, "float": _number, "double": _number, "boolean": _boolean}
    return simple.get(kind) or _unsupported(kind)


def _record(schema: Schema, records: dict[str, Check]) -> Check:
    full_name = schema.fullname  # type: ignore[attr-defined]
    if full_name in records:
        return records[full_name]
    fields: list[tuple[str, Check, bool, Any]] = []

    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Mismatch(f"expected object, got {_type_name(value)}")
        out: dict[str, Any] = {}
        for name, check_field, has_default, default in fields:
            if name in value:
                try:
                    out[name] = check_field(value[name])
                except _Mismatch as exc:
                    exc.steps.append(name)
                    raise
            elif has_default:
                out[name] = default
            else:
                raise _Mismatch("missing required field", name)
        return out

    # Registered before its fields are compiled: a type used twice (Party) is compiled once, and a
    # recursive type finds itself.
    records[full_name] = check
    for field in schema.fields:  # type: ignore[attr-defined]
        fields.append((field.name, _compile(field.type, records), field.has_default, field.default))
    return check


def _union(schema: Schema, records: dict[str, Check]) -> Check:
    branches = schema.schemas  # type: ignore[attr-defined]
    compiled = [(_ACCEPTS.get(b.type, object), _compile(b, records)) for b in branches]
    allowed = " or ".join(b.type if b.type != "record" else b.name for b in branches)

    def check(value: Any) -> Any:
        for accepts, check_branch in compiled:
            if isinstance(value, accepts):
                try:
                    return check_branch(value)
                except _Mismatch:
                    pass
        raise _Mismatch(f"expected {allowed}, got {_type_name(value)}")

    return check


def _array(check_item: Check) -> Check:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _Mismatch(f"expected array, got {_type_name(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(check_item(item))
            except _Mismatch as exc:
                exc.steps.append(f"[{i}]")
                raise
        return out

    return check


def _map(check_value: Check) -> Check:
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Mismatch(f"expected object, got {_type_name(value)}")
        out = {}
        for key, item in value.items():
            try:
                out[key] = check_value(item)
            except _Mismatch as exc:
                exc.steps.append(f".{key}")
                raise
        return out

    return check


def _enum(symbols: list[str]) -> Check:
    def check(value: Any) -> Any:
        if value not in symbols:
            raise _Mismatch(f"{value!r} is not one of {', '.join(symbols)}")
        return value

    return check


def _integer(kind: str) -> Check:
    low, high = _INT_RANGE[kind]

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch(f"expected integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise _Mismatch(f"{value} out of range for {kind}")
        return value

    return check


def _unsupported(kind: str) -> Check:
    def check(value: Any) -> Any:
        raise _Mismatch(f"unsupported schema type {kind}")

    return check


def _null(value: Any) -> None:
    if value is not None:
        raise _Mismatch(f"expected null, got {_type_name(value)}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Mismatch(f"expected string, got {_type_name(value)}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Mismatch(f"expected number, got {_type_name(value)}")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Mismatch(f"expected boolean, got {_type_name(value)}")
    return value
