"""The truth switches (issue 18): ENS reports Transactional Messaging sends only, and MobileConnect
delivers to subscribed numbers only. Both are behind legacy flags whose defaults are still the kinder
behaviour; these tests pin both sides and the defaults."""

from __future__ import annotations

from typing import Any

import httpx

from mc_sandbox.__main__ import parse_args
from tests.fixtures.sandbox import SandboxProcess

from .helpers import Receiver, create_subscribers, ens_subscribe, found, retrieve, token, until, wait_for

CATEGORIES = [
    "TransactionalSendEvents.EmailSent",
    "TransactionalSendEvents.EmailNotSent",
    "TransactionalSendEvents.EmailBounced",
    "EngagementEvents.EmailUnsubscribe",
]
CLASSIC = "messaging/v1/messageDefinitionSends/key:packet-drawn-drawer/send"


def _events(rec: Receiver) -> list[dict[str, Any]]:
    return [e for batch, _raw, _h in rec.events() for e in batch]


def test_the_defaults_are_the_legacy_kindness_until_the_pipeline_reads_real_feedback() -> None:
    legacy = parse_args([])
    assert legacy.ens_classic_sends is True and legacy.mobileconnect_open_numbers is True
    truthful = parse_args(["--no-ens-classic-sends", "--no-mobileconnect-open-numbers"])
    assert truthful.ens_classic_sends is False and truthful.mobileconnect_open_numbers is False
    assert legacy.hard_bounce_domains == ("bounce.example",) and legacy.unsub_domains == ("unsub.example",)
    assert parse_args(["--soft-bounce-domains", " A.example, b.example ,"]).soft_bounce_domains == (
        "a.example",
        "b.example",
    )


async def test_classic_sends_produce_no_ens_callback(clean_truthful: SandboxProcess) -> None:
    base = clean_truthful.http_url
    tok = token(base)
    create_subscribers(base, tok, [("C1", "c@bounce.example"), ("C2", "c@unsub.example")])
    async with (
        Receiver() as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {tok}"}) as c,
    ):
        await ens_subscribe(c, rec, CATEGORIES)
        for key, email in [("C1", "c@bounce.example"), ("C2", "c@unsub.example")]:
            r = await c.post(CLASSIC, json={"To": {"Address": email, "SubscriberKey": key}})
            assert not r.json()["responses"][0]["hasErrors"]
        # The classic sends' feedback exists, where MC keeps it ...
        for kind in ("BounceEvent", "UnsubEvent"):

            def traced(k: str = kind) -> list[Any]:
                return found(retrieve(base, tok, k, ["SubscriberKey"]), "Results")

            wait_for(traced, what=kind)
        # ... and a transactional send, made after them, is reported: ENS works, it just never
        # heard of the classic ones.
        tx = {
            "definitionKey": "packet-drawn-drawer",
            "recipient": {"contactKey": "T1", "to": "t@bounce.example"},
        }
        assert (await c.post("messaging/v1/email/messages/t-1", json=tx)).status_code == 202
        await until(lambda: len(_events(rec)) >= 2)
        keys = {e["info"].get("messageKey") for e in _events(rec)}
        assert keys == {"t-1"}


async def test_legacy_default_reports_classic_sends_too(clean_sandbox: SandboxProcess) -> None:
    """What today's pipeline relies on (its suppression list hears of classic bounces through ENS)."""
    base = clean_sandbox.http_url
    tok = token(base)
    create_subscribers(base, tok, [("L1", "l@soft.example"), ("L2", "l@unsub.example")])
    async with (
        Receiver() as rec,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {tok}"}) as c,
    ):
        await ens_subscribe(c, rec, CATEGORIES)
        sent = []
        for key, email in [("L1", "l@soft.example"), ("L2", "l@unsub.example")]:
            r = await c.post(CLASSIC, json={"To": {"Address": email, "SubscriberKey": key}})
            sent.append(r.json()["responses"][0]["recipientSendId"])
        await until(lambda: len(_events(rec)) >= 4)
        kinds = sorted(e["eventCategoryType"].split(".")[1] for e in _events(rec))
        assert kinds == ["EmailBounced", "EmailSent", "EmailSent", "EmailUnsubscribe"]
        bounce = next(e for e in _events(rec) if e["eventCategoryType"].endswith("EmailBounced"))
        assert bounce["info"]["bounceCode"] == "SOFT" and bounce["info"]["messageKey"] == sent[0]
