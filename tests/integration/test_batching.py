"""Batched sends (issue 23) through a real worker, broker and sandbox: notifications ready together
share MC calls (classic emails by SOAP Create, Transactional Messaging by `recipients`, MobileConnect
SMS by `Subscribers`), and each keeps its own outcome: a refused one fails alone, its batch-mates are
sent once each, nothing is dead-lettered.

The batches are made certain, not hoped for: MC holds its answers (the sandbox's `hold_answer`
fault), so the first call of each group stays in flight (MC_CALLS_IN_FLIGHT=1) while the others'
sends are marked `pending` (read from the ledger's changelog) and wait; then the answers go. MC's
own record of each call (`GET /_sandbox/held`: the NotificationIds each call carried) says how they
were grouped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stream_app.domain.notifications import plan
from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    clear_faults,
    drawn_event,
    eventually,
    fault,
    messages,
    private_stack,
    produce,
    produce_events,
    read_all,
    statuses,
)
from tests.sandbox.helpers import create_subscribers, token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

DRAWER, GIVER, WELCOME = "packet-drawn-drawer", "packet-drawn-giver", "packet-drawn-welcome"
EVENTS = 10


@pytest.mark.parametrize("api", ["triggered", "transactional"])
async def test_emails_ready_together_share_calls_and_a_refused_one_fails_alone(
    tmp_path: Path, api: str
) -> None:
    """Ten events' emails, among them one to an address MC refuses (`.c` is no top-level domain to
    MC, though our syntax check lets it by) and, on the classic path, one to a subscriber MC holds
    (Held: refused per object, §2.6). The Transactional API takes a Held subscriber's message and
    reports it NotSent later (§3.2): there it ends `not_sent` through MC's feedback. MC's import
    would refuse the bad address first (its row error makes the notification `invalid` before any
    send), so that one notification is put on subscriber.ready directly, as a replay would."""
    target = "soap" if api == "triggered" else "rest"
    app_id = f"batch-{api}"
    with private_stack(tmp_path) as (kafka, sandbox):
        worker = start_worker(
            kafka,
            sandbox,
            tmp_path / "worker",
            APP_ID=app_id,
            MC_EMAIL_API=api,
            MC_CALLS_IN_FLIGHT="1",
            FEEDBACK_INTERVAL_SECONDS="0" if api == "triggered" else "1",
        )
        try:
            worker.wait_ready()
            pilot = drawn_event(drawer__mobile=None)
            held = drawn_event(drawer__mobile=None)
            invalid = drawn_event(drawer__mobile=None)
            invalid["drawer"]["email"] = invalid["drawer"]["email"].replace("example.com", "example.c")
            create_subscribers(
                sandbox.http_url,
                token(sandbox.http_url),
                [(held["drawer"]["member_id"], held["drawer"]["email"])],
                status="Held",
            )
            rest = [drawn_event(drawer__mobile=None) for _ in range(EVENTS - 3)] + [held]
            (bad,) = [r for r in plan("packet.drawn", invalid)[0] if r["template"] == DRAWER]
            expected = {f"{e['event_id']}:{t}" for e in [pilot, *rest] for t in (DRAWER, GIVER)}
            expected.add(bad["notification_id"])
            refused = {f"{invalid['event_id']}:{DRAWER}"} | (
                {f"{held['event_id']}:{DRAWER}"} if api == "triggered" else set()
            )

            calls = await _batched(kafka, sandbox, app_id, "email", target, pilot, rest, extra=[bad])
            outcomes = await eventually(
                lambda: _outcomes(kafka, [pilot, *rest, invalid], len(expected)), timeout=120, interval=1
            )
            dlq = await read_all(kafka.bootstrap, "subscriber.ready.dlq")
            emails = [m for m in messages(sandbox) if m["channel"] == "email"]
            not_sent = None
            if api == "transactional":
                not_sent = await eventually(
                    lambda: _feedback(kafka, held, DRAWER, "not_sent"), timeout=60, interval=1
                )
        finally:
            worker.stop()

    assert set(outcomes) == expected
    failed = {n: s for n, s in outcomes.items() if s["status"] == "failed"}
    assert set(failed) == refused
    for status in failed.values():
        assert status["reason"].startswith("MC refused: ") and status["attempts"] == 1
    if api == "triggered":
        assert "held" in failed[f"{held['event_id']}:{DRAWER}"]["reason"].lower()
    else:
        assert not_sent is not None and "Held" in not_sent["reason"]
    assert all(s["status"] == "sent" and s["attempts"] == 1 for n, s in outcomes.items() if n not in refused)
    # MC sent every other notification once, and none of the refused ones.
    counts = Counter(m["attributes"].get("NotificationId") for m in emails)
    accepted = expected - refused
    assert counts == Counter(accepted)
    _assert_batched(calls, accepted)
    assert dlq == []


async def test_sms_ready_together_share_a_request_and_each_number_has_its_own_delivery(
    tmp_path: Path,
) -> None:
    """Welcome SMS through MobileConnect, many `Subscribers` per request and one tokenId for them
    all; one number texted STOP: MC leaves it out, and only that number ends `undeliverable`, its
    request-mates `delivered` (each by its own number's tracking in the token's deliveries, §4.2)."""
    app_id = "batch-sms"
    with private_stack(tmp_path) as (kafka, sandbox):
        worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID=app_id, MC_CALLS_IN_FLIGHT="1")
        try:
            worker.wait_ready()
            pilot = drawn_event()
            rest = [drawn_event() for _ in range(EVENTS - 1)]
            stopped = rest[-1]
            number = stopped["drawer"]["mobile"].removeprefix("+")
            headers = {"Authorization": f"Bearer {token(sandbox.http_url)}"}
            for text in ("EZTABLE", "STOP"):  # texted the keyword in, then STOP
                mo = {"mobileNumbers": [number], "shortCode": "88588", "messageText": text}
                answer = httpx.post(f"{sandbox.http_url}sms/v1/queueMO", json=mo, headers=headers, timeout=10)
                assert answer.status_code == 202, answer.text

            calls = await _batched(kafka, sandbox, app_id, "sms", "sms", pilot, rest)
            finals = {
                e["event_id"]: await eventually(lambda e=e: _sms_final(kafka, e), timeout=90, interval=1)
                for e in [pilot, *rest]
            }
            sms = [m for m in messages(sandbox) if m["channel"] == "sms"]
            dlq = await read_all(kafka.bootstrap, "subscriber.ready.dlq")
        finally:
            worker.stop()

    expected = {f"{e['event_id']}:{WELCOME}" for e in [pilot, *rest]}
    assert Counter(m["attributes"].get("NotificationId") for m in sms) == Counter(expected)
    _assert_batched(calls, expected)
    assert finals.pop(stopped["event_id"])["status"] == "undeliverable"
    assert {s["status"] for s in finals.values()} == {"delivered"}
    # The stopped number rode with others: one token, several numbers, their own fates.
    (token_of_stopped,) = {m["id"].split(":")[0] for m in sms if m["to"] == number}
    assert sum(m["id"].startswith(f"{token_of_stopped}:") for m in sms) > 1
    # MC's stored text rendered each subscriber's own attributes (no override text).
    for m in sms:
        assert m["text"].startswith("TABLE 送你 $250 紅包！") and m["text"].endswith("祝 EZ 用餐愉快。")
    assert dlq == []


# --- helpers ----------------------------------------------------------------------------------------


async def _batched(
    kafka: EmbeddedKafka,
    sandbox: SandboxProcess,
    app_id: str,
    channel: str,
    target: str,
    pilot: dict[str, Any],
    rest: list[dict[str, Any]],
    extra: Sequence[dict[str, Any]] = (),
) -> list[list[str]]:
    """The pilot's sends go first and MC holds their answers, so its calls stay in flight; the
    others' sends are marked `pending` meanwhile and wait for a call slot; then MC answers the
    pilot's calls, the waiting sends go in the next ones (held too, to be read), and MC answers all.
    Returns the NotificationIds each of these calls carried, as MC saw them."""
    # Transactional Messaging: a request per definition (the pilot's two emails, two calls); a SOAP
    # Create carries any definitions' emails, a MobileConnect request one message's SMS.
    groups = 2 if target == "rest" else 1
    # The pilot's calls, then the batches': each held until the test lets it go.
    fault(sandbox, target=target, mode="hold_answer", seconds=120, count=2 * groups)
    await produce_events(kafka.bootstrap, [pilot])
    await eventually(lambda: len(_held(sandbox)) >= groups, timeout=60)
    await produce_events(kafka.bootstrap, rest)
    for ready in extra:
        await produce(kafka.bootstrap, "subscriber.ready", ready, key=ready["notification_id"].encode())
    waiting = {f"{e['event_id']}:{t}" for e in rest for t in _templates(channel)}
    waiting |= {r["notification_id"] for r in extra}
    await eventually(lambda: _pending(kafka, app_id, channel, waiting), timeout=60, interval=0.5)
    httpx.delete(f"{sandbox.http_url}_sandbox/held", timeout=10).raise_for_status()
    await eventually(lambda: sum(h["holding"] for h in _held(sandbox)) >= groups, timeout=60)
    calls = [h["notification_ids"] for h in _held(sandbox) if h["target"] == target]
    clear_faults(sandbox)  # lets the held answers go; later calls are not held
    return calls


def _held(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{sandbox.http_url}_sandbox/held", timeout=10).json()
    return found


def _templates(channel: str) -> tuple[str, ...]:
    return (DRAWER, GIVER) if channel == "email" else (WELCOME,)


async def _pending(kafka: EmbeddedKafka, app_id: str, channel: str, notifications: set[str]) -> bool:
    """Whether every one of these notifications has its `pending` mark in the ledger's changelog."""
    marked = set()
    for record in await read_all(kafka.bootstrap, f"{app_id}-ledger-{channel}-changelog"):
        if record.value and orjson.loads(record.value).get("state") == "pending":
            marked.add(str(orjson.loads(record.key)))
    return notifications <= marked


