"""Production's shape under load (issue 17): three Kafka brokers (a local KRaft cluster), every topic the
workers create with three replicas and min ISR 2, two full workers, a steady stream of events of new
and known subscribers with 5% malformed records. Meanwhile: the broker leading the most
subscriber.ready and send-ledger partitions is SIGKILLed and restarted 20 s later; later another
broker is SIGKILLed for good (two of three keep min ISR 2); one worker is rolled (SIGTERM, started
again); a senders-only worker joins and leaves. At the sandbox: every notification owed sent exactly
once, every malformed record in packet.drawn.dlq, and a member imported before the first broker kill
still known after it (the known-subscribers table survived).

Prints one `CLUSTER {...}` line. A cluster of its own (one cluster at a time: three JVMs).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from stream_app.contract.topics import INTAKE_HEADER
from stream_app.localkafka import KafkaCluster, PartitionState
from stream_app.stages.intake.known_subscribers import changelog_topic
from tests.fixtures.sandbox import SandboxProcess, start_sandbox
from tests.fixtures.worker import WorkerProcess, start_worker
from tests.integration.helpers import (
    campaign,
    drawn_event,
    eventually,
    flow_caught_up,
    free_ports,
    member,
    messages,
    notification_ids,
    print_mentions,
    read_all,
    sample,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(1500),
]

APP_ID = "cluster"
RUN = "cl"
MIN_RECORDS = 1000
RATE_PER_S = 10.0
MALFORMED_EVERY = 20  # 5%
FRESH_EVERY = 10  # an event of two members never seen before: new subscribers all along the run
MEMBERS = 250
BROKER_DOWNTIME_S = 20.0
W3_SENDS = 30  # the senders-only worker leaves once it has sent this many
READY_TIMEOUT = 180.0
LEDGER = f"{APP_ID}-ledger-email-changelog"
WORKER_ENV = {
    "APP_ID": APP_ID,
    "TOPIC_REPLICATION_FACTOR": "3",
    # A multiple of three, like production's 12: Faust's assignor leaves every worker up to
    # ceil(partitions / workers) of a topic, so with 4 a third worker would get none (2 + 2 + 0).
    "TOPIC_PARTITIONS": "6",
    "SESSION_TIMEOUT_SECONDS": "6",
    "MC_REQUEST_TIMEOUT_SECONDS": "10",
    "SEND_LOG_LAG_SECONDS": "2",
    "STOP_GRACE_SECONDS": "20",
}


class Stack:
    """The cluster, the sandbox, the workers by name, and what the run did and produced."""

    def __init__(self, cluster: KafkaCluster, sandbox: SandboxProcess, root: Path) -> None:
        self.cluster, self.sandbox, self.root = cluster, sandbox, root
        self.workers: dict[str, WorkerProcess] = {}
        self.broker_kills: list[int] = []
        self.worker_restarts = 0
        self.down: list[list[float]] = []  # [since, until] (wall clock); until is inf while down
        self.drawn_at: dict[str, float] = {}  # event_id -> when produced (wall clock)
        self.expected: set[str] = set()
        self.bad_keys: set[bytes] = set()
        self.records = 0
        self.probes: list[dict[str, Any]] = []  # produced next, ahead of the stream
        self.w3_sent = 0

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    async def start(self, name: str, **env: str) -> WorkerProcess:
        worker = start_worker(self.cluster, self.sandbox, self.root / name, **WORKER_ENV, **env)
        self.workers[name] = worker
        await asyncio.to_thread(worker.wait_ready, READY_TIMEOUT)
        return worker

    async def kill_broker(self, node: int) -> None:
        self.cluster.kill(node)
        self.broker_kills.append(node)
        self.down.append([time.time(), float("inf")])
        # Fenced once the controller moved the leadership of every partition off it (9 s session).
        await eventually(lambda: _leaders_off(self, node), timeout=90, interval=0.5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    cluster = KafkaCluster(3, ports=free_ports(3), data_dir=tmp_path / "cluster")
    cluster.start()
    try:
        sandbox = start_sandbox(tmp_path / "sandbox", import_delay=0.5)
        try:
            s = Stack(cluster, sandbox, tmp_path)
            try:
                yield s
            finally:
                for worker in s.workers.values():
                    worker.stop()
        finally:
            sandbox.stop()
    finally:
        cluster.stop()


def _events(rng: random.Random) -> Iterator[dict[str, Any]]:
    """Campaign members recurring (known after their first import), and now and then an event of two
    members never seen before (new subscribers all along the run)."""
    for i, event in enumerate(campaign(RUN, 5 * MIN_RECORDS, MEMBERS, rng)):
        yield drawn_event() if i % FRESH_EVERY == 0 else event


async def _produce(stack: Stack, done: asyncio.Event) -> None:
    """Steady RATE_PER_S until the scenario is done and MIN_RECORDS went out: one record in every
    MALFORMED_EVERY not JSON, the others events (a probe the scenario asks for first)."""
    events = _events(random.Random(20261206))
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    sent: list[asyncio.Future[Any]] = []
    try:
        next_at = time.monotonic()
        while not (done.is_set() and stack.records >= MIN_RECORDS):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + 1 / RATE_PER_S, time.monotonic())
            if stack.records % MALFORMED_EVERY == MALFORMED_EVERY - 1:
                key, value = f"bad-{stack.records}".encode(), b"{not json %d" % stack.records
                stack.bad_keys.add(key)
            else:
                event = stack.probes.pop(0) if stack.probes else next(events)
                key, value = event["packet_id"].encode(), orjson.dumps(event)
                stack.expected |= notification_ids(event)
                stack.drawn_at[event["event_id"]] = time.time()
            # Not awaited one by one: a send waiting out a leader change must not slow the stream.
            sent.append(await producer.send("packet.drawn", value, key=key))
            stack.records += 1
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _partitions(stack: Stack, topic: str) -> dict[int, PartitionState] | None:
    try:
        return await stack.cluster.describe_partitions(topic)
    except Exception:  # metadata not to be had for a moment (a node just died)
        return None


async def _busiest_leader(stack: Stack, exclude: set[int]) -> int:
    """The node leading the most subscriber.ready and email send-ledger partitions."""
    leaders: Counter[int] = Counter()
    for topic in ("subscriber.ready", LEDGER):
        parts = await eventually(lambda t=topic: _partitions(stack, t), timeout=60)
        leaders.update(p.leader for p in parts.values())
    return max((n for n in stack.cluster.nodes if n not in exclude), key=lambda n: (leaders[n], -n))


async def _leaders_off(stack: Stack, node: int) -> bool:
    for topic in ("subscriber.ready", LEDGER, "packet.drawn"):
        parts = await _partitions(stack, topic)
        if not parts or any(p.leader in (-1, node) for p in parts.values()):
            return False
    return True


async def _all_in_sync(stack: Stack) -> bool:
    """Every partition of every topic on all three nodes' in-sync replicas again."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics()
    except Exception:
        return False
    finally:
        await admin.close()
    return all(len(p["isr"]) == 3 for t in described for p in t["partitions"])


