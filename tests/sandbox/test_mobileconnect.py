"""MobileConnect delivers only to numbers subscribed to the message's keyword (reference §4).

The sandbox's only behaviour: a number not subscribed is accepted (202) but gets nothing.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mc_sandbox.templates import SMS_DEFINITIONS, TX_DEFINITIONS, render
from stream_app.domain.notifications import sms_text
from stream_app.domain.templates import localized
from tests.fixtures.sandbox import SandboxProcess

from .helpers import client, get_json, wait_for

SEND = "sms/v1/messageContact/packet-drawn-welcome/send"
DELIVERIES = "sms/v1/messageContact/packet-drawn-welcome/deliveries/{}"
CODE, KEYWORD = "88588", "EZTABLE"


class Mobile:
    def __init__(self, sp: SandboxProcess) -> None:
        self.base = sp.http_url
        self.http = client(self.base)

    def send(self, *numbers: str, **options: Any) -> str:
        r = self.http.post(
            SEND, json={"mobileNumbers": list(numbers), "Override": True, "messageText": "hi", **options}
        )
        assert r.status_code == 202, r.text  # accepted whatever the subscriptions: MC checks them later
        return str(r.json()["tokenId"])

    def delivered(self, token_id: str) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            d: dict[str, Any] = self.http.get(DELIVERIES.format(token_id)).json()
            return d if d["status"] == "Finished" else None

        return wait_for(finished, what="the send time")

    def numbers_reached(self, token_id: str) -> set[str]:
        return {t["mobileNumber"] for t in self.delivered(token_id)["tracking"]}

    def mo(self, text: str, *numbers: str, code: str = CODE) -> httpx.Response:
        return self.http.post(
            "sms/v1/queueMO", json={"mobileNumbers": list(numbers), "shortCode": code, "messageText": text}
        )

    def subscriptions(self) -> dict[str, str]:
        return {s["mobileNumber"]: s["status"] for s in get_json(self.base, "_sandbox/mobile-subscriptions")}


@pytest.fixture
def mobile(clean_truthful: SandboxProcess) -> Mobile:
    return Mobile(clean_truthful)


def test_a_number_never_subscribed_is_accepted_but_not_delivered(mobile: Mobile) -> None:
    token_id = mobile.send("886900000001")
    d = mobile.delivered(token_id)
    assert d["count"] == 0 and d["tracking"] == []  # the count leaves unsubscribed numbers out
    (msg,) = get_json(mobile.base, "_sandbox/messages?channel=sms")
    assert msg["status"] == "not_delivered"
    assert get_json(mobile.base, "_sandbox/send-log")["SMSSendLog"] == []
    assert get_json(mobile.base, "_sandbox/stats")["sms_not_delivered"] == 1


def test_subscribe_with_the_keyword_subscribes(mobile: Mobile) -> None:
    token_id = mobile.send("886900000002", "886900000003", Subscribe=True, keyword="eztable")
    assert mobile.numbers_reached(token_id) == {"886900000002", "886900000003"}
    assert mobile.delivered(token_id)["count"] == 2
    assert mobile.subscriptions() == {"886900000002": "Subscribed", "886900000003": "Subscribed"}
    again = mobile.send("886900000002")  # subscribed now: no option needed
    assert mobile.numbers_reached(again) == {"886900000002"}
    statuses = {m["status"] for m in get_json(mobile.base, "_sandbox/messages?channel=sms")}
    assert statuses == {"delivered"}


def test_stop_then_subscribe_does_not_reset_but_resubscribe_does(mobile: Mobile) -> None:
    number = "886900000004"
    mobile.send(number, Subscribe=True, keyword=KEYWORD)
    assert mobile.mo("STOP", number).status_code == 202
    assert mobile.subscriptions() == {number: "Unsubscribed"}
    assert mobile.numbers_reached(mobile.send(number)) == set()
    assert mobile.numbers_reached(mobile.send(number, Subscribe=True, keyword=KEYWORD)) == set()
    assert mobile.numbers_reached(mobile.send(number, Resubscribe=True, keyword=KEYWORD)) == {number}
    # Resubscribe alone creates nothing for a number with no subscription.
    assert mobile.numbers_reached(mobile.send("886900000005", Resubscribe=True, keyword=KEYWORD)) == set()


def test_texting_the_keyword_in_subscribes(mobile: Mobile) -> None:
    assert mobile.mo("eztable", "886900000006").status_code == 202
    assert mobile.subscriptions() == {"886900000006": "Subscribed"}
    assert mobile.numbers_reached(mobile.send("886900000006")) == {"886900000006"}
    assert mobile.mo("HELLO", "886900000007").status_code == 202  # not a keyword: nothing changes
    assert "886900000007" not in mobile.subscriptions()


def test_queue_mo_validation(mobile: Mobile) -> None:
    r = mobile.mo("EZTABLE", "886900000008", code="99999")
    assert r.status_code == 400 and r.json() == {"errors": ["Short code 99999 is not valid."]}
    r = mobile.mo("EZTABLE", "+886900000008")
    assert r.status_code == 400 and r.json()["errors"] == ["+886900000008 is not a numeric string"]
    assert mobile.mo("EZTABLE").status_code == 400


def test_the_keyword_must_be_the_codes(mobile: Mobile) -> None:
    r = mobile.http.post(
        SEND, json={"mobileNumbers": ["886900000009"], "Subscribe": True, "keyword": "OTHER"}
    )
    assert r.status_code == 400 and r.json()["errors"] == [
        "Keyword OTHER is invalid for the code on the message."
    ]
    r = mobile.http.post(SEND, json={"mobileNumbers": ["886900000009"], "Subscribe": True})
    assert r.json()["errors"] == ["Keyword cannot be blank when Subscribe or Resubscribe are true."]
    assert mobile.subscriptions() == {}


@pytest.mark.parametrize("locale", ["zh-TW", "en"])
def test_the_stored_message_text_reads_as_the_service_renders_it(locale: str) -> None:
    """Batched SMS carry no override text: MC renders the message's stored text with each
    subscriber's attributes, which must give the words sms_text gives (README, "Batched sends")."""
    attributes = {"GiverName": "TABLE", "DrawerName": "EZ", "Amount": "250", "Cashback": "100"}
    message_id = localized("packet-drawn-welcome", locale).definition_key
    stored = render(SMS_DEFINITIONS[message_id].text, attributes)
    assert stored == sms_text(attributes, locale)
    assert render(TX_DEFINITIONS["sms"][message_id].text, attributes) == stored


