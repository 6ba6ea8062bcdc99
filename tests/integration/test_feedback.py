"""MC's feedback after `sent` (issue 18), against the sandbox telling the truth: ENS hears nothing of
classic sends, MobileConnect delivers only to subscribed numbers.

Every test of the stack runs for both of MC's send paths: `triggered` (MC_EMAIL_API=triggered,
MC_SMS_API=mobileconnect), where the feedback stage reads MC's tracking objects (joined through the
send log) and MobileConnect's delivery status, and `transactional` (both APIs), where MC reports
through ENS only, every event posted twice (at least once, §7.4), and the feedback stage joins each
to its notification by messageKey. The user sees the same outcomes; only MC's own words in the
reasons differ (REASONS).

A broker, a sandbox and a worker per path: the worker runs with a soft-bounce window of
SOFT_WINDOW_DAYS (about 1.7 s, not MC's 15 days), so that three soft bounces a few seconds apart
meet MC's rule. The restart test brings a stack of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stream_app.cli.launch import WorkerProcess
from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import REPO, start_worker
from tests.integration.helpers import (
    clear_faults,
    drawn_event,
    eventually,
    fault,
    messages,
    private_stack,
    produce,
    read_all,
    statuses,
    unique,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

APP_ID = "feedback"
SOFT_WINDOW_DAYS = "0.00002"  # 1.7 s: three soft bounces of three events span more than that
DRAWER = "packet-drawn-drawer"
WELCOME = "packet-drawn-welcome"


TRIGGERED, TRANSACTIONAL = "triggered", "transactional"
# What MC says, in each path's words: SOAP tracking and MobileConnect delivery records, or ENS.
REASONS = {
    TRIGGERED: {
        "hard": "hard bounce (SMTP 550)",
        "soft": "soft bounce (SMTP 452)",
        "delivered": "4000 Delivered to handset",
        "stopped": "not subscribed",
    },
    TRANSACTIONAL: {
        "hard": "hard bounce (ENS 5.1.1)",
        "soft": "soft bounce (ENS 4.2.2)",
        "delivered": "4000 Delivered",
        "stopped": "1 Unsubscribed",
    },
}


class Stack:
    def __init__(
        self, kafka: EmbeddedKafka, sandbox: SandboxProcess, worker: WorkerProcess, api: str
    ) -> None:
        self.kafka, self.sandbox, self.worker, self.api = kafka, sandbox, worker, api
        self.bootstrap = kafka.bootstrap
        self.reasons = REASONS[api]
        self.ens_doubled = False

    async def ens_twice(self) -> None:
        """ENS delivers at least once (§7.4): a second subscription of the worker's callback makes MC
        post every event twice, so that each test also shows it counted and reported once."""
        if self.api != TRANSACTIONAL or self.ens_doubled:
            return
        base = self.sandbox.http_url
        ens = await eventually(lambda: _subscribed_callback(base), timeout=60)
        headers = {"Authorization": f"Bearer {_token(self.sandbox)}"}
        body = [
            {"callbackId": ens["callbackId"], "subscriptionName": "again", "eventCategoryTypes": ens["types"]}
        ]
        answer = httpx.post(f"{base}platform/v1/ens-subscriptions", json=body, headers=headers, timeout=10)
        assert answer.status_code == 201, answer.text
        self.ens_doubled = True


def _subscribed_callback(base: str) -> dict[str, Any] | None:
    """The worker's ENS callback and the event types it subscribed to, once it has."""
    ens = httpx.get(f"{base}_sandbox/ens", timeout=10).json()
    found = next(iter(ens["subscriptions"]), None)
    if found is None:
        return None
    return {"callbackId": found["callbackId"], "types": found["eventCategoryTypes"]}


@pytest.fixture(scope="module", params=[TRIGGERED, TRANSACTIONAL])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    api = str(request.param)
    root = tmp_path_factory.mktemp(f"feedback-{api}")
    with private_stack(root) as (kafka, sandbox):
        worker = start_worker(
            kafka,
            sandbox,
            root / "worker",
            APP_ID=APP_ID,
            SOFT_BOUNCE_WINDOW_DAYS=SOFT_WINDOW_DAYS,
            MC_EMAIL_API=api,
            MC_SMS_API="mobileconnect" if api == TRIGGERED else TRANSACTIONAL,
        )
        try:
            worker.wait_ready()
            yield Stack(kafka, sandbox, worker, api)
        finally:
            worker.stop()


