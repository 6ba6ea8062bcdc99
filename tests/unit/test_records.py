"""`build`: the same record as Faust's constructor, without its per-field cost."""

from __future__ import annotations

from typing import Any

import faust
import pytest

from stream_app.records import PacketDrawn, PacketRedeemed, Party, SubscriberReady, build

PARTY: dict[str, Any] = {
    "member_id": "M1",
    "name": "EZ",
    "email": "ez@example.com",
    "mobile": None,
    "locale": None,
}
EVENT: dict[str, Any] = {
    "event_id": "d-1",
    "occurred_at": "2026-01-28T12:00:00+08:00",
    "packet_id": "RP-1",
    "amount": 250,
    "cashback_amount": 100,
    "drawer": Party(**PARTY),
    "giver": Party(**{**PARTY, "member_id": "M2"}),
}
READY: dict[str, Any] = {
    "notification_id": "d-1:packet-drawn-drawer",
    "event_id": "d-1",
    "event_type": "packet.drawn",
    "channel": "email",
    "template": "packet-drawn-drawer",
    "subscriber_key": "M1",
    "email": "ez@example.com",
    "mobile": None,
    "from_name": "TABLE via EZTABLE",
    "attributes": {"EventId": "d-1", "DrawerName": "EZ"},
}


class Coerced(faust.Record, coerce=True, include_metadata=False):
    count: int


def same(built: faust.Record, faust_made: faust.Record) -> None:
    assert type(built) is type(faust_made)
    assert list(built.__dict__.items()) == list(faust_made.__dict__.items())
    assert repr(built) == repr(faust_made)
    assert built.dumps(serializer="json") == faust_made.dumps(serializer="json")
    assert built == faust_made


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Party, PARTY),
        (PacketDrawn, EVENT),
        (PacketRedeemed, {**EVENT, "spent_amount": 600}),
        (SubscriberReady, READY),
        (SubscriberReady, {**READY, "email": None, "from_name": None}),
    ],
)
def test_build_makes_what_the_constructor_makes(cls: type[faust.Record], values: dict[str, Any]) -> None:
    same(build(cls, values), cls(**values))


def test_none_for_a_field_with_a_default_is_the_default() -> None:
    event = {**EVENT, "cashback_amount": None}
    same(build(PacketDrawn, event), PacketDrawn(**event))
    assert build(PacketDrawn, event).cashback_amount == 100


def test_a_party_given_as_a_mapping_is_read_as_a_party() -> None:
    event = {**EVENT, "drawer": PARTY}
    same(build(PacketDrawn, event), PacketDrawn(**event))
    assert build(PacketDrawn, event).drawer == Party(**PARTY)


def test_missing_or_unknown_fields_go_through_faust() -> None:
    short = {k: v for k, v in EVENT.items() if k != "cashback_amount"}
    same(build(PacketDrawn, short), PacketDrawn(**short))
    with pytest.raises(TypeError, match="event_id"):
        build(PacketDrawn, {k: v for k, v in EVENT.items() if k != "event_id"})
    with pytest.raises(TypeError, match="unexpected argument: colour"):
        build(PacketDrawn, {**EVENT, "colour": "red"})


def test_a_record_that_coerces_goes_through_faust() -> None:
    assert build(Coerced, {"count": "5"}).count == 5
