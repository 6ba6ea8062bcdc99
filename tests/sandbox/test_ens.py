from __future__ import annotations

import base64
import hashlib
import hmac
import json
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