async def send(stack: Stack, event: dict[str, Any]) -> dict[str, Any]:
    await stack.ens_twice()
    await produce(stack.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
    return event


async def outcome(stack: Stack, event: dict[str, Any], template: str, wanted: str) -> dict[str, Any] | None:
    """The event's `template` notification's status `wanted`, once it is on notification.status."""
    found = await statuses(stack.bootstrap, event["event_id"], feedback=True)
    return next((s for s in found if s["template"] == template and s["status"] == wanted), None)


async def all_outcomes(stack: Stack, event: dict[str, Any], template: str) -> list[str]:
    found = await statuses(stack.bootstrap, event["event_id"], feedback=True)
    return [s["status"] for s in found if s["template"] == template]


def suppressed(stack: Stack, address: str) -> dict[str, Any]:
    view: dict[str, Any] = httpx.get(f"{stack.worker.web_url}suppressed/{address}/", timeout=10).json()
    return view


def view_note(stack: Stack, event: dict[str, Any], template: str) -> dict[str, Any] | None:
    view = httpx.get(f"{stack.worker.web_url}events/{event['event_id']}/", timeout=10).json()
    return next((n for n in view["notifications"] if n["notification_id"].endswith(f":{template}")), None)


def mails_to(stack: Stack, address: str) -> list[dict[str, Any]]:
    return [m for m in messages(stack.sandbox) if m["channel"] == "email" and m["to"] == address]


async def test_a_hard_bounce_is_mailed_once_shows_bounced_and_its_next_event_ends_suppressed(
    stack: Stack,
) -> None:
    address = f"{unique('hard')}@bounce.example"
    first = await send(stack, drawn_event(drawer__email=address, drawer__mobile=None))
    bounced = await eventually(lambda: outcome(stack, first, DRAWER, "bounced"), timeout=60)
    assert bounced["reason"].startswith(stack.reasons["hard"]) and "5.1.1" in bounced["reason"]
    assert await all_outcomes(stack, first, DRAWER) == ["sent", "bounced"]
    note = await eventually(
        lambda: (n := view_note(stack, first, DRAWER)) and n.get("status") == "bounced" and n, timeout=30
    )
    assert "outcome" in note["stages"] and "sent-by-mc" in note["stages"]
    view = await eventually(lambda: (v := suppressed(stack, address)) and v["suppressed"] and v, timeout=30)
    assert view["kind"] == "HardBounce" and view["bounce_code"] == "HARD"
    assert view["address"].endswith("***@bounce.example")

    second = await send(stack, drawn_event(drawer=first["drawer"], giver=first["giver"]))
    ended = await eventually(lambda: outcome(stack, second, DRAWER, "suppressed"), timeout=60)
    assert "suppression list" in ended["reason"]
    assert len(mails_to(stack, address)) == 1  # mailed once, on the first event


async def test_soft_bounces_suppress_only_once_they_meet_mcs_rule(stack: Stack) -> None:
    address = f"{unique('soft')}@soft.example"
    event = drawn_event(drawer__email=address, drawer__mobile=None)
    for n in (1, 2, 3):
        if n > 1:
            event = drawn_event(drawer=event["drawer"], giver=event["giver"])
        await send(stack, event)
        bounced = await eventually(lambda e=event: outcome(stack, e, DRAWER, "bounced"), timeout=60)
        assert bounced["reason"].startswith(stack.reasons["soft"])
        if n < 3:
            # Counted, not suppressed: MC's rule wants three spanning the window.
            await eventually(lambda k=n: _soft_bounces_recorded(stack, address, k), timeout=30)
            assert not suppressed(stack, address)["suppressed"], n
    view = await eventually(lambda: (v := suppressed(stack, address)) and v["suppressed"] and v, timeout=30)
    assert view["kind"] == "SoftBounce"
    after = await send(stack, drawn_event(drawer=event["drawer"], giver=event["giver"]))
    await eventually(lambda: outcome(stack, after, DRAWER, "suppressed"), timeout=60)
    assert len(mails_to(stack, address)) == 3


async def _soft_bounces_recorded(stack: Stack, address: str, n: int) -> bool:
    """`n` soft bounces of the address in the suppression agent's table (its changelog)."""
    records = await read_all(stack.bootstrap, f"{APP_ID}-soft-bounces-changelog")
    latest = [r.value for r in records if orjson.loads(r.key) == address]
    return bool(latest) and latest[-1] is not None and len(orjson.loads(latest[-1])) >= n


async def test_an_unsubscribe_ends_unsubscribed_and_is_not_mailed_again(stack: Stack) -> None:
    address = f"{unique('un')}@unsub.example"
    first = await send(stack, drawn_event(drawer__email=address, drawer__mobile=None))
    found = await eventually(lambda: outcome(stack, first, DRAWER, "unsubscribed"), timeout=60)
    assert "unsubscribed" in found["reason"]
    assert await all_outcomes(stack, first, DRAWER) == ["sent", "unsubscribed"]
    view = await eventually(lambda: (v := suppressed(stack, address)) and v["suppressed"] and v, timeout=30)
    assert view["kind"] == "Unsubscribe"
    second = await send(stack, drawn_event(drawer=first["drawer"], giver=first["giver"]))
    await eventually(lambda: outcome(stack, second, DRAWER, "suppressed"), timeout=60)
    assert len(mails_to(stack, address)) == 1


async def test_a_subscriber_gone_at_send_time_ends_not_sent(stack: Stack) -> None:
    """MC accepted the send, and the subscriber was deleted before its send time: MC writes a
    NotSentEvent (no reason in it) and a send log row with its ErrorCode. (Transactional Messaging
    adds the contact it sends to: its EmailNotSent is met when MC holds the subscriber, in
    test_an_operator_lifts_a_suppression_and_the_log_says_so.)"""
    if stack.api == TRANSACTIONAL:
        pytest.skip("a classic send's NotSentEvent; ENS's EmailNotSent is met in the lift test")
    event = drawn_event(drawer__mobile=None)
    await send(stack, event)
    member = event["drawer"]["member_id"]
    await eventually(
        lambda: any(m["subscriber_key"] == member for m in messages(stack.sandbox)), timeout=60, interval=0.05
    )
    _delete_subscriber(stack.sandbox, member)
    found = await eventually(lambda: outcome(stack, event, DRAWER, "not_sent"), timeout=60)
    assert found["reason"] == "MC did not send it (NotSentEvent; send log ErrorCode 40)"


def _delete_subscriber(sandbox: SandboxProcess, key: str) -> None:
    token = _token(sandbox)
    envelope = (
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<soap:Header><fueloauth xmlns="http://exacttarget.com">{token}</fueloauth></soap:Header><soap:Body>'
        '<DeleteRequest xmlns="http://exacttarget.com/wsdl/partnerAPI"><Options/>'
        f'<Objects xsi:type="Subscriber"><SubscriberKey>{key}</SubscriberKey></Objects>'
        "</DeleteRequest></soap:Body></soap:Envelope>"
    )
    answer = httpx.post(
        f"{sandbox.http_url}Service.asmx", content=envelope, headers={"Content-Type": "text/xml"}, timeout=10
    )
    assert "<OverallStatus>OK</OverallStatus>" in answer.text, answer.text


def _token(sandbox: SandboxProcess) -> str:
    creds = {
        "grant_type": "client_credentials",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
    }
    answer = httpx.post(f"{sandbox.http_url}v2/token", json=creds, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


async def test_a_welcome_sms_subscribes_a_new_number_and_shows_delivered(stack: Stack) -> None:
    event = await send(stack, drawn_event())
    number = event["drawer"]["mobile"].lstrip("+")
    delivered = await eventually(lambda: outcome(stack, event, WELCOME, "delivered"), timeout=60)
    assert delivered["reason"] == stack.reasons["delivered"]
    sent = await outcome(stack, event, WELCOME, "sent")
    assert sent is not None and delivered["mc_request_id"] == sent["mc_request_id"]  # the tokenId
    subscriptions = httpx.get(f"{stack.sandbox.http_url}_sandbox/mobile-subscriptions", timeout=10).json()
    assert {"mobileNumber": number, "keyword": "EZTABLE", "status": "Subscribed"}.items() <= next(
        s for s in subscriptions if s["mobileNumber"] == number
    ).items()
    await eventually(
        lambda: (n := view_note(stack, event, WELCOME)) and n.get("status") == "delivered", timeout=30
    )


async def test_a_number_that_texted_stop_is_not_resubscribed_and_ends_undeliverable(stack: Stack) -> None:
    event = drawn_event()
    number = event["drawer"]["mobile"].lstrip("+")
    headers = {"Authorization": f"Bearer {_token(stack.sandbox)}"}
    # The number texted the keyword in (subscribed), then STOP.
    for text in ("EZTABLE", "STOP"):
        mo = {"mobileNumbers": [number], "shortCode": "88588", "messageText": text}
        answer = httpx.post(f"{stack.sandbox.http_url}sms/v1/queueMO", json=mo, headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text
    await send(stack, event)
    found = await eventually(lambda: outcome(stack, event, WELCOME, "undeliverable"), timeout=60)
    assert stack.reasons["stopped"] in found["reason"]


async def test_an_operator_lifts_a_suppression_and_the_log_says_so(stack: Stack) -> None:
    address = f"{unique('lift')}@bounce.example"
    event = await send(stack, drawn_event(drawer__email=address, drawer__mobile=None))
    await eventually(lambda: suppressed(stack, address)["suppressed"], timeout=60)
    env = {**os.environ, "BROKER_URL": stack.kafka.url, "APP_ID": APP_ID, "LOG_FORMAT": "json"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_app",
            "suppression",
            "lift",
            address,
            "--reason",
            "mailbox fixed, OPS-1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert address not in done.stdout + done.stderr  # masked
    assert "suppression lift requested" in done.stderr and "OPS-1" in done.stderr
    await eventually(lambda: not suppressed(stack, address)["suppressed"], timeout=30)
    lifted = await eventually(lambda: _log_line(stack.worker, "suppression lifted"), timeout=30)
    assert address not in lifted and "mailbox fixed, OPS-1" in lifted
    # Lifted here, MC still holds the subscriber after its hard bounce: MC refuses the next send
    # (a triggered send, at once), or accepts it and does not send it (Transactional Messaging:
    # ENS's EmailNotSent, statusCode 2 Held).
    again = await send(stack, drawn_event(drawer=event["drawer"], giver=event["giver"]))
    if stack.api == TRIGGERED:
        refused = await eventually(lambda: outcome(stack, again, DRAWER, "failed"), timeout=60)
        assert "MC refused" in refused["reason"]
    else:
        held = await eventually(lambda: outcome(stack, again, DRAWER, "not_sent"), timeout=60)
        assert held["reason"].startswith("MC did not send it (EmailNotSent; statusCode 2 Held")
        assert await all_outcomes(stack, again, DRAWER) == ["sent", "not_sent"]


def _log_line(worker: WorkerProcess, text: str) -> str | None:
    lines = worker.log_path.read_text(errors="replace").splitlines() if worker.log_path.exists() else []
    return next((line for line in lines if text in line), None)


# ---------------------------------------------------------------------------------------------- restart

EVENTS = 12
PAGE = "5"


async def test_the_feedback_stage_survives_a_restart_mid_page(tmp_path: Path) -> None:
    """MC answers 5 rows a page (FEEDBACK_PAGE_SIZE) and every SOAP call takes a second (a sandbox
    fault): the worker is killed right after the first page of bounces was handled, while MC answers
    the next. The next worker reads the same window again: every bounce is reported once, none lost.
    (A kill in the milliseconds between a page's outcomes reaching Kafka and the table saying so
    repeats that page's statuses: at least once, as every output; the suppression list and the
    soft-bounce counts take each MC event once.)"""
    env = {
        "APP_ID": "fbrestart",
        "FEEDBACK_PAGE_SIZE": PAGE,
        # The bounces pile up before the worker reads them: a pass of several pages.
        "FEEDBACK_LAG_SECONDS": "12",
        "SESSION_TIMEOUT_SECONDS": "6",
    }
    with private_stack(tmp_path) as (kafka, sandbox):
        first = start_worker(kafka, sandbox, tmp_path / "w1", **env)
        second: WorkerProcess | None = None
        try:
            first.wait_ready()
            events = [
                drawn_event(drawer__email=f"{unique('r')}@bounce.example", drawer__mobile=None)
                for _ in range(EVENTS)
            ]
            for event in events:
                await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
            addresses = {e["drawer"]["email"] for e in events}

            def all_bounced() -> bool:
                found = [m for m in messages(sandbox) if m["to"] in addresses]
                return len(found) == EVENTS and all(m["status"] == "bounced" for m in found)

            await eventually(all_bounced, timeout=60)
            fault(sandbox, target="soap", mode="slow", seconds=1.0, probability=1.0)
            # Between pages: a chunk of bounces handled (its outcomes in Kafka, its outbox emptied),
            # while MC takes its second to answer the next page.
            await eventually(lambda: _chunk_done(kafka, "fbrestart"), timeout=90, interval=0.1)
            first.kill()
            handled = await _bounced_count(kafka, events)
            assert 0 < handled < EVENTS, handled  # killed mid-pass
            clear_faults(sandbox)
            second = start_worker(kafka, sandbox, tmp_path / "w2", **env)
            second.wait_ready()
            await eventually(lambda: _bounced_count(kafka, events, at_least=EVENTS), timeout=120)
            # Settled: the next owner finished the pass (its mark moved past the bounces).
            await eventually(lambda: _no_chunks_left(kafka, "fbrestart"), timeout=60)
        finally:
            first.kill()
            if second is not None:
                second.stop()
        ids = {e["event_id"] for e in events}
        reported = [orjson.loads(r.value) for r in await read_all(kafka.bootstrap, "notification.status")]
        counts = Counter(
            s["notification_id"] for s in reported if s["event_id"] in ids and s["status"] == "bounced"
        )
        assert counts == Counter({f"{e['event_id']}:{DRAWER}": 1 for e in events})
        relayed = [orjson.loads(r.value)["email"] for r in await read_all(kafka.bootstrap, "email.bounced")]
        assert Counter(a for a in relayed if a in addresses) == Counter(dict.fromkeys(addresses, 1))


async def _bounced_count(kafka: EmbeddedKafka, events: list[dict[str, Any]], at_least: int = 1) -> int:
    """How many `bounced` statuses the events have (0 while fewer than `at_least`)."""
    ids = {e["event_id"] for e in events}
    found = sum(
        1
        for r in await read_all(kafka.bootstrap, "notification.status")
        if (v := orjson.loads(r.value))["event_id"] in ids and v["status"] == "bounced"
    )
    return found if found >= at_least else 0


async def _chunk_done(kafka: EmbeddedKafka, app_id: str) -> bool:
    """A chunk of bounces whose outcomes Kafka has (its outbox emptied) in the feedback marks."""
    for record in await read_all(kafka.bootstrap, f"{app_id}-feedback-marks-changelog"):
        key = orjson.loads(record.key)
        if (
            key.startswith("chunk:BounceEvent:")
            and record.value
            and orjson.loads(record.value)["outbox"] == []
        ):
            return True
    return False


async def _no_chunks_left(kafka: EmbeddedKafka, app_id: str) -> bool:
    """Every chunk row of the feedback marks table deleted again (its last changelog record a
    tombstone), and the bounce marks written."""
    latest: dict[str, bytes | None] = {}
    for record in await read_all(kafka.bootstrap, f"{app_id}-feedback-marks-changelog"):
        latest[orjson.loads(record.key)] = record.value
    chunks = [k for k, v in latest.items() if k.startswith("chunk:") and v is not None]
    return not chunks and any(k.startswith("mark:BounceEvent:") for k in latest)
