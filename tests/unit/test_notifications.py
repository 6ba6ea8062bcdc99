"""Intake's pure logic: decoding, validation and the notifications an event asks for."""

from __future__ import annotations

import sys
import unicodedata
from types import SimpleNamespace

import orjson
import pytest

from stream_app.contract.examples import redeemed_example
from stream_app.contract.records import SubscriberReady
from stream_app.domain.notifications import (
    Event,
    InvalidEvent,
    _has_control,
    check_email,
    check_mobile,
    decode_event,
    mask_email,
    mask_phone,
    plan,
    sms_text,
)
from tests.fixtures.events import DRAWN, drawn


def planned(event_type: str, event: Event) -> tuple[list[SubscriberReady], list[SimpleNamespace]]:
    """`plan`'s notifications as the records the senders will read them as (which they must parse to)."""
    ready, rejected = plan(event_type, event)
    return (
        [SubscriberReady.from_data(orjson.loads(orjson.dumps(r))) for r in ready],
        [SimpleNamespace(ready=r.record(), reason=r.reason) for r in rejected],
    )


def test_drawn_event_gives_drawer_email_sms_and_giver_email() -> None:
    event = decode_event("packet.drawn", orjson.dumps(DRAWN))
    ready, rejected = planned("packet.drawn", event)
    assert rejected == []
    by_template = {r.template: r for r in ready}
    assert set(by_template) == {"packet-drawn-drawer", "packet-drawn-welcome", "packet-drawn-giver"}
    drawer = by_template["packet-drawn-drawer"]
    assert drawer.notification_id == "d-000123:packet-drawn-drawer"
    assert (drawer.channel, drawer.subscriber_key, drawer.email) == ("email", "M1001", "ez@example.com")
    assert drawer.from_name == "TABLE via EZTABLE"
    assert drawer.attributes == {
        "EventId": "d-000123",
        "DrawerName": "EZ",
        "GiverName": "TABLE",
        "Amount": "250",
        "Cashback": "100",
    }
    assert by_template["packet-drawn-giver"].from_name == "EZ via EZTABLE"
    assert by_template["packet-drawn-giver"].subscriber_key == "M2002"
    sms = by_template["packet-drawn-welcome"]
    assert (sms.channel, sms.mobile, sms.from_name) == ("sms", "+886912345678", None)


def test_redeemed_event_gives_the_giver_the_cashback_email() -> None:
    raw = orjson.dumps(drawn(spent_amount=600, cashback_amount=120))
    ready, rejected = planned("packet.redeemed", decode_event("packet.redeemed", raw))
    assert rejected == []
    assert [(r.template, r.subscriber_key, r.from_name) for r in ready] == [
        ("packet-redeemed-giver", "M2002", "EZ via EZTABLE")
    ]
    assert ready[0].attributes["Cashback"] == "120"
    assert ready[0].attributes["SpentAmount"] == "600"


def test_no_mobile_means_no_sms_and_cashback_defaults_to_100() -> None:
    event = decode_event("packet.drawn", orjson.dumps(drawn(drawer__mobile=None, cashback_amount=...)))
    ready, _ = planned("packet.drawn", event)
    assert [r.channel for r in ready] == ["email", "email"]
    assert event["cashback_amount"] == 100


def test_invalid_address_of_one_party_does_not_stop_the_other() -> None:
    event = decode_event("packet.drawn", orjson.dumps(drawn(giver__email="not-an-address")))
    ready, rejected = planned("packet.drawn", event)
    assert {r.template for r in ready} == {"packet-drawn-drawer", "packet-drawn-welcome"}
    assert [r.ready.template for r in rejected] == ["packet-drawn-giver"]
    assert "invalid email" in rejected[0].reason


