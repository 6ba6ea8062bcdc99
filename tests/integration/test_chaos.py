"""Chaos: two workers, SIGKILLs, a failing MC, then an operator's kcat replay of every
`subscriber.ready` record. Every notification is sent exactly once; nothing is lost.

Members recur as in the campaign: 600 events among 200 members, a popular giver in a third of them.

Run alone with `.venv/bin/python -m pytest -m chaos`. It brings its own broker and sandbox, so the
counts below are this test's alone.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.worker import WorkerProcess, start_worker
from tests.integration.helpers import (
    campaign,
    eventually,
    fault,
    kcat_produce,
    notification_ids,
    print_mentions,
    private_stack,
    read_all,
    sent_notifications,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

EVENTS = 600
MEMBERS = 200
BAD_EVERY = 12  # one malformed record among every 12
RATE_PER_S = 30.0
REQUEST_TIMEOUT_S = 5


class Stack:
    def __init__(self, kafka: EmbeddedKafka, sandbox: Any, root: Path) -> None:
        self.kafka, self.sandbox, self.root = kafka, sandbox, root
        self.workers: dict[str, WorkerProcess] = {}
        self.kills = 0

    def start(self, name: str) -> WorkerProcess:
        worker = start_worker(
            self.kafka,
            self.sandbox,
            self.root / name,
            RETRY_BASE_SECONDS="0.2",
            RETRY_MAX_SECONDS="2",
            SESSION_TIMEOUT_SECONDS="6",
            # Paced under MC's budget, which the sandbox keeps here (emails batched, the default).
            MC_MAX_REQUESTS_PER_SECOND="30",
            MC_REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT_S),
        )
        self.workers[name] = worker
        return worker

    def kill_and_restart(self, name: str) -> WorkerProcess:
        self.workers[name].kill()
        self.kills += 1
        return self.start(name)


@pytest.fixture
def chaos_stack(tmp_path: Path) -> Any:
    budget = ("--calls-per-minute", "mc")  # MC's 2,500 REST and 2,000 SOAP calls a minute
    with private_stack(tmp_path, "--message-cap", "100000", *budget, import_delay=0.5) as (kafka, sandbox):
        stack = Stack(kafka, sandbox, tmp_path)
        try:
            yield stack
        finally:
            for worker in stack.workers.values():
                worker.stop()


async def test_kills_and_mc_failures_lose_nothing_and_send_nothing_twice(chaos_stack: Stack) -> None:
    stack = chaos_stack
    first, second = stack.start("w1"), stack.start("w2")
    first.wait_ready()
    second.wait_ready()

    rng = random.Random(20261124)
    events = iter(campaign("chaos", EVENTS, MEMBERS, rng))
    expected: set[str] = set()  # the NotificationId of every notification owed
    bad_keys: set[bytes] = set()
    records: list[tuple[bytes, bytes]] = []
    for i in range(EVENTS):
        event = next(events)
        if i % BAD_EVERY == BAD_EVERY - 1:
            key = f"bad-{i}".encode()
            bad_keys.add(key)
            records.append((key, rng.choice([b"{not json", orjson.dumps({"event_id": f"x-{i}"})])))
            continue
        expected |= notification_ids(event)
        records.append((event["packet_id"].encode(), orjson.dumps(event)))

    # MC misbehaves throughout: a share of REST, SOAP (batched emails among them) and SMS calls
    # fail, a few sends are carried out but answered only after the client gave up on them, and
    # one SFTP session drops.
    fault(stack.sandbox, target="rest", mode="error500", probability=0.08)
    fault(stack.sandbox, target="soap", mode="error500", probability=0.05)
    fault(stack.sandbox, target="sms", mode="error429", probability=0.1)
    late = REQUEST_TIMEOUT_S + 3
    fault(stack.sandbox, target="soap", mode="hold_answer", min_items=1, count=3, seconds=late)
    fault(stack.sandbox, target="sms", mode="hold_answer", min_items=1, count=2, seconds=late)
    fault(stack.sandbox, target="sftp", mode="disconnect", count=1)

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap, acks="all")
    await producer.start()
    kill_plan = {len(records) // 5: "w1", len(records) // 2: "w2", (4 * len(records)) // 5: "w1"}
    try:
        for n, (key, value) in enumerate(records):
            await producer.send_and_wait("packet.drawn", value, key=key)
            if n in kill_plan:
                stack.kill_and_restart(kill_plan[n])
            await asyncio.sleep(1 / RATE_PER_S)
    finally:
        await producer.stop()

    def sent_keys() -> list[str]:
        return sent_notifications(stack.sandbox)

    deadline = time.monotonic() + 240
    while set(sent_keys()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(1)
    # Late duplicates would come from replays after the restarts: let the workers go idle first.
    await _settle(stack)

    counts = Counter(sent_keys())
    missing = expected - set(counts)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    unexpected = set(counts) - expected
    stats = httpx.get(f"{stack.sandbox.http_url}_sandbox/stats", timeout=10).json()
    calls = httpx.get(f"{stack.sandbox.http_url}_sandbox/calls", timeout=10).json()
    dlq_keys = {r.key for r in await read_all(stack.kafka.bootstrap, "packet.drawn.dlq")}
    answers_held = httpx.get(f"{stack.sandbox.http_url}_sandbox/held", timeout=10).json()
    held = Counter(h["target"] for h in answers_held)
    report = {
        "events": len(records),
        "expected_notifications": len(expected),
        "sent": sum(counts.values()),
        "missing": len(missing),
        "duplicates": len(duplicates),
        "unexpected": len(unexpected),
        "kills": stack.kills,
        "bad_inputs": len(bad_keys),
        "bad_in_dlq": len(bad_keys & dlq_keys),
        "faults_injected": stats.get("faults_injected"),
        "answered_after_the_client_gave_up": dict(held),
        "sftp_uploads": stats.get("sftp_uploads"),
        "mc_calls_peak_per_min": {f: c["peak_per_minute"] for f, c in calls.items()},
        "mc_throttled": sum(c["throttled_total"] for c in calls.values()),
    }
    print("CHAOS", orjson.dumps(report).decode())
    assert stack.kills >= 3
    if missing:
        await _explain(stack, sorted({key.split(":")[0] for key in missing})[:5])
    assert not missing, sorted(missing)[:20]
    assert not duplicates, duplicates
    assert not unexpected, sorted(unexpected)[:20]
    assert bad_keys <= dlq_keys
    assert stats.get("faults_injected", 0) > 0
    assert report["answered_after_the_client_gave_up"] == {"soap": 3, "sms": 2}

    # At 3 a.m. an operator replays every subscriber.ready record with kcat (CRC32 partitioner, no
    # headers): a duplicate outcome for each, no send.
    if shutil.which("kcat"):
        ready = await read_all(stack.kafka.bootstrap, "subscriber.ready")
        before = await _duplicate_outcomes(stack)
        kcat_produce(stack.kafka.bootstrap, "subscriber.ready", ready)
        await eventually(lambda: _duplicate_outcomes_reach(stack, before + len(ready)), timeout=180)
        await _settle(stack)
        after = Counter(sent_keys())
        extra = sum(after.values()) - sum(counts.values())
        print("CHAOS kcat replay", orjson.dumps({"replayed": len(ready), "extra_sends": extra}).decode())
        assert after == counts


async def _duplicate_outcomes(stack: Stack) -> int:
    records = await read_all(stack.kafka.bootstrap, "notification.status")
    return sum(1 for r in records if orjson.loads(r.value)["status"] == "duplicate")


async def _duplicate_outcomes_reach(stack: Stack, count: int) -> bool:
    return await _duplicate_outcomes(stack) >= count


async def _explain(stack: Stack, event_ids: list[str]) -> None:
    """Print what the topics and the worker logs know of each missing notification's event."""
    await print_mentions(
        stack.kafka.bootstrap,
        (event_id.encode() for event_id in event_ids),
        ("stream_app.trace", "notification.status", "subscriber.ready", "subscriber.ready.dlq"),
    )
    for name, worker in stack.workers.items():
        for path in sorted(worker.log_path.parent.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(event_id in line for event_id in event_ids) or "DROPPED" in line:
                    print(f"EXPLAIN {name}/{path.name}", line[:400])


async def _settle(stack: Stack, quiet_for: float = 8.0, timeout: float = 90.0) -> None:
    """Wait until no new outcome has appeared on notification.status for `quiet_for` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(await read_all(stack.kafka.bootstrap, "notification.status"))
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            return
        await asyncio.sleep(1)