def test_subscribers_get_the_stored_text_with_their_own_attributes_and_their_own_tracking(
    mobile: Mobile,
) -> None:
    subscribers = [
        {"MobileNumber": n, "SubscriberKey": f"K{n}", "Attributes": {"GiverName": g, "Amount": "1"}}
        for n, g in (("886900000101", "A"), ("886900000102", "B"))
    ]
    r = mobile.http.post(SEND, json={"Subscribers": subscribers, "Subscribe": True, "keyword": KEYWORD})
    assert r.status_code == 202, r.text
    token_id = r.json()["tokenId"]
    assert mobile.numbers_reached(token_id) == {"886900000101", "886900000102"}
    texts = {m["to"]: m["text"] for m in get_json(mobile.base, "_sandbox/messages?channel=sms")}
    assert texts["886900000101"].startswith("A 送你 $1") and texts["886900000102"].startswith("B 送你 $1")
    # One malformed number fails the whole request (§4.1): nothing is queued.
    bad = [*subscribers, {"MobileNumber": "+886-900", "SubscriberKey": "K", "Attributes": {}}]
    r = mobile.http.post(SEND, json={"Subscribers": bad, "Subscribe": True, "keyword": KEYWORD})
    assert r.status_code == 400 and r.json()["errors"] == ["+886-900 is not a numeric string"]
