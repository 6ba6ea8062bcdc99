"""The decode of one input event, JSON against Avro, in one process on the same event.

`measure()` times, per event: orjson on the event's JSON (what the intake does for a JSON record),
and the Avro binary body of the same event (the Confluent wire format's payload, contract/wire.py)
decoded with the `avro` package's DatumReader and with fastavro's schemaless_reader, both with the
writer's schema already parsed (the intake caches it by id). Validation, the same for all three,
is not timed. `python -m bench.avro_decode` prints the figures as one JSON object.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import avro.io
import avro.schema
import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from stream_app.contract.examples import drawn_example
from stream_app.contract.registry import topic_schemas
from stream_app.contract.wire import HEADER_SIZE, AvroSchemas, frame

TOPIC = "packet.drawn"


def _per_event_us(decode: Callable[[], Any], events: int, rounds: int) -> float:
    """The best of `rounds` runs of `events` decodes, in microseconds per decode."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(events):
            decode()
        best = min(best, time.perf_counter() - start)
    return best / events * 1e6


def measure(events: int = 20_000, rounds: int = 5) -> dict[str, float]:
    """{"orjson_us_per_event", "avro_us_per_event", "fastavro_us_per_event", ...} on design.md's example."""
    event = drawn_example()
    schema_json = topic_schemas([TOPIC])[f"{TOPIC}-value"]
    parsed = parse_schema(json.loads(schema_json))
    out = io.BytesIO()
    schemaless_writer(out, parsed, event)
    body = out.getvalue()
    text = orjson.dumps(event)
    wire = frame(1, body)

    reader = avro.io.DatumReader(avro.schema.parse(schema_json))
    cache = AvroSchemas("bench")
    cache.add(1, schema_json)

    def with_avro() -> Any:
        buffer = io.BytesIO(wire)
        buffer.seek(HEADER_SIZE)
        return reader.read(avro.io.BinaryDecoder(buffer))

    def with_fastavro() -> Any:
        buffer = io.BytesIO(wire)
        buffer.seek(HEADER_SIZE)
        return schemaless_reader(buffer, parsed, None)

    decoders: dict[str, Callable[[], Any]] = {
        "orjson": lambda: orjson.loads(text),
        "avro": with_avro,
        "fastavro": with_fastavro,
        # What the intake runs: header, cache look-up by id, fastavro, trailing-bytes check.
        "wire": lambda: cache.decode(wire),
    }
    for decode in decoders.values():  # all four must agree on the event before any is timed
        assert decode() == event
    # The avro package is ~10x slower: fewer events, or it alone takes the bench's time.
    counts = {"orjson": events, "avro": max(events // 10, 1), "fastavro": events, "wire": events}
    figures = {
        f"{name}_us_per_event": round(_per_event_us(decode, counts[name], rounds), 3)
        for name, decode in decoders.items()
    }
    figures["json_bytes"] = len(text)
    figures["avro_bytes"] = len(wire)
    return figures


if __name__ == "__main__":
    print(json.dumps(measure()))
