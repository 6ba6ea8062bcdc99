"""The schema validator: what it accepts, the defaults it fills in, and where it says a value is wrong.

The messages end up in DLQ headers, so every kind of Avro type is checked for its exact text.
"""

from __future__ import annotations

import copy
from typing import Any

import avro.schema
import pytest

from stream_app.contract import schemas
from stream_app.contract.schemas import SchemaError, validate

PARTY = {"member_id": "M1", "name": "EZ", "email": "ez@example.com", "mobile": None, "locale": "zh-TW"}
DRAWN = {
    "event_id": "d-1",
    "occurred_at": "2026-01-28T12:00:00+08:00",
    "packet_id": "RP-1",
    "amount": 250,
    "cashback_amount": 100,
    "drawer": PARTY,
    "giver": {**PARTY, "member_id": "M2"},
}
READY = {
    "notification_id": "d-1:packet-drawn-drawer",
    "event_id": "d-1",
    "event_type": "packet.drawn",
    "channel": "email",
    "template": "packet-drawn-drawer",
    "subscriber_key": "M1",
    "email": "ez@example.com",
    "mobile": None,
    "from_name": "TABLE via EZTABLE",
    "locale": "zh-TW",
    "attributes": {"EventId": "d-1", "DrawerName": "EZ"},
}
STATUS = {
    "notification_id": "d-1:packet-drawn-drawer",
    "event_id": "d-1",
    "channel": "email",
    "template": "packet-drawn-drawer",
    "subscriber_key": "M1",
    "status": "sent",
    "at": "2026-01-28T12:00:01+08:00",
}
# No topic has a bare boolean, null, float or unsupported field: this one has them all.
ALL_TYPES = {
    "type": "record",
    "name": "AllTypes",
    "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "nothing", "type": "null"},
        {"name": "ratio", "type": "float"},
        {"name": "blob", "type": "bytes", "default": ""},
    ],
}


@pytest.fixture(autouse=True)
def all_types_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        schemas.schemas(), "test.all-types", avro.schema.parse(str(ALL_TYPES).replace("'", '"'))
    )


def changed(value: dict[str, Any], path: str, new: Any) -> dict[str, Any]:
    """`value` with the field at `path` (`drawer.email`, `rows.1.email`) set to `new` (... deletes it)."""
    value = copy.deepcopy(value)
    *parents, leaf = path.split(".")
    target: Any = value
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if new is ...:
        del target[leaf]
    else:
        target[leaf] = new
    return value


@pytest.mark.parametrize(
    ("topic", "value", "message"),
    [
        # record
        ("packet.drawn", [1, 2], "value: expected object, got array"),
        ("packet.drawn", changed(DRAWN, "event_id", ...), "event_id: missing required field"),
        ("packet.drawn", changed(DRAWN, "drawer.member_id", ...), "drawer.member_id: missing required field"),
        ("packet.drawn", changed(DRAWN, "giver", "M2"), "giver: expected object, got string"),
        # string
        ("packet.drawn", changed(DRAWN, "drawer.name", None), "drawer.name: expected string, got null"),
        ("packet.drawn", changed(DRAWN, "packet_id", 7.5), "packet_id: expected string, got float"),
        # union: the message names every branch (a record by its name), not why each one refused
        ("packet.drawn", changed(DRAWN, "giver.email", 42), "giver.email: expected null or string, got int"),
        (
            "stream_app.intents",
            {"kind": "intent", "ready": changed(READY, "email", 5)},
            "ready: expected null or SubscriberReady, got object",
        ),
        # int and long
        ("packet.drawn", changed(DRAWN, "amount", "250"), "amount: expected integer, got string"),
        ("packet.drawn", changed(DRAWN, "amount", True), "amount: expected integer, got boolean"),
        ("packet.drawn", changed(DRAWN, "amount", 2**63), f"amount: {2**63} out of range for long"),
        ("notification.status", {**STATUS, "attempts": 2**31}, f"attempts: {2**31} out of range for int"),
        (
            "notification.status",
            {**STATUS, "attempts": -(2**31) - 1},
            f"attempts: {-(2**31) - 1} out of range for int",
        ),
        # float and double
        (
            "stream_app.intents",
            {"kind": "close", "received_at": "soon"},
            "received_at: expected number, got string",
        ),
        (
            "test.all-types",
            {"flag": True, "nothing": None, "ratio": False},
            "ratio: expected number, got boolean",
        ),
        # boolean
        ("test.all-types", {"flag": 1, "nothing": None, "ratio": 1}, "flag: expected boolean, got int"),
        # null
        ("test.all-types", {"flag": True, "nothing": 0, "ratio": 1}, "nothing: expected null, got int"),
        # a type the validator does not know
        (
            "test.all-types",
            {"flag": True, "nothing": None, "ratio": 1, "blob": ""},
            "blob: unsupported schema type bytes",
        ),
        # enum
        (
            "notification.status",
            {**STATUS, "status": "lost"},
            "status: 'lost' is not one of sent, failed, suppressed, duplicate, invalid, bounced, not_sent, "
            "unsubscribed, delivered, undeliverable",
        ),
        (
            "stream_app.intents",
            {"kind": ["intent"]},
            "kind: ['intent'] is not one of intent, confirmed, close",
        ),
        # array: the index is part of the path
        (
            "stream_app.batches",
            {"window_id": "w", "closed_at": 1.0, "rows": "x"},
            "rows: expected array, got string",
        ),
        (
            "stream_app.batches",
            {"window_id": "w", "closed_at": 1.0, "rows": [READY, changed(READY, "channel", "fax")]},
            "rows[1].channel: 'fax' is not one of email, sms",
        ),
        # map: the key is part of the path
        ("subscriber.ready", changed(READY, "attributes", []), "attributes: expected object, got array"),
        (
            "subscriber.ready",
            changed(READY, "attributes.Amount", 250),
            "attributes.Amount: expected string, got int",
        ),
        (
            "stream_app.trace",
            {"event_id": "d-1", "stage": "received", "at": "now", "detail": {"offset": 1, "tags": ["a"]}},
            "detail.tags: expected null or string or long or double or boolean, got array",
        ),
    ],
)
def test_refusals_name_the_field_and_the_problem(topic: str, value: Any, message: str) -> None:
    with pytest.raises(SchemaError) as refused:
        validate(topic, value)
    assert str(refused.value) == message