async def _known(stack: Stack, member_id: str) -> bool:
    """Whether the batcher's known-subscribers table (its changelog) holds the member."""
    records = await read_all(stack.bootstrap, changelog_topic(APP_ID))
    return any(r.key == orjson.dumps(member_id) and r.value for r in records)


async def _via(stack: Stack, notification_id: str) -> str | None:
    """How the notification reached the senders: the intake's fast-path header, else the trace."""
    for record in await read_all(stack.bootstrap, "subscriber.ready"):
        if record.key == notification_id.encode():
            intake = dict(record.headers).get(INTAKE_HEADER)
            if intake:
                return str(orjson.loads(intake)["via"])
    event_id = notification_id.rsplit(":", 1)[0].encode()
    for record in await read_all(stack.bootstrap, "stream_app.trace"):
        detail = orjson.loads(record.value)["detail"] if record.key == event_id else {}
        if detail.get("notification_id") == notification_id and detail.get("via"):
            return str(detail["via"])
    return None


def _sent(stack: Stack) -> list[dict[str, Any]]:
    return messages(stack.sandbox)


def _sent_by(worker: WorkerProcess) -> int:
    """The sends this worker made (its /metrics)."""
    text = httpx.get(f"{worker.web_url}metrics", timeout=10).text
    return int(
        sum(
            sample(text, f'stream_app_notifications_total{{channel="{c}",status="sent"}}')
            for c in ("email", "sms")
        )
    )


async def _scenario(stack: Stack, marker: dict[str, Any]) -> list[str]:
    """The failures, in order; returns the notification ids whose `via` must say known subscriber."""
    # A member imported (in the table) before the first broker kill.
    await eventually(lambda: _known(stack, marker["member_id"]), timeout=180, interval=1)
    first = await _busiest_leader(stack, exclude=set())
    killed_at = time.monotonic()
    await stack.kill_broker(first)
    probes = [drawn_event(event_id=f"{RUN}-probe-{n}", giver=dict(marker)) for n in (1, 2)]
    stack.probes.append(probes[0])  # while the broker is down
    await asyncio.sleep(max(0.0, killed_at + BROKER_DOWNTIME_S - time.monotonic()))  # the deliberate 20 s
    await asyncio.to_thread(stack.cluster.start, first)
    stack.down[-1][1] = time.time()
    await eventually(lambda: _all_in_sync(stack), timeout=180, interval=1)

    # Another broker, down for the rest of the run: two of three still take acks=all writes.
    await stack.kill_broker(await _busiest_leader(stack, exclude={first}))

    # A rolling deploy: SIGTERM (sends in hand finish, offsets committed), the new one started.
    assert await asyncio.to_thread(stack.workers["w1"].stop) == 0, stack.workers["w1"].log_tail()
    await stack.start("w1")
    stack.worker_restarts += 1
    stack.probes.append(probes[1])

    # A senders-only worker joins at the peak, sends its share, and leaves.
    w3 = await stack.start("w3", WORKER_STAGES="senders")
    stack.w3_sent = await eventually(lambda: (n := _sent_by(w3)) >= W3_SENDS and n, timeout=120)
    assert await asyncio.to_thread(w3.stop) == 0, w3.log_tail()
    return [f"{p['event_id']}:packet-drawn-giver" for p in probes]