def _assert_batched(calls: list[list[str]], accepted: set[str]) -> None:
    """The calls MC held (the pilot's, then the batches) carried many notifications: fewer calls
    than notifications, and the waiting ones together."""
    carried = [n for call in calls for n in call]
    assert len(carried) == len(set(carried))  # no notification in two calls
    assert set(carried) <= accepted
    assert max(len(call) for call in calls) > 1
    assert len(calls) < len(carried)


async def _outcomes(
    kafka: EmbeddedKafka, events: list[dict[str, Any]], owed: int
) -> dict[str, dict[str, Any]] | None:
    """Each email notification's sender outcome, once every one has one."""
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        for s in await statuses(kafka.bootstrap, event["event_id"]):
            if s["status"] != "duplicate":
                assert s["notification_id"] not in found, f"two outcomes for {s['notification_id']}"
                found[s["notification_id"]] = s
    return found if len(found) == owed else None


async def _feedback(
    kafka: EmbeddedKafka, event: dict[str, Any], template: str, wanted: str
) -> dict[str, Any] | None:
    found = await statuses(kafka.bootstrap, event["event_id"], feedback=True)
    return next((s for s in found if s["template"] == template and s["status"] == wanted), None)


async def _sms_final(kafka: EmbeddedKafka, event: dict[str, Any]) -> dict[str, Any] | None:
    found = await statuses(kafka.bootstrap, event["event_id"], feedback=True)
    return next(
        (s for s in found if s["template"] == WELCOME and s["status"] in ("delivered", "undeliverable")), None
    )
