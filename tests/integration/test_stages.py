"""A worker that runs only some stages (`WORKER_STAGES`) does only their part of the flow.

Runs on its own broker and sandbox: another group consuming the same topics would send too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    drawn_event,
    eventually,
    fault,
    messages,
    print_mentions,
    private_stack,
    produce,
    read_all,
    ready_records,
    statuses,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, SandboxProcess]]:
    with private_stack(tmp_path) as stack:
        yield stack


async def test_a_worker_started_on_a_waiting_backlog_sends_all_of_it(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """A worker without senders makes 15 notifications ready and sends nothing; a full worker started
    afterwards, with those 15 waiting, sends every one, once.

    Without the fixes 2 and 3 of docs/faust-patches.md, about 1 start in 4 under load sent 14 of
    15: a record Faust fetched around its start-up rebalance never reached the agent and was never
    read again (subscriber.ready had no committed offset, so no rewind brought it back)."""
    kafka, sandbox = own_stack
    events = await _made_ready_upstream(kafka, sandbox, tmp_path)
    assert messages(sandbox) == []
    assert all([await statuses(kafka.bootstrap, e["event_id"]) == [] for e in events])
    worker = start_worker(kafka, sandbox, tmp_path / "full")
    try:
        worker.wait_ready()
        try:
            await eventually(lambda: len(messages(sandbox)) >= 15, timeout=60)
        except AssertionError:
            await _explain_missing(kafka, sandbox)
            raise
        for event in events:
            found = await eventually(lambda e=event: _final(kafka, e["event_id"]), timeout=30)
            # Each notification sent once; a record read again after the worker's start-up
            # rebalance rewound its partition may add a `duplicate` outcome, never a second send.
            sent = [s["notification_id"] for s in found if s["status"] == "sent"]
            assert len(sent) == len(set(sent)) == 3
            assert {s["status"] for s in found} <= {"sent", "duplicate"}
    finally:
        worker.stop()
    assert len(messages(sandbox)) == 15  # each notification once


async def test_a_worker_stopped_mid_import_leaves_the_batch_to_the_next_worker(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """A clean stop (SIGTERM, a deploy) while MC imports a file: the import is abandoned, not failed.
    Nothing goes to the DLQ, and the next worker redoes the import and sends each notification once.
    (Before, the import failed on the already closed MC client, went to the DLQ and was acked.)"""
    kafka, sandbox = own_stack
    fault(sandbox, target="import", mode="slow", seconds=8, count=1)
    event = drawn_event()
    first = start_worker(kafka, sandbox, tmp_path / "first")
    try:
        first.wait_ready()
        await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
        await eventually(lambda: _importing(sandbox), timeout=30)
    finally:
        assert first.stop() == 0
    log = first.log_path.read_text()
    assert "imports left for the next owner" in log and "import stage failed" not in log
    assert await read_all(kafka.bootstrap, "stream_app.batches.dlq") == []
    assert messages(sandbox, event) == []
    second = start_worker(kafka, sandbox, tmp_path / "second")
    try:
        second.wait_ready()
        found = await eventually(lambda: _final(kafka, event["event_id"]), timeout=60)
        assert {s["status"] for s in found} <= {"sent", "duplicate"}
    finally:
        second.stop()
    assert len(messages(sandbox, event)) == 3  # each notification once


def _importing(sandbox: SandboxProcess) -> bool:
    imports = httpx.get(f"{sandbox.http_url}_sandbox/imports", timeout=10).json()
    return any(job["status"] == "Processing" for job in imports)


async def _made_ready_upstream(
    kafka: EmbeddedKafka, sandbox: SandboxProcess, tmp_path: Path
) -> list[dict[str, Any]]:
    """Five events through a worker without senders: 15 notifications wait in subscriber.ready."""
    upstream = start_worker(kafka, sandbox, tmp_path / "up", WORKER_STAGES="intake,batcher,imports")
    try:
        upstream.wait_ready()
        events = [drawn_event() for _ in range(5)]
        for event in events:
            await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
        await eventually(lambda: _ready_count(kafka, events, 15), timeout=60)
    finally:
        upstream.stop()
    return events


async def _ready_count(kafka: EmbeddedKafka, events: list[dict[str, Any]], want: int) -> bool:
    found = [r for e in events for r in await ready_records(kafka.bootstrap, event_id=e["event_id"])]
    return len(found) >= want


async def _final(kafka: EmbeddedKafka, event_id: str) -> list[dict[str, Any]] | None:
    found = await statuses(kafka.bootstrap, event_id)
    return found if len({s["notification_id"] for s in found if s["status"] == "sent"}) >= 3 else None


async def _explain_missing(kafka: EmbeddedKafka, sandbox: SandboxProcess) -> None:
    sent = {(m["channel"], m["subscriber_key"]) for m in messages(sandbox)}
    for record in await read_all(kafka.bootstrap, "subscriber.ready"):
        ready = orjson.loads(record.value)
        if (ready["channel"], ready["subscriber_key"]) in sent:
            continue
        print("MISSING", record.partition, record.offset, ready["notification_id"])
        await print_mentions(
            kafka.bootstrap,
            [ready["notification_id"].encode()],
            (
                "notification.status",
                "stream_app.trace",
                "stream_app-ledger-email-changelog",
                "stream_app-ledger-sms-changelog",
            ),
        )


@pytest.mark.parametrize("first", ["upstream", "senders"])
async def test_senders_on_a_worker_of_their_own_beside_an_upstream_worker(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path, first: str
) -> None:
    """The stages scale apart: an `intake,batcher,imports` worker and a `senders` worker in one
    group, both running, send every notification once (new and known subscribers). Either may be
    the group's leader, which computes the assignment from its own tables."""
    kafka, sandbox = own_stack
    stages = {"upstream": "intake,batcher,imports", "senders": "senders"}
    order = [first, *(name for name in stages if name != first)]
    workers = {}
    for name in order:
        workers[name] = start_worker(
            kafka,
            sandbox,
            tmp_path / name,
            WORKER_STAGES=stages[name],
            MC_FLEET_REQUESTS_PER_SECOND="20",  # each of the two takes half (ops/fleet_share.py)
        )
        workers[name].wait_ready()
    upstream, senders = workers["upstream"], workers["senders"]
    try:
        first = [drawn_event() for _ in range(5)]
        again = [drawn_event(drawer=e["drawer"], giver=e["giver"]) for e in first]  # known by then
        for event in first:
            await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
        await eventually(lambda: len(messages(sandbox)) >= 15, timeout=60)
        for event in again:
            await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
        await eventually(lambda: len(messages(sandbox)) >= 30, timeout=60)
        sent = [m["attributes"]["NotificationId"] for m in messages(sandbox)]
        assert len(sent) == len(set(sent)) == 30
        for worker in (upstream, senders):
            await eventually(lambda w=worker: "10.00/s of the fleet's 20.00/s (2 workers)" in w.log_tail(400))
    finally:
        upstream.stop()
        senders.stop()
