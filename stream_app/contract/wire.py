"""Avro in the Confluent wire format, beside JSON on the input topics (design.md §4: "a producer may
opt into Avro").

A record's first byte tells the two apart: JSON text never starts with a NUL byte, the wire format
always does (`0x00`, then the writer's schema id as 4 bytes big-endian, then the Avro binary body).
The body is decoded with the schema the registry holds under that id; the resulting dict then goes
through the same validation as a JSON event (`domain.notifications.decode_event`), so a producer's
schema may differ from ours (other field order, extra fields, a missing field with our default) and
the event is judged by our schema all the same.

`AvroSchemas` is the cache by id the intake decodes with, synchronously per record: the registry
client (`contract.registry`) fills it for a whole fetched batch before the batch is handled. The body
is decoded by fastavro: ~7 us for design.md's example event, against ~50 us with the `avro` package
(which stays the library for schema work) and ~1 us for orjson on the same event as JSON
(bench/avro_decode.py). An Avro event costs the intake ~6 us more than its JSON twin.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from typing import Any

from fastavro import parse_schema, schemaless_reader

MAGIC = 0
HEADER_SIZE = 5  # magic byte + 4-byte schema id
# An id the registry did not know is asked for again after this long: it may have been registered
# since (a producer registers before it produces, but a record can overtake a lagging registry).
UNKNOWN_RETRY_SECONDS = 30.0


class WireFormatError(ValueError):
    """An Avro-framed record this service cannot decode; the message says why (it goes to the DLQ)."""


def is_avro(raw: bytes) -> bool:
    """Whether `raw` is framed as Avro (first byte 0x00) rather than JSON."""
    return bool(raw) and raw[0] == MAGIC


def schema_id(raw: bytes) -> int:
    """The writer's schema id of an Avro-framed record; WireFormatError when the header is cut short."""
    if len(raw) < HEADER_SIZE:
        raise WireFormatError(
            f"Avro wire format: {len(raw)} byte(s), shorter than the 5-byte header "
            "(magic byte 0x00, 4-byte schema id)"
        )
    return int.from_bytes(raw[1:HEADER_SIZE], "big")


def schema_ids(values: Iterable[bytes | None]) -> set[int]:
    """The schema ids of the Avro-framed values among `values` (JSON and short ones are skipped)."""
    return {int.from_bytes(v[1:HEADER_SIZE], "big") for v in values if v and v[0] == MAGIC and len(v) >= 5}


def frame(schema_id: int, body: bytes) -> bytes:
    """The wire format of an Avro binary `body` written with schema `schema_id` (producers, tests)."""
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big") + body


class AvroSchemas:
    """Writer schemas by id, parsed for fastavro, and the ids known to be missing (with why).

    `source` names where the schemas come from, for the DLQ reason of an id it does not have."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source
        self._parsed: dict[int, Any] = {}
        self._missing: dict[int, tuple[str, float]] = {}  # id -> (reason, when found missing)

    def __contains__(self, schema_id: int) -> bool:
        return schema_id in self._parsed

    def add(self, schema_id: int, schema: str | dict[str, Any]) -> None:
        """Keep the schema of `schema_id` (its JSON text or its parsed JSON); a schema that does not
        parse is kept as missing, with the parser's reason."""
        try:
            parsed = parse_schema(json.loads(schema) if isinstance(schema, str) else schema)
        except Exception as exc:
            self.missing(schema_id, f"its schema does not parse: {exc}")
            return
        self._parsed[schema_id] = parsed
        self._missing.pop(schema_id, None)

    def missing(self, schema_id: int, reason: str) -> None:
        """Record that `schema_id` cannot be had now (unknown to the registry, unparsable)."""
        self._missing[schema_id] = (reason, time.monotonic())

    def wanted(self, ids: Iterable[int], now: float | None = None) -> list[int]:
        """Of `ids`, those to ask the registry for: neither held nor recently found missing."""
        now = time.monotonic() if now is None else now
        return sorted(
            i
            for i in set(ids)
            if i not in self._parsed
            and (i not in self._missing or now - self._missing[i][1] >= UNKNOWN_RETRY_SECONDS)
        )

    def decode(self, raw: bytes) -> Any:
        """The value an Avro-framed record holds; WireFormatError saying why it cannot be had."""
        sid = schema_id(raw)
        parsed = self._parsed.get(sid)
        if parsed is None:
            raise WireFormatError(self._why_missing(sid))
        body = io.BytesIO(raw)
        body.seek(HEADER_SIZE)
        try:
            value = schemaless_reader(body, parsed, None)
        except Exception as exc:  # EOFError for a cut body, UnicodeDecodeError, ... from fastavro
            problem = "record cut short" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
            raise WireFormatError(f"Avro body does not decode with schema id {sid}: {problem}") from None
        extra = len(raw) - body.tell()
        if extra:
            raise WireFormatError(f"Avro body of schema id {sid} is followed by {extra} unread byte(s)")
        return value

    def _why_missing(self, sid: int) -> str:
        if sid in self._missing:
            return f"Avro schema id {sid}: {self._missing[sid][0]}"
        if self.source is None:
            return f"Avro schema id {sid}: no schema registry is configured (SCHEMA_REGISTRY_URL)"
        return f"Avro schema id {sid}: not fetched from the schema registry at {self.source}"
