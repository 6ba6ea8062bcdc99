from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from mc_sandbox.launch import free_port
from tests.fixtures.sandbox import SandboxProcess

from .helpers import Receiver, token, until


async def _register(c: httpx.AsyncClient, rec: Receiver) -> dict[str, Any]:
    r = await c.post("platform/v1/ens-callbacks", json=[{"callbackName": "cb", "url": rec.url}])
    assert r.status_code == 201, r.text
    cb = r.json()[0]
    probe = json.loads(rec.bodies[0][0])
    assert probe["callbackId"] == cb["callbackId"]
    r = await c.post(
        "platform/v1/ens-subscriptions",
        json=[
            {
                "callbackId": cb["callbackId"],
                "subscriptionName": "s",
                "eventCategoryTypes": ["TransactionalSendEvents.EmailBounced"],
            }
        ],
    )
    assert r.status_code == 400  # not verified yet
    r = await c.post("platform/v1/ens-verify", json={"callbackId": cb["callbackId"], "verificationKey": "x"})
    assert r.status_code == 404
    r = await c.post("platform/v1/ens-verify", json=probe)
    assert r.status_code == 200
    r = await c.post(
        "platform/v1/ens-subscriptions",
        json=[
            {
                "callbackId": cb["callbackId"],
                "subscriptionName": "bounces",
                "eventCategoryTypes": ["TransactionalSendEvents.EmailBounced"],
                "filters": ["bounceCode=HARD"],
            }
        ],
    )
    assert r.status_code == 201 and r.json()[0]["status"] == "active"
    listed = await c.get(f"platform/v1/ens-subscriptions-by-cb/{cb['callbackId']}")
    assert len(listed.json()) == 1
    return cb


async def _bounce_send(c: httpx.AsyncClient, base: str, key: str, email: str) -> str:
    tok = c.headers["Authorization"].split()[1]
    env = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<soap:Header><fueloauth>{tok}</fueloauth></soap:Header><soap:Body>"
        '<CreateRequest xmlns="http://exacttarget.com/wsdl/partnerAPI"><Options/>'
        f'<Objects xsi:type="Subscriber"><EmailAddress>{email}</EmailAddress>'
        f"<SubscriberKey>{key}</SubscriberKey>"
        "</Objects></CreateRequest></soap:Body></soap:Envelope>"
    )
    assert "<OverallStatus>OK" in (await c.post(f"{base}Service.asmx", content=env)).text
    # A Transactional Messaging send: the only kind ENS reports (classic sends report nothing here).
    message_key = f"mk-{key}"
    r = await c.post(
        f"messaging/v1/email/messages/{message_key}",
        json={"definitionKey": "packet-drawn-drawer", "recipient": {"contactKey": key, "to": email}},
    )
    assert r.status_code == 202 and not r.json()["responses"][0].get("errorcode"), r.text
    return message_key


async def test_bounce_is_signed_and_delivered(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    async with (
        Receiver() as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(base)}"}) as c,
    ):
        cb = await _register(c, rec)
        send_id = await _bounce_send(c, base, "B1", "gone@bounce.example")
        await until(lambda: rec.events())
        ((batch, raw, headers),) = rec.events()
        expected = base64.b64encode(
            hmac.new(cb["signatureKey"].encode(), raw, hashlib.sha256).digest()
        ).decode()
        assert headers["x-sfmc-ens-signature"] == expected
        event = batch[0]
        assert event["eventCategoryType"] == "TransactionalSendEvents.EmailBounced"
        assert event["definitionKey"] == "packet-drawn-drawer"
        assert event["info"]["to"] == "gone@bounce.example" and event["info"]["subscriberKey"] == "B1"
        assert event["info"]["bounceCode"] == "HARD" and event["info"]["smtpReason"] == "5.1.1"
        assert event["info"]["messageKey"] == send_id
        subs = (await c.get("_sandbox/subscribers")).json()
        assert subs[0]["status"] == "Held"
        r = await c.post(
            "messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/send",
            json={"To": {"Address": "gone@bounce.example", "SubscriberKey": "B1"}},
        )
        assert r.json()["responses"][0]["messageErrors"][1]["messageErrorCode"] == 2
        assert (await c.delete(f"platform/v1/ens-callbacks/{cb['callbackId']}")).status_code == 200
        assert (await c.get(f"platform/v1/ens-callbacks/{cb['callbackId']}")).status_code == 404


async def test_delivery_retried_on_failure(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    async with (
        Receiver(fail_first=2) as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(base)}"}) as c,
    ):
        await _register(c, rec)
        await _bounce_send(c, base, "B2", "gone2@bounce.example")
        await until(lambda: len(rec.events()) == 3)
        deliveries = (await c.get("_sandbox/ens")).json()["deliveries"]
        assert [d["ok"] for d in deliveries] == [False, False, True]
        raws = {raw for _b, raw, _h in rec.events()}
        assert len(raws) == 1  # the same batch, retried