def test_invalid_email_still_lets_the_sms_go_without_an_email_subscriber() -> None:
    event = decode_event("packet.drawn", orjson.dumps(drawn(drawer__email=None)))
    ready, rejected = planned("packet.drawn", event)
    sms = next(r for r in ready if r.channel == "sms")
    assert sms.email is None
    assert [r.ready.template for r in rejected] == ["packet-drawn-drawer"]


def test_invalid_mobile_rejects_only_the_sms() -> None:
    event = decode_event("packet.drawn", orjson.dumps(drawn(drawer__mobile="0912-345-678")))
    ready, rejected = planned("packet.drawn", event)
    assert len(ready) == 2
    assert rejected[0].ready.channel == "sms" and "not E.164" in rejected[0].reason


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json at all", "not JSON"),
        (b"", "empty value"),
        (b"[1, 2]", "expected object"),
        (orjson.dumps(drawn(amount="250")), "amount: expected integer, got string"),
        (orjson.dumps(drawn(amount=-5)), "must not be negative"),
        (orjson.dumps(drawn(event_id=...)), "event_id: missing required field"),
        (orjson.dumps(drawn(drawer=...)), "drawer: missing required field"),
        (orjson.dumps(drawn(drawer__member_id=None)), "drawer.member_id: expected string, got null"),
        (orjson.dumps(drawn(giver__email=42)), "giver.email: expected null or string, got int"),
        (orjson.dumps(drawn(event_id="")), "event_id must be"),
        (orjson.dumps(drawn(event_id="d-1\x00")), "event_id must be"),
        (orjson.dumps(drawn(drawer__name="EZ\x1b[31m")), "drawer.name must be"),
        (orjson.dumps(drawn(drawer__name="x" * 10_000)), "drawer.name must be"),
        (
            orjson.dumps(drawn()).replace(b'"amount":250', b'"amount":123456789012345678901234567890'),
            "amount",
        ),
        (orjson.dumps(drawn(event_type="packet.exploded")), "unknown event type"),
    ],
)
def test_bad_records_are_refused_with_a_clear_reason(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message.replace("[", r"\[").replace(".", r"\.")):
        decode_event("packet.drawn", raw)


def test_unknown_topic_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="unknown event type"):
        decode_event("packet.stolen", orjson.dumps(DRAWN))


def test_names_with_quotes_emoji_and_formula_prefix_pass_through() -> None:
    name = '="O\'Brien, "Jr" 🧧'
    event = decode_event("packet.drawn", orjson.dumps(drawn(giver__name=name)))
    ready, _ = planned("packet.drawn", event)
    drawer = next(r for r in ready if r.template == "packet-drawn-drawer")
    assert drawer.from_name == f"{name} via EZTABLE"
    assert drawer.attributes["GiverName"] == name


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("陳\u3000大文", False),  # ideographic space (Zs): unprintable, yet a name
        ("Ana\xa0Lu", False),  # no-break space
        ("👨\u200d👩\u200d👧", False),  # the zero-width joiner of emoji sequences
        ("EZ\u200b", True),  # zero-width space (Cf)
        ("\ufeffEZ", True),  # byte order mark (Cf)
        ("EZ\x85", True),  # next line (Cc)
        ("EZ\u202e", True),  # right-to-left override (Cf)
    ],
)
def test_names_are_refused_for_control_and_format_characters_only(name: str, refused: bool) -> None:
    raw = orjson.dumps(drawn(drawer__name=name))
    if refused:
        with pytest.raises(InvalidEvent, match="drawer.name must be"):
            decode_event("packet.drawn", raw)
    else:
        assert decode_event("packet.drawn", raw)["drawer"]["name"] == name


def test_control_characters_are_exactly_cc_and_cf_but_the_joiner() -> None:
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        expected = unicodedata.category(ch) in {"Cc", "Cf"} and ch != "\u200d"
        assert _has_control(f"a{ch}b") is expected, hex(code)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("ez@example.com", None),
        ("someone@gmial.com", "did you mean @gmail.com?"),
        ("someone@hotmial.com", "did you mean @hotmail.com?"),
        ("someone@yaho.com", "did you mean @yahoo.com?"),
        (" ez@example.com", "spaces"),
        ("ez@", "invalid email"),
        ("ez@exa mple.com", "invalid email"),
        ("用戶@example.com", "invalid email"),
        (None, "no email address"),
    ],
)
def test_email_checks(address: str | None, problem: str | None) -> None:
    result = check_email(address)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


