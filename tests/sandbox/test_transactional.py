"""Transactional Messaging API (reference §3.2): sends by messageKey, their status, and their ENS events."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.sandbox import SandboxProcess

from .helpers import Receiver, client, create_subscribers, ens_subscribe, get_json, token, until, wait_for

EMAIL = "messaging/v1/email/messages/"
SMS = "messaging/v1/sms/messages/"


def _one(
    key: str, contact: str, to: str, definition: str = "packet-drawn-drawer", **attrs: str
) -> dict[str, Any]:
    return {"definitionKey": definition, "recipient": {"contactKey": contact, "to": to, "attributes": attrs}}


def _status(c: httpx.Client, key: str, channel: str = "email", final: bool = True) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        r = c.get(f"messaging/v1/{channel}/messages/{key}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return None if final and body["eventCategoryType"].endswith("Queued") else body

    return wait_for(settled, what=f"status of {key}")


@pytest.fixture
def tx(clean_truthful: SandboxProcess) -> httpx.Client:
    return client(clean_truthful.http_url)


def test_single_send_status_and_duplicate_key(tx: httpx.Client) -> None:
    r = tx.post(f"{EMAIL}bk-1", json=_one("bk-1", "C1", "c1@example.com", DrawerName="EZ"))
    assert r.status_code == 202
    body = r.json()
    assert body == {"requestId": body["requestId"], "errorcode": 0, "responses": [{"messageKey": "bk-1"}]}
    queued = _status(tx, "bk-1", final=False)
    assert queued["eventCategoryType"] == "TransactionalSendEvents.EmailQueued"
    assert "info" not in queued and "compositeId" not in queued
    sent = _status(tx, "bk-1")
    assert sent["eventCategoryType"] == "TransactionalSendEvents.EmailSent"
    assert sent["info"] == {"messageKey": "bk-1", "contactKey": "C1", "to": "c1@example.com"}
    assert not sent["timestamp"].endswith("Z")  # CST, no zone suffix
    dup = tx.post(f"{EMAIL}bk-1", json=_one("bk-1", "C1", "c1@example.com"))
    assert dup.status_code == 400 and dup.json()["errorcode"] == 109110
    assert dup.json()["responses"][0]["message"].startswith("MCMS_UTM_Validation_DuplicateMessageKey")
    (msg,) = get_json(tx.base_url.__str__(), "_sandbox/messages")
    assert msg["text"].startswith("親愛的 EZ") and msg["api"] == "transactional"
    assert tx.get("messaging/v1/email/messages/nope").status_code == 404
    # The contact was added (autoAddSubscriber); TM sends write no send log row.
    assert [s["subscriber_key"] for s in get_json(str(tx.base_url), "_sandbox/subscribers")] == ["C1"]
    assert get_json(str(tx.base_url), "_sandbox/send-log")["SendLog"] == []


def test_the_from_name_comes_from_the_fromname_attribute_as_the_sender_profile_says(
    tx: httpx.Client,
) -> None:
    """This API takes no From.Name in its body: the definitions' sender profile reads the FromName
    attribute (templates.FROM_NAME_AMPSCRIPT), falling back to the profile's own name."""
    named = _one("fn-1", "F1", "f1@example.com", DrawerName="EZ", FromName="TABLE via EZTABLE")
    assert tx.post(f"{EMAIL}fn-1", json=named).status_code == 202
    assert (
        tx.post(f"{EMAIL}fn-2", json=_one("fn-2", "F2", "f2@example.com", DrawerName="EZ")).status_code == 202
    )
    sms = {
        "definitionKey": "packet-drawn-welcome",
        "recipient": {"contactKey": "F3", "to": "886912000111", "attributes": {"GiverName": "T"}},
        "content": {"message": "the worker's own text"},
    }
    assert tx.post(f"{SMS}fn-3", json=sms).status_code == 202
    by_key = {m["id"]: m for m in get_json(str(tx.base_url), "_sandbox/messages")}
    assert by_key["fn-1"]["from_name"] == "TABLE via EZTABLE"
    assert by_key["fn-2"]["from_name"] == "EZTABLE"
    # An SMS's content.message overrides the definition's text; an SMS has no sender name.
    assert by_key["fn-3"]["text"] == "the worker's own text" and by_key["fn-3"]["from_name"] is None


