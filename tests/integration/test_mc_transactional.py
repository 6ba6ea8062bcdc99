"""MC_EMAIL_API=transactional (issue 18): the emails (and, with MC_SMS_API=transactional, the welcome
SMS) go through the Transactional Messaging API, one message per notification under a messageKey
derived from its ledger key; MC's refusal of a used key (109110) and its status route settle what a
crash left open. Each test brings its own broker and sandbox: the ledger state it plants and the
messages it counts are its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.cli.topics import ensure_topics
from stream_app.contract.topics import topic_partitions
from stream_app.domain.ledger import FAILED, PENDING, Entry, message_key
from stream_app.localkafka import EmbeddedKafka
from stream_app.mc import SubscriberRow
from stream_app.settings import Settings
from stream_app.stages.senders import ALREADY_AT_MC
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    drawn_event,
    eventually,
    mc_client,
    messages,
    private_stack,
    produce_events,
    statuses,
    unique,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TRANSACTIONAL = {"MC_EMAIL_API": "transactional", "MC_SMS_API": "transactional", "SMS_QUIET_HOURS": ""}


async def test_an_events_notifications_go_once_through_transactional_messaging(tmp_path: Path) -> None:
    """Two emails with the right sender name and the welcome SMS, each the message of its own
    messageKey; a hard bounce reported by ENS puts the address on the suppression list."""
    with private_stack(tmp_path) as (kafka, sandbox):
        worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID="tx", **TRANSACTIONAL)
        try:
            worker.wait_ready()
            event = drawn_event()
            bouncing = drawn_event(giver__email=f"{unique('hb')}@bounce.example")
            await produce_events(kafka.bootstrap, [event, bouncing])

            sent = await eventually(lambda: _settled(kafka, event, 3), timeout=90)
            assert {s["template"]: s["status"] for s in sent} == {
                "packet-drawn-drawer": "sent",
                "packet-drawn-giver": "sent",
                "packet-drawn-welcome": "sent",
            }
            assert all(s["mc_request_id"] and s["attempts"] == 1 and not s["reason"] for s in sent)

            by_definition = {m["definition_key"]: m for m in messages(sandbox, event)}
            assert len(messages(sandbox, event)) == 3  # once each
            drawer, giver = by_definition["packet-drawn-drawer"], by_definition["packet-drawn-giver"]
            welcome = by_definition["packet-drawn-welcome"]
            for message, template in ((drawer, "packet-drawn-drawer"), (giver, "packet-drawn-giver")):
                assert message["api"] == "transactional"
                assert message["id"] == message_key(f"{event['event_id']}:{template}")
            # The sender name rode as the FromName attribute, which the definition's From Name reads.
            assert drawer["from_name"] == "TABLE via EZTABLE" and giver["from_name"] == "EZ via EZTABLE"
            assert drawer["attributes"]["FromName"] == "TABLE via EZTABLE"
            assert drawer["text"] == "親愛的 EZ 恭喜你好手氣抽到 TABLE 送的紅包 $250！訂餐廳吃飯可直接用！"
            assert welcome["api"] == "transactional-sms" and welcome["to"] == event["drawer"]["mobile"][1:]
            assert welcome["id"] == message_key(f"{event['event_id']}:packet-drawn-welcome")
            assert "TABLE" in welcome["text"] and "$250" in welcome["text"]

            # The hard bounce reaches the worker through ENS, as on real MC, and is suppressed...
            address = bouncing["giver"]["email"]
            await eventually(lambda: _suppressed(worker, address), timeout=60)
            # ...so the next email to that address is not sent.
            again = drawn_event(giver=bouncing["giver"])
            await produce_events(kafka.bootstrap, [again])
            final = await eventually(lambda: _settled(kafka, again, 3), timeout=60)
            giver_status = next(s for s in final if s["template"] == "packet-drawn-giver")
            assert giver_status["status"] == "suppressed"
            to_address = [m for m in messages(sandbox) if m["to"] == address]
            assert len(to_address) == 1
        finally:
            worker.stop()


async def test_a_crash_between_mcs_accepting_and_sent_ends_with_one_email_each(tmp_path: Path) -> None:
    """A worker died with three sends of one giver and template open: two `pending` (MC had
    accepted the first, never received the second) and one `failed` after a try that timed out
    although MC had it (its DLQ copy replayed). The next worker asks MC's status route for the
    pending ones and meets 109110 for the failed one: each email exists once."""
    app_id = "txcrash"
    with private_stack(tmp_path) as (kafka, sandbox):
        settings = Settings(broker_url=kafka.url)
        await ensure_topics(settings, {**topic_partitions(settings), f"{app_id}-ledger-email-changelog": 4})
        giver, email = unique("M"), f"{unique('g')}@example.com"
        accepted, never_arrived, timed_out = (ready_record(unique("d"), giver, email) for _ in range(3))
        client = mc_client(sandbox)
        try:
            assert all(r.ok for r in await client.soap.upsert_subscribers([SubscriberRow(giver, email)]))
            for record in (accepted, timed_out):  # what MC got before the crash, as the sender sends
                await client.rest.send_transactional(
                    "email",
                    record["template"],
                    message_key(record["notification_id"]),
                    to=email,
                    contact_key=giver,
                    attributes={
                        **record["attributes"],
                        "FromName": record["from_name"],
                        "NotificationId": record["notification_id"],
                    },
                )
        finally:
            await client.close()
        ledger = {
            accepted["notification_id"]: Entry(PENDING, time.time() - 1),
            never_arrived["notification_id"]: Entry(PENDING, time.time() - 1),
            timed_out["notification_id"]: Entry(FAILED, time.time() - 1, 1, reason="gave up: timed out"),
        }
        await plant(kafka, app_id, [accepted, never_arrived, timed_out], ledger)

        worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID=app_id, **TRANSACTIONAL)
        try:
            worker.wait_ready()
            found = await eventually(lambda: _outcomes(kafka, accepted, never_arrived, timed_out), timeout=90)
        finally:
            worker.stop()
        sent = [m["attributes"].get("EventId") for m in messages(sandbox) if m["to"] == email]

    by_event = {s["event_id"]: s for s in found}
    assert {s["status"] for s in found} == {"sent"}, found
    assert "MC's status" in by_event[accepted["event_id"]]["reason"]
    assert by_event[never_arrived["event_id"]]["mc_request_id"]  # sent now, not assumed
    assert by_event[timed_out["event_id"]]["reason"] == ALREADY_AT_MC
    assert sorted(sent) == sorted(r["event_id"] for r in (accepted, never_arrived, timed_out))  # once each


# --- helpers ----------------------------------------------------------------------------------------


def ready_record(event_id: str, member: str, email: str) -> dict[str, Any]:
    template = "packet-drawn-giver"
    return {
        "notification_id": f"{event_id}:{template}",
        "event_id": event_id,
        "event_type": "packet.drawn",
        "channel": "email",
        "template": template,
        "subscriber_key": member,
        "email": email,
        "mobile": None,
        "from_name": "EZ via EZTABLE",
        "attributes": {
            "EventId": event_id,
            "DrawerName": "EZ",
            "GiverName": "TABLE",
            "Amount": "250",
            "Cashback": "100",
        },
    }


async def plant(
    kafka: EmbeddedKafka, app_id: str, records: list[dict[str, Any]], ledger: dict[str, Entry]
) -> None:
    """The records on subscriber.ready, and their ledger rows as Faust writes a table row (the key
    JSON-encoded) on the partition of the record."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            meta = await producer.send_and_wait(
                "subscriber.ready", orjson.dumps(record), key=record["notification_id"].encode()
            )
            await producer.send_and_wait(
                f"{app_id}-ledger-email-changelog",
                ledger[record["notification_id"]].dumps(),
                key=orjson.dumps(record["notification_id"]),
                partition=meta.partition,
            )
    finally:
        await producer.stop()


async def _settled(kafka: EmbeddedKafka, event: dict[str, Any], count: int) -> list[dict[str, Any]] | None:
    found = [s for s in await statuses(kafka.bootstrap, event["event_id"]) if s["status"] != "duplicate"]
    return found if len(found) >= count else None


async def _outcomes(kafka: EmbeddedKafka, *records: dict[str, Any]) -> list[dict[str, Any]] | None:
    """One outcome per record (a record read again after the start-up rebalance adds `duplicate`)."""
    found = [
        s
        for r in records
        for s in await statuses(kafka.bootstrap, r["event_id"])
        if s["status"] != "duplicate"
    ]
    return found if len(found) >= len(records) else None


def _suppressed(worker: Any, address: str) -> bool:
    answer = httpx.get(f"{worker.web_url}suppressed/{address}/", timeout=10).json()
    return bool(answer.get("suppressed"))
