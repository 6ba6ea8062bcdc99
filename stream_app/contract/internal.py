"""The internal topics' records (stream_app.intents, stream_app.batches, email.bounced,
stream_app.trace) decoded by the stage that reads them, inside its own error handling.

Faust decodes a topic typed with a Record before the agent sees the event, and acks a value that
does not decode there: the record was gone without a trace. These topics carry raw bytes instead
(runtime/app.py), and a stage decodes each value with `decode_record`: one that fails raises
`UndecodableRecord`, and the stage puts the record on its topic's DLQ with the reason.
"""

from __future__ import annotations

from typing import TypeVar

import faust
import orjson

from stream_app.contract.schemas import SchemaError, validate

R = TypeVar("R", bound=faust.Record)


class UndecodableRecord(ValueError):
    """A value on an internal topic that is not the record its topic carries."""


def decode_record(cls: type[R], raw: bytes | None, schema: str | None = None) -> R:
    """Bytes -> the record; checked against `schema` (a topic name in schemas/) when given."""
    if not raw:
        raise UndecodableRecord("empty value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UndecodableRecord(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UndecodableRecord(f"not a {cls.__name__}: expected a JSON object, got {type(data).__name__}")
    if schema is not None:
        try:
            data = validate(schema, data)
        except SchemaError as exc:
            raise UndecodableRecord(f"schema: {exc}") from None
    try:
        return cls.from_data(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UndecodableRecord(f"not a {cls.__name__}: {exc}") from None


def encode_record(record: faust.Record) -> bytes:
    """A record as these topics carry it: the JSON of design.md's contract, no Faust metadata."""
    return record.dumps(serializer="json")