def test_single_send_refusals(tx: httpx.Client) -> None:
    cases = [
        ({"definitionKey": "packet-drawn-drawer", "recipient": {"to": "a@example.com"}}, 109105),
        ({"definitionKey": "packet-drawn-drawer", "recipient": {"contactKey": "A"}}, 109106),
        ({"definitionKey": "packet-drawn-drawer", "recipient": {"contactKey": "A", "to": "nope"}}, 109121),
        ({"definitionKey": "no-such", "recipient": {"contactKey": "A", "to": "a@example.com"}}, 109111),
        ({"recipient": {"contactKey": "A", "to": "a@example.com"}}, 109107),
    ]
    for body, code in cases:
        r = tx.post(f"{EMAIL}k-{code}", json=body)
        assert r.status_code == 400 and r.json()["errorcode"] == code, (body, r.text)
    r = tx.post(f"{EMAIL}{'x' * 101}", json=_one("x", "A", "a@example.com"))
    assert r.json()["errorcode"] == 109108
    assert get_json(str(tx.base_url), "_sandbox/messages") == []


def test_many_recipients_answer_per_recipient(tx: httpx.Client) -> None:
    recipients: list[dict[str, Any]] = [
        {"contactKey": "M1", "to": "m1@example.com", "messageKey": "many-1"},
        {"contactKey": "M2", "to": "m2@example.com"},  # a key is generated
        {"contactKey": "M3", "to": "m3@example.com", "messageKey": "many-1"},  # duplicate in the request
        {"contactKey": "M4"},  # no to
    ]
    r = tx.post(
        EMAIL,
        json={"definitionKey": "packet-drawn-giver", "recipients": recipients, "attributes": {"A": "1"}},
    )
    assert r.status_code == 202
    body = r.json()
    assert body["errorcode"] == 109001
    assert body["message"] == "MCMS_UTM_ResponsesHasErrors: 2 subscribers failed to queue out of 4"
    first, generated, dup, no_to = body["responses"]
    assert first == {"messageKey": "many-1"}
    assert set(generated) == {"messageKey"} and len(generated["messageKey"]) == 22
    assert dup["errorcode"] == 109110 and dup["messageKey"] == "many-1"
    assert no_to["errorcode"] == 109106 and no_to["message"].endswith(": Invalid subscriber")
    assert _status(tx, generated["messageKey"])["eventCategoryType"].endswith("EmailSent")
    too_many = [{"contactKey": f"T{i}", "to": f"t{i}@example.com"} for i in range(2001)]
    r = tx.post(EMAIL, json={"definitionKey": "packet-drawn-giver", "recipients": too_many})
    assert r.status_code == 400 and r.json()["errorcode"] == 109101
    r = tx.post(EMAIL, json={"definitionKey": "packet-drawn-giver", "recipients": [{"contactKey": "X"}]})
    assert r.status_code == 400 and r.json()["errorcode"] == 109103
    r = tx.post(EMAIL, json={"definitionKey": "packet-drawn-giver", "recipients": []})
    assert r.status_code == 400 and r.json()["errorcode"] == 109102


def test_two_thousand_recipients_in_one_request(tx: httpx.Client) -> None:
    recipients = [
        {"contactKey": f"R{i}", "to": f"r{i}@example.com", "messageKey": f"r-{i}"} for i in range(2000)
    ]
    r = tx.post(EMAIL, json={"definitionKey": "packet-drawn-drawer", "recipients": recipients})
    assert r.status_code == 202 and r.json()["errorcode"] == 0
    assert [x["messageKey"] for x in r.json()["responses"]] == [f"r-{i}" for i in range(2000)]


def test_an_inactive_definition_keeps_its_messages_queued(tx: httpx.Client) -> None:
    r = tx.post(f"{EMAIL}p-1", json=_one("p-1", "P1", "p1@example.com", definition="paused-notice"))
    assert r.status_code == 202
    assert tx.get("messaging/v1/email/definitions/paused-notice").json()["status"] == "Inactive"
    wait_for(lambda: tx.post(f"{EMAIL}p-2", json=_one("p-2", "P1", "p1@example.com")).status_code == 202)
    _status(tx, "p-2")  # a later send of an active definition went out
    assert _status(tx, "p-1", final=False)["eventCategoryType"].endswith("EmailQueued")