def test_a_valid_value_comes_back_with_defaults_filled_in() -> None:
    drawn = changed(changed(DRAWN, "cashback_amount", ...), "giver.locale", ...)
    assert validate("packet.drawn", drawn) == {
        **DRAWN,
        "cashback_amount": 100,
        "giver": {**PARTY, "member_id": "M2", "locale": None},
    }
    assert validate("notification.status", STATUS) == {
        **STATUS,
        "reason": "",
        "mc_request_id": "",
        "attempts": 0,
    }
    assert validate("stream_app.intents", {"kind": "close"}) == {
        "kind": "close",
        "ready": None,
        "subscriber_key": None,
        "email": None,
        "mobile": None,
        "window_id": None,
        "received_at": 0,
        "close_round": None,
        "round_size": 0,
    }


def test_fields_not_in_the_schema_are_dropped() -> None:
    assert "extra" not in validate("packet.drawn", {**DRAWN, "extra": 1})
    assert "extra" not in validate("packet.drawn", changed(DRAWN, "drawer.extra", 1))["drawer"]


def test_numbers_keep_or_take_their_schema_type() -> None:
    clean = validate("stream_app.batches", {"window_id": "w", "closed_at": 2, "rows": [READY]})
    assert clean["closed_at"] == 2.0 and isinstance(clean["closed_at"], float)
    assert clean["rows"] == [READY]
    assert validate("notification.status", {**STATUS, "attempts": -(2**31)})["attempts"] == -(2**31)


def test_a_union_takes_the_first_branch_that_accepts_the_value() -> None:
    detail = {"n": None, "s": "x", "i": 5, "f": 5.5, "b": True, "huge": 2**70}
    clean = validate(
        "stream_app.trace", {"event_id": "d-1", "stage": "received", "at": "now", "detail": detail}
    )
    # booleans are not longs or doubles; a long too big for `long` is a double
    assert clean["detail"] == {**detail, "huge": float(2**70)}
    assert [type(v) for v in clean["detail"].values()] == [type(None), str, int, float, bool, float]


@pytest.mark.parametrize(
    "topic, value",
    [
        ("packet.drawn", DRAWN),
        ("subscriber.ready", READY),
        ("notification.status", STATUS),
        ("stream_app.intents", {"kind": "intent", "ready": READY}),
    ],
)
def test_the_generated_check_takes_valid_records_as_the_tree_does(topic: str, value: Any) -> None:
    """The hot path's records are taken by the generated code, not by the fallback."""
    assert schemas._fast(topic)(copy.deepcopy(value)) == schemas._compiled(topic)(copy.deepcopy(value))


def _tree_takes(topic: str, value: Any) -> bool:
    try:
        schemas._compiled(topic)(value)
    except schemas._Mismatch:
        return False
    return True


@pytest.mark.parametrize("path", [*DRAWN, *(f"drawer.{k}" for k in PARTY)])
@pytest.mark.parametrize("new", [..., None, "x", "", 7, 2**70, -1, True, 1.5, [], {}])
def test_the_generated_check_never_takes_what_the_tree_refuses(path: str, new: Any) -> None:
    value = changed(DRAWN, path, new)
    try:
        fast = schemas._fast("packet.drawn")(copy.deepcopy(value))
    except Exception:  # refused: the tree decides, as validate() does
        return
    assert _tree_takes("packet.drawn", value)
    assert fast == schemas._compiled("packet.drawn")(copy.deepcopy(value))


def test_a_redemption_may_leave_out_the_packet_amount() -> None:
    redeemed = {**{k: v for k, v in DRAWN.items() if k != "amount"}, "spent_amount": 800}
    assert validate("packet.redeemed", redeemed)["amount"] is None
    assert validate("packet.redeemed", {**redeemed, "amount": 250})["amount"] == 250
    with pytest.raises(SchemaError, match="amount: expected null or long, got string"):
        validate("packet.redeemed", {**redeemed, "amount": "250"})


def test_a_ready_record_carries_its_locale_and_one_without_still_validates() -> None:
    before_locales = {k: v for k, v in READY.items() if k != "locale"}
    assert validate("subscriber.ready", before_locales)["locale"] is None
    assert validate("subscriber.ready", {**READY, "locale": "en"})["locale"] == "en"