async def test_probe_failure_and_bad_url(clean_sandbox: SandboxProcess) -> None:
    base = clean_sandbox.http_url
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(base)}"}) as c:
        dead = f"http://127.0.0.1:{free_port()}/ens"
        r = await c.post("platform/v1/ens-callbacks", json=[{"callbackName": "cb", "url": dead}])
        assert r.status_code == 400
        assert r.json()["message"].startswith("MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness")
        r = await c.post(
            "platform/v1/ens-callbacks", json=[{"callbackName": "cb", "url": "http://example.com/x"}]
        )
        assert r.status_code == 400


FEEDBACK_TYPES = [
    "TransactionalSendEvents.EmailSent",
    "TransactionalSendEvents.EmailBounced",
    "EngagementEvents.EmailUnsubscribe",
]


async def _subscribe(c: httpx.AsyncClient, rec: Receiver, name: str = "feedback") -> str:
    r = await c.post("platform/v1/ens-callbacks", json=[{"callbackName": "cb", "url": rec.url}])
    assert r.status_code == 201, r.text
    probe = json.loads(rec.bodies[0][0])
    assert (await c.post("platform/v1/ens-verify", json=probe)).status_code == 200
    body = [
        {"callbackId": probe["callbackId"], "subscriptionName": name, "eventCategoryTypes": FEEDBACK_TYPES}
    ]
    assert (await c.post("platform/v1/ens-subscriptions", json=body)).status_code == 201
    return str(probe["callbackId"])


def _of(rec: Receiver, category: str) -> list[dict[str, Any]]:
    return [e for batch, _raw, _h in rec.events() for e in batch if e["eventCategoryType"] == category]


async def test_transactional_fates_are_reported_as_mc_reports_them(clean_sandbox: SandboxProcess) -> None:
    """A soft bounce is an EmailBounced with bounceCode SOFT; an unsubscribe after the send is an
    EngagementEvents.EmailUnsubscribe, which names no messageKey: only its composite joins it to the
    EmailSent of its message (§7.2). Dates are epoch ms of MC's clock (the sandbox's, moved here)."""
    base = clean_sandbox.http_url
    ahead = 3 * 86_400
    moved = httpx.post(f"{base}_sandbox/clock", json={"advance_seconds": ahead}, timeout=10)
    moved.raise_for_status()
    try:
        async with (
            Receiver() as rec,
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(base)}"}) as c,
        ):
            await _subscribe(c, rec)
            soft = await _bounce_send(c, base, "S1", "full@soft.example")
            unsub = await _bounce_send(c, base, "U1", "bye@unsub.example")
            await until(
                lambda: _of(rec, "EngagementEvents.EmailUnsubscribe")
                and len(_of(rec, FEEDBACK_TYPES[1])) == 1
            )
            (bounce,) = _of(rec, "TransactionalSendEvents.EmailBounced")
            assert bounce["info"]["messageKey"] == soft and bounce["info"]["bounceCode"] == "SOFT"
            assert bounce["info"]["smtpReason"] == "4.2.2"
            sent = {e["info"]["messageKey"]: e for e in _of(rec, "TransactionalSendEvents.EmailSent")}
            assert set(sent) == {soft, unsub}
            (gone,) = _of(rec, "EngagementEvents.EmailUnsubscribe")
            assert "messageKey" not in gone["info"] and gone["info"]["to"] == "bye@unsub.example"
            assert gone["composite"] == sent[unsub]["composite"] != sent[soft]["composite"]
            assert gone["definitionKey"] == "NA" and gone["channel"] == "email"
            now_ms = (time.time() + ahead) * 1000
            for event in (bounce, gone, *sent.values()):
                assert abs(event["timestampUTC"] - now_ms) < 60_000  # MC's clock, not the host's
    finally:
        httpx.post(f"{base}_sandbox/clock", json={"now": None}, timeout=10)


async def test_a_callback_subscribed_twice_gets_each_event_twice(clean_sandbox: SandboxProcess) -> None:
    """ENS's delivery is at least once (§7.4): each matching subscription delivers."""
    base = clean_sandbox.http_url
    async with (
        Receiver() as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token(base)}"}) as c,
    ):
        callback_id = await _subscribe(c, rec)
        body = [
            {"callbackId": callback_id, "subscriptionName": "again", "eventCategoryTypes": FEEDBACK_TYPES}
        ]
        assert (await c.post("platform/v1/ens-subscriptions", json=body)).status_code == 201
        key = await _bounce_send(c, base, "D1", "gone@bounce.example")
        await until(lambda: len(_of(rec, "TransactionalSendEvents.EmailBounced")) == 2)
        first, second = _of(rec, "TransactionalSendEvents.EmailBounced")
        assert first == second and first["info"]["messageKey"] == key