async def test_ens_reports_transactional_sends(clean_truthful: SandboxProcess) -> None:
    base = clean_truthful.http_url
    tok = token(base)
    create_subscribers(base, tok, [("HELD", "held@example.com")], status="Held")
    categories = [
        "TransactionalSendEvents.EmailSent",
        "TransactionalSendEvents.EmailNotSent",
        "TransactionalSendEvents.EmailBounced",
        "EngagementEvents.EmailUnsubscribe",
    ]
    async with (
        Receiver() as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {tok}"}) as c,
    ):
        await ens_subscribe(c, rec, categories)
        for key, contact, to in [
            ("e-ok", "OK", "ok@example.com"),
            ("e-hard", "HB", "x@bounce.example"),
            ("e-soft", "SB", "x@soft.example"),
            ("e-unsub", "UN", "x@unsub.example"),
            ("e-held", "HELD", "held@example.com"),
        ]:
            r = await c.post(f"{EMAIL}{key}", json=_one(key, contact, to))
            assert r.status_code == 202, r.text

        def events() -> list[dict[str, Any]]:
            return [e for batch, _raw, _h in rec.events() for e in batch]

        await until(lambda: len(events()) >= 8)
        seen = {
            (e["eventCategoryType"].split(".")[1], e["info"].get("messageKey", e["info"].get("to")))
            for e in events()
        }
        assert seen == {
            ("EmailSent", "e-ok"),
            ("EmailSent", "e-hard"),
            ("EmailSent", "e-soft"),
            ("EmailSent", "e-unsub"),
            ("EmailNotSent", "e-held"),
            ("EmailBounced", "e-hard"),
            ("EmailBounced", "e-soft"),
            ("EmailUnsubscribe", "x@unsub.example"),
        }
        by = {(e["eventCategoryType"], e["info"].get("messageKey")): e for e in events()}
        hard = by[("TransactionalSendEvents.EmailBounced", "e-hard")]
        assert hard["info"]["bounceCode"] == "HARD" and hard["definitionKey"] == "packet-drawn-drawer"
        assert by[("TransactionalSendEvents.EmailBounced", "e-soft")]["info"]["bounceCode"] == "SOFT"
        held = by[("TransactionalSendEvents.EmailNotSent", "e-held")]
        assert held["info"]["statusCode"] == "2" and held["info"]["statusMessage"] == "Held"
        sent = by[("TransactionalSendEvents.EmailSent", "e-ok")]
        assert set(sent["composite"]) == {"jobId", "batchId", "listId", "subscriberId", "emailId"}
        status = (await c.get("messaging/v1/email/messages/e-held")).json()
        assert status["eventCategoryType"] == "TransactionalSendEvents.EmailNotSent"
        assert status["info"]["statusCode"] == 2 and status["info"]["statusMessage"] == "Held"
        not_sent = (
            await c.get("messaging/v1/email/messages/?type=notSent&$pageSize=10&lastEventId=0")
        ).json()
        assert [m["info"]["messageKey"] for m in not_sent["messages"]] == ["e-held"]
        assert not_sent["lastEventID"] == not_sent["messages"][0]["eventID"]
        subs = {s["subscriber_key"]: s["status"] for s in (await c.get("_sandbox/subscribers")).json()}
        assert (subs["HB"], subs["SB"], subs["UN"], subs["OK"]) == (
            "Held",
            "Bounced",
            "Unsubscribed",
            "Active",
        )


async def test_sms_messages_and_stopped_numbers(clean_truthful: SandboxProcess) -> None:
    base = clean_truthful.http_url
    tok = token(base)
    categories = [
        "TransactionalSendEvents.SmsSent",
        "TransactionalSendEvents.SmsNotSent",
        "TransactionalSendEvents.SmsDelivered",
    ]
    async with (
        Receiver() as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {tok}"}) as c,
    ):
        await ens_subscribe(c, rec, categories)
        body = _one("s-1", "M1", "886900000010", definition="packet-drawn-welcome", GiverName="T", Amount="5")
        assert (await c.post(f"{SMS}s-1", json=body)).status_code == 202
        assert (
            await c.post(f"{SMS}s-bad", json=_one("s-bad", "M1", "+8869", definition="packet-drawn-welcome"))
        ).json()["errorcode"] == 109121
        await until(lambda: len(rec.events()) >= 2)
        status = (await c.get(f"{SMS}s-1")).json()
        assert status["eventCategoryType"] == "TransactionalSendEvents.SMSSent"
        mo = {"mobileNumbers": ["886900000010"], "shortCode": "88588", "messageText": "STOP"}
        assert (await c.post("sms/v1/queueMO", json=mo)).status_code == 202
        body = _one("s-2", "M1", "886900000010", definition="packet-drawn-welcome")
        assert (await c.post(f"{SMS}s-2", json=body)).status_code == 202
        again = {
            **_one("s-3", "M1", "886900000010", definition="packet-drawn-welcome"),
            "subscriptions": {"resubscribe": True},
        }
        assert (await c.post(f"{SMS}s-3", json=again)).status_code == 202

        def kinds() -> set[tuple[str, str]]:
            return {
                (e["eventCategoryType"].split(".")[1], e["info"]["messageKey"])
                for b, _r, _h in rec.events()
                for e in b
            }

        await until(lambda: ("SmsSent", "s-3") in kinds() and ("SmsNotSent", "s-2") in kinds())
        assert ("SmsDelivered", "s-1") in kinds() and ("SmsSent", "s-2") not in kinds()
        assert (await c.get(f"{SMS}s-2")).json()["eventCategoryType"] == "TransactionalSendEvents.SMSNotSent"
        defs = (await c.get("messaging/v1/sms/definitions")).json()["definitions"]
        assert defs[0]["subscriptions"]["keyword"] == "EZTABLE"