def _draw_to_send(stack: Stack, sent: list[dict[str, Any]]) -> dict[str, float]:
    """From an event's production to MC accepting its last notification: the median of all events,
    and the longest of those drawn while a broker was down."""
    last: dict[str, float] = {}
    for m in sent:
        event_id = m["attributes"].get("NotificationId", "?").rsplit(":", 1)[0]
        at = datetime.fromisoformat(m["received_at"]).timestamp()
        last[event_id] = max(at, last.get(event_id, 0.0))
    waits = {e: last[e] - drawn for e, drawn in stack.drawn_at.items() if e in last}
    down = [
        wait
        for e, wait in waits.items()
        if any(since <= stack.drawn_at[e] <= until for since, until in stack.down)
    ]
    return {
        "median_draw_to_send_s": round(statistics.median(waits.values()), 2),
        "longest_draw_to_send_while_broker_down_s": round(max(down, default=0.0), 2),
    }


async def test_a_cluster_losing_brokers_and_rolling_workers_sends_each_notification_once(
    stack: Stack,
) -> None:
    started = time.monotonic()
    await asyncio.gather(stack.start("w1"), stack.start("w2"))
    marker = member(f"{RUN}-0")  # the campaign's popular giver: in a third of its events
    done = asyncio.Event()
    producing = asyncio.create_task(_produce(stack, done))
    try:
        probe_ids = await _scenario(stack, marker)
    except BaseException:
        producing.cancel()
        raise
    finally:
        done.set()
    await producing

    try:
        await eventually(lambda: set(_ids(_sent(stack))) >= stack.expected, timeout=300, interval=1)
    except AssertionError:
        await _explain(stack)
        raise
    # Late duplicates would come from records read again: let the workers commit everything first.
    await eventually(lambda: flow_caught_up(stack.bootstrap, APP_ID), timeout=180, interval=1)
    sent = _sent(stack)
    counts = Counter(_ids(sent))
    missing = stack.expected - set(counts)
    duplicates = {k: n for k, n in counts.items() if n > 1}
    unexpected = set(counts) - stack.expected
    dlq_keys = {r.key for r in await read_all(stack.bootstrap, "packet.drawn.dlq")}
    vias = {nid: await _via(stack, nid) for nid in probe_ids}
    report = {
        "events": stack.records,
        "malformed": len(stack.bad_keys),
        "broker_kills": len(stack.broker_kills),
        "worker_restarts": stack.worker_restarts,
        "workers_joined_and_left": 1,
        "senders_only_worker_sent": stack.w3_sent,
        "expected": len(stack.expected),
        "sent": sum(counts.values()),
        "missing": len(missing),
        "duplicates": len(duplicates),
        "unexpected": len(unexpected),
        "dlq": len(stack.bad_keys & dlq_keys),
        "known_after_kill": sum(v == "known subscriber" for v in vias.values()),
        **_draw_to_send(stack, sent),
        "seconds": round(time.monotonic() - started),
    }
    print("CLUSTER", orjson.dumps(report).decode())
    assert stack.records >= MIN_RECORDS and len(stack.broker_kills) == 2
    assert not missing, sorted(missing)[:20]
    assert not duplicates, duplicates
    assert not unexpected, sorted(unexpected)[:20]
    assert stack.bad_keys <= dlq_keys, sorted(stack.bad_keys - dlq_keys)[:20]
    assert set(vias.values()) == {"known subscriber"}, vias


def _ids(sent: list[dict[str, Any]]) -> list[str]:
    return [m["attributes"].get("NotificationId", "?") for m in sent]


async def _explain(stack: Stack) -> None:
    """What the topics and the worker logs know of a few missing notifications' events."""
    missing = sorted(stack.expected - set(_ids(_sent(stack))))
    event_ids = sorted({n.rsplit(":", 1)[0] for n in missing})[:5]
    print("MISSING", len(missing), missing[:20])
    await print_mentions(
        stack.bootstrap,
        (e.encode() for e in event_ids),
        ("stream_app.trace", "notification.status", "subscriber.ready", "subscriber.ready.dlq"),
    )
    for name, worker in stack.workers.items():
        for path in sorted(worker.log_path.parent.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(e in line for e in event_ids) or '"level":"ERROR"' in line:
                    print(f"EXPLAIN {name}/{path.name}", line[:400])
