"""The crash window: a worker died after writing `pending` and before writing `sent`.

The next owner of the partition asks MC what it recorded: a send MC accepted is not repeated, a send MC
never received goes out once. Runs on its own broker and sandbox (and the production table store,
RocksDB), so the ledger state it plants is the only state there is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.broker import EmbeddedKafka
from stream_app.ledger import PENDING, Entry
from stream_app.mc import MarketingCloud, SubscriberRow
from stream_app.settings import Settings
from stream_app.topics import ensure_topics
from tests.fixtures.ports import free_port
from tests.fixtures.sandbox import SandboxProcess, start_sandbox
from tests.fixtures.worker import start_worker
from tests.integration.helpers import eventually, statuses, unique

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

APP_ID = "crashwin"
TEMPLATE = "packet-drawn-drawer"


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, SandboxProcess]]:
    kafka = EmbeddedKafka(port=free_port(), data_dir=tmp_path / "kafka")
    kafka.start()
    sandbox = start_sandbox(tmp_path / "sandbox")
    try:
        yield kafka, sandbox
    finally:
        sandbox.stop()
        kafka.stop()


def ready_record(event_id: str, member: str, email: str) -> dict[str, Any]:
    return {
        "notification_id": f"{event_id}:{TEMPLATE}",
        "event_id": event_id,
        "event_type": "packet.drawn",
        "channel": "email",
        "template": TEMPLATE,
        "subscriber_key": member,
        "email": email,
        "mobile": None,
        "from_name": "TABLE via EZTABLE",
        "attributes": {
            "EventId": event_id,
            "DrawerName": "EZ",
            "GiverName": "TABLE",
            "Amount": "250",
            "Cashback": "100",
        },
    }


async def test_pending_sends_are_settled_with_mc_not_guessed(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    kafka, sandbox = own_stack
    from stream_app.app import topic_partitions

    settings = Settings(broker_url=kafka.url)
    await ensure_topics(settings, {**topic_partitions(), f"{APP_ID}-ledger-email-changelog": 4})

    # Two subscribers MC knows; both of their notifications were `pending` when "the worker died".
    accepted = ready_record(unique("d"), unique("M"), f"{unique('a')}@example.com")
    never_arrived = ready_record(unique("d"), unique("M"), f"{unique('b')}@example.com")
    client = MarketingCloud(
        Settings(
            mc_auth_url=sandbox.http_url,
            mc_sftp_port=sandbox.sftp_port,
            mc_sftp_known_hosts=sandbox.known_hosts,
        )
    )
    try:
        results = await client.soap.upsert_subscribers(
            SubscriberRow(r["subscriber_key"], r["email"]) for r in (accepted, never_arrived)
        )
        assert all(r.ok for r in results)
        pending_at = time.time() - 1
        # MC accepted this one just before the crash...
        await client.rest.send_email(
            TEMPLATE,
            to=accepted["email"],
            subscriber_key=accepted["subscriber_key"],
            from_name=accepted["from_name"],
            attributes=accepted["attributes"],
        )
    finally:
        await client.close()
    # ...and neither outcome reached the ledger: both are `pending` in its changelog.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for record in (accepted, never_arrived):
            meta = await producer.send_and_wait(
                "subscriber.ready", orjson.dumps(record), key=record["notification_id"].encode()
            )
            # As Faust writes a table row: the key JSON-encoded, the value as the ledger dumps it.
            await producer.send_and_wait(
                f"{APP_ID}-ledger-email-changelog",
                Entry(PENDING, pending_at).dumps(),
                key=orjson.dumps(record["notification_id"]),
                partition=meta.partition,
            )
    finally:
        await producer.stop()

    worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID=APP_ID, TABLE_STORE="rocksdb://")
    try:
        worker.wait_ready()
        found = await eventually(lambda: _outcomes(kafka, accepted, never_arrived), timeout=60)
    finally:
        worker.stop()

    by_event = {s["event_id"]: s for s in found}
    assert by_event[accepted["event_id"]]["status"] == "sent"
    assert "confirmed by MC" in by_event[accepted["event_id"]]["reason"]
    assert by_event[never_arrived["event_id"]]["status"] == "sent"
    assert by_event[never_arrived["event_id"]]["mc_request_id"]
    sent = httpx.get(f"{sandbox.http_url}_sandbox/messages", timeout=10).json()
    per_member = {m["subscriber_key"]: 0 for m in sent}
    for m in sent:
        per_member[m["subscriber_key"]] += 1
    assert per_member[accepted["subscriber_key"]] == 1  # not sent again
    assert per_member[never_arrived["subscriber_key"]] == 1  # sent, once


async def _outcomes(kafka: EmbeddedKafka, *records: dict[str, Any]) -> list[dict[str, Any]] | None:
    found = [s for r in records for s in await statuses(kafka.bootstrap, r["event_id"])]
    return found if len(found) == len(records) else None