def test_mobile_checks() -> None:
    assert check_mobile("+886912345678") is None
    assert check_mobile("+14155552671") is None
    assert "not E.164" in (check_mobile("0912345678") or "")
    assert "too short" in (check_mobile("+8869") or "")
    assert "not a valid number" in (check_mobile("+88600000000") or "")


def test_masking_hides_addresses() -> None:
    assert mask_email("table@example.com") == "t***@example.com"
    assert mask_phone("+886912345678") == "+886***78"


def test_sms_text_names_giver_amount_and_drawer() -> None:
    text = sms_text({"GiverName": "TABLE", "Amount": "250", "DrawerName": "EZ"})
    assert "TABLE" in text and "$250" in text and "EZ" in text


# design.md §4, word for word: "the same parties, plus spent_amount and cashback_amount"; `amount`
# "may be given and is not required".
REDEEMED_AS_DESIGNED = redeemed_example()


def test_a_redemption_without_the_packet_amount_tells_the_giver() -> None:
    event = decode_event("packet.redeemed", orjson.dumps(REDEEMED_AS_DESIGNED))
    assert event["amount"] is None
    ready, rejected = planned("packet.redeemed", event)
    assert rejected == []
    (giver,) = ready
    assert (giver.template, giver.subscriber_key) == ("packet-redeemed-giver", "M2002")
    # No "Amount" at all rather than "None" in a text; the redemption's texts do not use it.
    assert giver.attributes == {
        "EventId": "r-000123",
        "DrawerName": "EZ",
        "GiverName": "TABLE",
        "Cashback": "100",
        "SpentAmount": "800",
    }


def test_a_redemption_may_still_give_the_amount_and_no_amount_may_be_negative() -> None:
    event = decode_event("packet.redeemed", orjson.dumps({**REDEEMED_AS_DESIGNED, "amount": 250}))
    assert planned("packet.redeemed", event)[0][0].attributes["Amount"] == "250"
    for field in ("amount", "spent_amount", "cashback_amount"):
        with pytest.raises(InvalidEvent, match="must not be negative"):
            decode_event("packet.redeemed", orjson.dumps({**REDEEMED_AS_DESIGNED, field: -1}))


def test_the_packet_drawn_amount_stays_required() -> None:
    with pytest.raises(InvalidEvent, match="amount: missing required field"):
        decode_event("packet.drawn", orjson.dumps(drawn(amount=...)))


def test_each_recipient_gets_their_own_language() -> None:
    raw = orjson.dumps(drawn(drawer__locale="en-US", giver__locale="zh-Hant-TW"))
    ready, _ = planned("packet.drawn", decode_event("packet.drawn", raw))
    assert {r.template: r.locale for r in ready} == {
        "packet-drawn-drawer": "en",
        "packet-drawn-welcome": "en",
        "packet-drawn-giver": "zh-TW",
    }
    raw = orjson.dumps(drawn(drawer__locale=None, giver__locale="fr", giver__email="bad"))
    ready, rejected = planned("packet.drawn", decode_event("packet.drawn", raw))
    assert {r.locale for r in ready} == {"zh-TW"} and rejected[0].ready.locale == "zh-TW"


def test_the_sms_text_follows_the_drawer_locale() -> None:
    attributes = {"GiverName": "TABLE", "Amount": "250", "DrawerName": "EZ"}
    assert sms_text(attributes).startswith("TABLE 送你 $250 紅包")
    assert sms_text(attributes, "en").startswith("TABLE sent you a $250 red envelope")
