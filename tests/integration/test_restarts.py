"""Restarts lose no mail and send none twice: a burst for one popular giver, MC slow so that sends are
in flight, and the worker SIGKILLed (a crash) or SIGTERMed (a rolling deploy) in the middle of it.

The giver gets one email per packet drawn (one member, one template, seconds apart) and every drawer
shares one mobile number (a burst of welcome SMS to one number): exactly the notifications a match
of person, template and time cannot tell apart. Each test runs on a broker and sandbox of its own.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.domain.ledger import PENDING
from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import WorkerProcess, start_worker
from tests.integration.helpers import (
    drawn_event,
    eventually,
    fault,
    flow_caught_up,
    member,
    messages,
    notification_ids,
    private_stack,
    produce_events,
    read_all,
    sent_notifications,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

APP_ID = "restarts"
FRIENDS = 60
WORKER_ENV = {
    "APP_ID": APP_ID,
    "SESSION_TIMEOUT_SECONDS": "6",
    "MC_REQUEST_TIMEOUT_SECONDS": "10",
    "SEND_LOG_LAG_SECONDS": "2",
    "STOP_GRACE_SECONDS": "20",
}
DLQS = ("packet.drawn.dlq", "subscriber.ready.dlq", "stream_app.batches.dlq")


def burst() -> list[dict[str, Any]]:
    """One giver's packet drawn by FRIENDS friends; every friend gives the same mobile number."""
    giver = member("giver")
    return [
        drawn_event(
            event_id=f"burst-{i:03d}",
            giver=dict(giver),
            drawer=member(f"friend-{i:03d}", mobile="+886900000001"),
        )
        for i in range(FRIENDS)
    ]


async def _pending_left(kafka: EmbeddedKafka) -> list[str]:
    """Ledger entries whose last state is `pending`, read from the ledgers' changelogs."""
    last: dict[bytes, bytes] = {}
    for channel in ("email", "sms"):
        for record in await read_all(kafka.bootstrap, f"{APP_ID}-ledger-{channel}-changelog"):
            last[record.key or b""] = record.value or b""
    return [key.decode() for key, value in last.items() if orjson.loads(value)["state"] == PENDING]


async def _slow_burst(kafka: EmbeddedKafka, sandbox: SandboxProcess) -> set[str]:
    """Slow MC down, produce the burst and return once sends are in flight and some went out."""
    events = burst()
    fault(sandbox, target="rest", mode="slow", seconds=3, count=45)
    fault(sandbox, target="sms", mode="slow", seconds=3, count=20)
    await produce_events(kafka.bootstrap, events)
    await eventually(lambda: len(messages(sandbox)) >= 15, timeout=90)
    return set().union(*(notification_ids(e) for e in events))


async def _assert_each_once(
    kafka: EmbeddedKafka, sandbox: SandboxProcess, owed: set[str], label: str
) -> None:
    await eventually(lambda: set(sent_notifications(sandbox)) >= owed, timeout=180)
    await eventually(lambda: flow_caught_up(kafka.bootstrap, APP_ID), timeout=90)
    counts = Counter(sent_notifications(sandbox))
    lost = owed - set(counts)
    twice = {n: c for n, c in counts.items() if c > 1}
    pending = await _pending_left(kafka)
    dead = {topic: len(await read_all(kafka.bootstrap, topic)) for topic in DLQS}
    print(
        "RESTART",
        label,
        orjson.dumps(
            {"owed": len(owed), "lost": len(lost), "twice": len(twice), "pending": len(pending)}
        ).decode(),
    )
    assert not lost, sorted(lost)[:10]
    assert not twice, twice
    assert set(counts) == owed
    assert not pending, pending[:10]
    assert not any(dead.values()), dead


def _start(kafka: EmbeddedKafka, sandbox: SandboxProcess, root: Path, name: str) -> WorkerProcess:
    worker = start_worker(kafka, sandbox, root / name, **WORKER_ENV)
    worker.wait_ready()
    return worker


@pytest.mark.parametrize("stop", ["sigkill", "sigterm"])
async def test_a_burst_survives_a_restart_mid_send(tmp_path: Path, stop: str) -> None:
    with private_stack(tmp_path) as (kafka, sandbox):
        first = _start(kafka, sandbox, tmp_path, "w1")
        try:
            owed = await _slow_burst(kafka, sandbox)
            if stop == "sigkill":
                first.kill()
            else:
                # A rolling deploy: the stop lets the sends in hand finish and commits nothing past.
                assert first.stop() == 0, first.log_tail()
        finally:
            first.kill()
        second = _start(kafka, sandbox, tmp_path, "w2")
        try:
            await _assert_each_once(kafka, sandbox, owed, stop)
        finally:
            second.stop()


async def test_a_burst_survives_one_of_two_workers_stopping(tmp_path: Path) -> None:
    with private_stack(tmp_path) as (kafka, sandbox):
        first = _start(kafka, sandbox, tmp_path, "w1")
        second = _start(kafka, sandbox, tmp_path, "w2")
        try:
            owed = await _slow_burst(kafka, sandbox)
            assert first.stop() == 0, first.log_tail()  # the other takes over its partitions
            await _assert_each_once(kafka, sandbox, owed, "sigterm-one-of-two")
        finally:
            first.kill()
            second.stop()
