"""Every kind of malformed record ends in its DLQ or as `invalid`, and the agents keep running."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.integration.helpers import drawn_event, eventually, messages, produce, read_all, statuses, unique

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _with(**changes: Any) -> bytes:
    return orjson.dumps(drawn_event(**changes))


def _without(*path: str) -> bytes:
    event = drawn_event()
    target = event
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return orjson.dumps(event)


# (name, topic, raw value, expected fragment of error.message)
DLQ_CASES: list[tuple[str, str, bytes, str]] = [
    ("not-json", "packet.drawn", b"this is not json", "not JSON"),
    ("empty", "packet.drawn", b"", "empty value"),
    ("json-array", "packet.drawn", b"[1,2,3]", "expected object"),
    ("json-string", "packet.drawn", b'"packet"', "expected object"),
    ("json-null", "packet.drawn", b"null", "expected object"),
    ("invalid-utf8", "packet.drawn", b'{"event_id": "\xff\xfe"}', "not JSON"),
    ("truncated", "packet.drawn", _with()[:-7], "not JSON"),
    ("deep-nesting", "packet.drawn", b"[" * 5000 + b"]" * 5000, "not JSON"),
    ("missing-event-id", "packet.drawn", _without("event_id"), "event_id: missing"),
    ("missing-drawer", "packet.drawn", _without("drawer"), "drawer: missing"),
    ("missing-member-id", "packet.drawn", _without("giver", "member_id"), "giver.member_id: missing"),
    ("amount-string", "packet.drawn", _with(amount="250"), "amount: expected integer"),
    ("amount-float", "packet.drawn", _with(amount=250.5), "amount: expected integer"),
    ("amount-negative", "packet.drawn", _with(amount=-1), "negative"),
    ("amount-huge", "packet.drawn", _with().replace(b'"amount":250', b'"amount":1' + b"0" * 40), "amount"),
    ("cashback-bool", "packet.drawn", _with(cashback_amount=True), "cashback_amount: expected integer"),
    ("drawer-not-object", "packet.drawn", _with(drawer="EZ"), "drawer: expected object"),
    ("member-id-null", "packet.drawn", _with(drawer__member_id=None), "drawer.member_id: expected string"),
    (
        "email-wrong-type",
        "packet.drawn",
        _with(giver__email=["a@b.c"]),
        "giver.email: expected null or string",
    ),
    ("occurred-at-number", "packet.drawn", _with(occurred_at=1706414400), "occurred_at: expected string"),
    ("event-id-empty", "packet.drawn", _with(event_id=""), "event_id must be"),
    ("event-id-control", "packet.drawn", _with(event_id="d-1\u0000\u0007"), "event_id must be"),
    ("name-control", "packet.drawn", _with(drawer__name="EZ\u001b[2J"), "drawer.name must be"),
    ("name-huge", "packet.drawn", _with(giver__name="紅" * 200_000), "giver.name must be"),
    ("unknown-event-type", "packet.drawn", _with(event_type="packet.exploded"), "unknown event type"),
    ("redeemed-missing-spent", "packet.redeemed", _with(), "spent_amount: missing"),
    ("ready-not-json", "subscriber.ready", b"{{{", "not JSON"),
    ("ready-missing-fields", "subscriber.ready", orjson.dumps({"notification_id": "x"}), "schema"),
    ("ready-empty", "subscriber.ready", b"", "empty value"),
]


def _ready_record(template: str) -> bytes:
    return orjson.dumps(
        {
            "notification_id": f"{unique('d')}:{template}",
            "event_id": unique("d"),
            "event_type": "packet.drawn",
            "channel": "email",
            "template": template,
            "subscriber_key": "M1",
            "email": "ez@example.com",
            "mobile": None,
            "from_name": "X via EZTABLE",
            "attributes": {
                "EventId": "d-x",
                "DrawerName": "EZ",
                "GiverName": "X",
                "Amount": "1",
                "Cashback": "1",
            },
        }
    )


DLQ_CASES += [
    ("ready-bad-template", "subscriber.ready", _ready_record("packet-drawn-nope"), "unknown email template"),
    (
        "ready-wrong-channel",
        "subscriber.ready",
        _ready_record("packet-drawn-drawer").replace(b'"channel":"email"', b'"channel":"fax"'),
        "channel",
    ),
]


async def test_each_malformed_record_lands_in_its_dlq_untouched(
    kafka: Any, sandbox: Any, pipeline: Any
) -> None:
    assert len(DLQ_CASES) >= 25
    tag = unique("bad")
    header = ("trace-id", tag.encode())
    for name, topic, raw, _ in DLQ_CASES:
        await produce(kafka.bootstrap, topic, raw, key=f"{tag}-{name}".encode(), headers=[header])

    # The agents are still running: a valid event after all of that is served.
    good = drawn_event()
    await produce(kafka.bootstrap, "packet.drawn", good, key=good["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, good)) >= 3, timeout=60)

    async def dlq_records() -> dict[str, Any] | None:
        found: dict[str, Any] = {}
        for topic in ("packet.drawn.dlq", "packet.redeemed.dlq", "subscriber.ready.dlq"):
            for record in await read_all(kafka.bootstrap, topic):
                key = (record.key or b"").decode()
                if key.startswith(tag):
                    found[key.removeprefix(f"{tag}-")] = record
        missing = {name for name, *_ in DLQ_CASES} - set(found)
        return found if not missing else None

    try:
        found = await eventually(dlq_records, timeout=60)
    except AssertionError:
        seen: set[str] = set()
        for topic in ("packet.drawn.dlq", "packet.redeemed.dlq", "subscriber.ready.dlq"):
            seen |= {
                (r.key or b"").decode().removeprefix(f"{tag}-")
                for r in await read_all(kafka.bootstrap, topic)
            }
        raise AssertionError(f"not in any DLQ: {sorted({n for n, *_ in DLQ_CASES} - seen)}") from None
    for name, topic, raw, fragment in DLQ_CASES:
        record = found[name]
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        assert record.topic == f"{topic}.dlq", name
        assert record.value == raw or (raw == b"" and not record.value), name  # bytes untouched
        assert headers["trace-id"] == tag, name  # original headers kept
        assert headers["source.topic"] == topic, name
        assert int(headers["source.partition"]) >= 0 and int(headers["source.offset"]) >= 0, name
        assert headers["error.class"], name
        assert fragment in headers["error.message"], (name, headers["error.message"])


async def test_bad_addresses_end_as_invalid_outcomes(kafka: Any, sandbox: Any, pipeline: Any) -> None:
    cases = {
        "bad-email": drawn_event(drawer__email="ez@@example", drawer__mobile=None),
        "typo-domain": drawn_event(drawer__email="ez@hotmial.com", drawer__mobile=None),
        "bad-phone": drawn_event(drawer__mobile="0912-345-678"),
        "no-email": drawn_event(drawer__email=None, drawer__mobile=None),
    }
    for event in cases.values():
        await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())

    for name, event in cases.items():
        found = await eventually(lambda e=event: _statuses_at_least(kafka, e["event_id"], 1), timeout=30)
        invalid = [s for s in found if s["status"] == "invalid"]
        assert invalid, (name, found)
        expected = "packet-drawn-welcome" if name == "bad-phone" else "packet-drawn-drawer"
        assert invalid[0]["template"] == expected, name
        assert "@" not in invalid[0]["reason"].split("***")[0][1:], "address must be masked"


async def test_duplicate_event_id_is_processed_once(kafka: Any, sandbox: Any, pipeline: Any) -> None:
    event = drawn_event(drawer__mobile=None)
    for _ in range(3):
        await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, event)) >= 2, timeout=30)
    found = await eventually(lambda: _statuses_at_least(kafka, event["event_id"], 2), timeout=30)
    assert sorted(s["status"] for s in found) == ["sent", "sent"]
    assert len(messages(sandbox, event)) == 2


async def _statuses_at_least(kafka: Any, event_id: str, n: int) -> list[dict[str, Any]] | None:
    found = await statuses(kafka.bootstrap, event_id)
    return found if len(found) >= n else None
