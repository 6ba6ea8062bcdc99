"""The truth (issue 18): ENS reports Transactional Messaging sends only, and MobileConnect delivers
to subscribed numbers only. No legacy flag brings the kinder behaviour back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

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


@pytest.mark.parametrize("flag", ["--ens-classic-sends", "--mobileconnect-open-numbers"])
def test_the_legacy_kindness_is_gone(flag: str) -> None:
    with pytest.raises(SystemExit):
        parse_args([flag])


def test_the_address_fates_are_configured_by_domain() -> None:
    defaults = parse_args([])
    assert not hasattr(defaults, "ens_classic_sends") and not hasattr(defaults, "mobileconnect_open_numbers")
    assert defaults.hard_bounce_domains == ("bounce.example",)
    assert defaults.unsub_domains == ("unsub.example",)
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
