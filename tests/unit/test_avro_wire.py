"""Avro in the Confluent wire format beside JSON (issue 20): framing, decoding by schema id, the DLQ
reasons, and the registry client's answers to what a registry can say (no registry here: an
httpx.MockTransport plays it; tests/integration/test_avro_registry.py runs the real one)."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from fastavro import parse_schema, schemaless_writer

from stream_app.contract import wire
from stream_app.contract.examples import redeemed_example
from stream_app.contract.registry import RegistryError, SchemaRegistry, topic_schemas
from stream_app.contract.wire import AvroSchemas, WireFormatError, frame, schema_id, schema_ids
from stream_app.domain.notifications import InvalidEvent, decode_event
from stream_app.stages.intake.batch import IntakeBatch
from stream_app.stages.intake.known_subscribers import KnownSubscribers
from stream_app.stages.intake.seen import SeenMarks
from tests.fixtures.events import drawn

DRAWN_ID = 7
REDEEMED_ID = 8


def ours(topic: str) -> str:
    """The self-contained schema create-topics registers for `topic`."""
    return topic_schemas([topic])[f"{topic}-value"]


def encode(schema: str | dict[str, Any], value: dict[str, Any], sid: int) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(json.loads(schema) if isinstance(schema, str) else schema), value)
    return frame(sid, out.getvalue())


@pytest.fixture
def cache() -> AvroSchemas:
    schemas = AvroSchemas("http://registry.test/apis/ccompat/v7")
    schemas.add(DRAWN_ID, ours("packet.drawn"))
    schemas.add(REDEEMED_ID, ours("packet.redeemed"))
    return schemas


def test_the_first_byte_tells_avro_from_json() -> None:
    raw = frame(258, b"body")
    assert raw[:5] == b"\x00\x00\x00\x01\x02" and raw[5:] == b"body"
    assert wire.is_avro(raw) and not wire.is_avro(orjson.dumps(drawn())) and not wire.is_avro(b"")
    assert schema_id(raw) == 258
    assert schema_ids([raw, orjson.dumps(drawn()), None, b"\x00\x00", frame(3, b"")]) == {258, 3}


def test_an_avro_event_decodes_to_its_json_twin(cache: AvroSchemas) -> None:
    for topic, sid, event in (
        ("packet.drawn", DRAWN_ID, drawn()),
        ("packet.redeemed", REDEEMED_ID, redeemed_example()),
    ):
        avro = decode_event(topic, encode(ours(topic), event, sid), cache)
        assert avro == decode_event(topic, orjson.dumps(event))
        assert avro["drawer"]["member_id"] == "M1001"


def test_the_writer_schema_may_differ_and_the_event_is_judged_by_ours(cache: AvroSchemas) -> None:
    """A producer's own schema: fields in another order, one of its own, cashback_amount left out
    (ours defaults it to 100): the decoded dict is validated like JSON."""
    schema = json.loads(ours("packet.drawn"))
    fields = {f["name"]: f for f in schema["fields"]}
    del fields["cashback_amount"]
    schema["fields"] = [
        fields["drawer"],  # where Party is defined: before the giver, which names it
        fields["giver"],
        *(fields[n] for n in ("packet_id", "event_id", "occurred_at", "amount")),
        {"name": "channel", "type": "string"},
    ]
    cache.add(99, schema)
    event = {**drawn(cashback_amount=...), "channel": "app"}
    decoded = decode_event("packet.drawn", encode(schema, event, 99), cache)
    assert decoded == decode_event("packet.drawn", orjson.dumps(drawn()))


def test_a_decoded_event_meets_the_same_checks_as_json(cache: AvroSchemas) -> None:
    with pytest.raises(InvalidEvent, match="amounts must not be negative"):
        decode_event("packet.drawn", encode(ours("packet.drawn"), drawn(amount=-5), DRAWN_ID), cache)
    with pytest.raises(InvalidEvent, match="drawer.name"):
        decode_event("packet.drawn", encode(ours("packet.drawn"), drawn(drawer__name=" "), DRAWN_ID), cache)
    # A packet.redeemed schema's record on packet.drawn: decoded, then refused by packet.drawn's schema.
    wrong = encode(ours("packet.redeemed"), redeemed_example(amount=None), REDEEMED_ID)
    with pytest.raises(InvalidEvent, match="schema: amount"):
        decode_event("packet.drawn", wrong, cache)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00", r"1 byte\(s\), shorter than the 5-byte header"),
        (b"\x00\x00\x00\x07", r"4 byte\(s\), shorter than the 5-byte header"),
        (frame(DRAWN_ID, b""), "does not decode with schema id 7: record cut short"),
        ("cut", "does not decode with schema id 7: record cut short"),
        ("trailing", r"schema id 7 is followed by 3 unread byte\(s\)"),
        (frame(DRAWN_ID, b"\x06\xff\xfe\xfd"), "does not decode with schema id 7: .*UnicodeDecodeError"),
        (frame(12345, b"\x02x"), "schema id 12345: not fetched from the schema registry at http://registry"),
    ],
)
def test_undecodable_records_say_why(cache: AvroSchemas, raw: bytes | str, reason: str) -> None:
    whole = encode(ours("packet.drawn"), drawn(), DRAWN_ID)
    value = {"cut": whole[:-4], "trailing": whole + b"abc"}[raw] if isinstance(raw, str) else raw
    with pytest.raises(InvalidEvent, match=reason):
        decode_event("packet.drawn", value, cache)


def test_without_a_registry_an_avro_record_is_refused_saying_so() -> None:
    raw = encode(ours("packet.drawn"), drawn(), DRAWN_ID)
    with pytest.raises(
        InvalidEvent, match="schema id 7: no schema registry is configured .SCHEMA_REGISTRY_URL."
    ):
        decode_event("packet.drawn", raw)
    # JSON is untouched by all this.
    assert decode_event("packet.drawn", orjson.dumps(drawn()))["event_id"] == "d-000123"


def test_missing_ids_are_asked_for_again_after_a_while() -> None:
    cache = AvroSchemas("http://r")
    cache.missing(5, "unknown to the schema registry at http://r")
    cache.add(6, ours("packet.drawn"))
    assert cache.wanted([5, 6, 7]) == [7]
    later = time.monotonic() + wire.UNKNOWN_RETRY_SECONDS + 1
    assert cache.wanted([5, 6, 7], now=later) == [5, 7]
    with pytest.raises(WireFormatError, match="schema id 5: unknown to the schema registry at http://r"):
        cache.decode(frame(5, b""))


def test_a_schema_that_does_not_parse_is_kept_as_missing_with_the_reason() -> None:
    cache = AvroSchemas("http://r")
    cache.add(4, '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nowhere"}]}')
    assert 4 not in cache
    with pytest.raises(WireFormatError, match="schema id 4: its schema does not parse"):
        cache.decode(frame(4, b"\x00"))


def test_a_batch_sends_an_unknown_id_to_the_dlq_with_the_reason_and_goes_on(cache: AvroSchemas) -> None:
    class Outbox:
        def __init__(self) -> None:
            self.records: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []

        def add(self, topic: str, key: bytes | None, value: bytes, **kw: Any) -> None:
            self.records.append((topic, key, value, dict(kw.get("headers") or [])))

    tp = TopicPartition("packet.drawn", 0)
    unknown = frame(404, b"\x02x")
    good = encode(ours("packet.drawn"), drawn(), DRAWN_ID)
    records = [
        ConsumerRecord(tp.topic, 0, offset, 0, 0, b"RP-1", value, None, 4, len(value), [])
        for offset, value in ((10, unknown), (11, good))
    ]
    outbox = Outbox()
    seen = SeenMarks("unused:9092", "app-intake-seen", 4)
    seen.load(tp, {})
    batch = IntakeBatch(outbox, seen, KnownSubscribers("unused:9092", "app"), cache)  # type: ignore[arg-type]
    batch.handle(tp, records)
    ((_, key, value, headers),) = [r for r in outbox.records if r[0] == "packet.drawn.dlq"]
    assert (key, value, headers["source.offset"]) == (b"RP-1", unknown, b"10")
    assert headers["error.message"].startswith(b"Avro schema id 404: not fetched from the schema registry")
    assert seen.of(tp) == {"d-000123": 11}  # the Avro event after it was handled


# --- the registry client, against a registry played by httpx.MockTransport


def registry(handler: Any) -> SchemaRegistry:
    return SchemaRegistry("http://registry.test/apis/ccompat/v7/", transport=httpx.MockTransport(handler))


async def test_prefetch_fetches_each_unseen_id_once_and_notes_unknown_ones() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path.endswith("/schemas/ids/7"):
            return httpx.Response(200, json={"schema": ours("packet.drawn")})
        return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})

    client = registry(handler)
    try:
        await client.prefetch([7, 9, 7])
        await client.prefetch([7, 9])  # 7 held, 9 known missing: nothing asked
    finally:
        await client.aclose()
    assert sorted(asked) == ["/apis/ccompat/v7/schemas/ids/7", "/apis/ccompat/v7/schemas/ids/9"]
    assert decode_event("packet.drawn", encode(ours("packet.drawn"), drawn(), 7), client.schemas)
    with pytest.raises(
        InvalidEvent, match="schema id 9: unknown to the schema registry at http://registry.test"
    ):
        decode_event("packet.drawn", frame(9, b""), client.schemas)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"schema": "{}", "schemaType": "PROTOBUF"}, "a PROTOBUF schema, not Avro"),
        (
            {"schema": ours("packet.drawn"), "references": [{"name": "Party", "subject": "p", "version": 1}]},
            "has references",
        ),
    ],
)
async def test_schemas_this_service_cannot_use_are_noted_as_missing(
    answer: dict[str, Any], reason: str
) -> None:
    client = registry(lambda request: httpx.Response(200, json=answer))
    try:
        await client.prefetch([3])
    finally:
        await client.aclose()
    with pytest.raises(WireFormatError, match=f"schema id 3: .*{reason}"):
        client.schemas.decode(frame(3, b""))


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (httpx.Response(503, text="starting"), "unavailable .* HTTP 503: starting"),
        (
            httpx.Response(404, text="<html>no such page</html>"),
            "HTTP 404 .* is SCHEMA_REGISTRY_URL the API's base",
        ),
        (None, "unavailable .* ConnectError"),
    ],
)
async def test_a_registry_that_cannot_be_asked_fails_the_prefetch(
    response: httpx.Response | None, problem: str
) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if response is None:
            raise httpx.ConnectError("connection refused", request=request)
        return response

    client = registry(handler)
    client.attempts = 2
    try:
        with pytest.raises(RegistryError, match=problem):
            await client.prefetch([1])
    finally:
        await client.aclose()
    assert 1 not in client.schemas and client.schemas.wanted([1]) == [1]  # asked again next batch
    assert len(calls) == (1 if response is not None and response.status_code == 404 else 2)


async def test_register_posts_the_schema_under_the_subject() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"id": 21})

    client = registry(handler)
    try:
        assert await client.register("packet.drawn-value", ours("packet.drawn")) == 21
    finally:
        await client.aclose()
    ((path, body),) = seen
    assert path == "/apis/ccompat/v7/subjects/packet.drawn-value/versions"
    # Self-contained: Party written out in place, so a registry without references takes it.
    assert '"name": "Party"' in body["schema"] and parse_schema(json.loads(body["schema"]))


def test_every_topic_schema_is_registered_under_its_value_subject() -> None:
    # A DLQ holds the original bytes, whatever they were: no schema of its own.
    subjects = topic_schemas(["packet.drawn", "packet.redeemed", "packet.drawn.dlq"])
    assert sorted(subjects) == ["packet.drawn-value", "packet.redeemed-value"]
