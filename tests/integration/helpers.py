"""Small clients for integration tests: produce to and read from the real broker, ask the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream_app.localkafka import EmbeddedKafka, free_port
from stream_app.mc import MarketingCloud
from stream_app.settings import Settings
from tests.fixtures.sandbox import SandboxProcess, start_sandbox

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def private_stack(
    root: Path, *sandbox_args: str, import_delay: float = 0.3
) -> Iterator[tuple[EmbeddedKafka, SandboxProcess]]:
    """A broker and a sandbox of a test's own, for tests that kill workers or need state no other
    test shares (another consumer group on the session broker would send too)."""
    kafka = EmbeddedKafka(port=free_port(), data_dir=root / "kafka")
    kafka.start()
    try:
        sandbox = start_sandbox(root / "sandbox", *sandbox_args, import_delay=import_delay)
        try:
            yield kafka, sandbox
        finally:
            sandbox.stop()
    finally:
        kafka.stop()


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (a cluster's brokers)."""
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def drawn_event(event_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """A valid packet.drawn event with fresh member ids (tests share one broker and sandbox)."""
    tag = uuid.uuid4().hex[:8]
    mobile = f"+8869{int(tag, 16) % 10**8:08d}"
    event: dict[str, Any] = {
        "event_id": unique("d") if event_id is None else event_id,
        "occurred_at": "2026-01-28T12:00:00+08:00",
        "packet_id": unique("RP"),
        "amount": 250,
        "cashback_amount": 100,
        "drawer": {
            "member_id": f"M1-{tag}",
            "name": "EZ",
            "email": f"ez.{tag}@example.com",
            "mobile": mobile,
            "locale": "zh-TW",
        },
        "giver": {
            "member_id": f"M2-{tag}",
            "name": "TABLE",
            "email": f"table.{tag}@example.com",
            "mobile": None,
            "locale": "zh-TW",
        },
    }
    for key, value in changes.items():
        target = event
        *parents, leaf = key.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return copy.deepcopy(event)


def member(tag: str, *, mobile: str | None = None) -> dict[str, Any]:
    """A party with a stable address, for members who recur across events."""
    return {
        "member_id": f"M-{tag}",
        "name": f"N{tag}",
        "email": f"m.{tag}@example.com",
        "mobile": mobile,
        "locale": "zh-TW",
    }


def campaign(run: str, events: int, members: int, rng: Any) -> list[dict[str, Any]]:
    """Events shaped like the campaign: `members` recurring members, each a drawer or giver many
    times over, a popular giver (member 0) in a third of the events, two in three drawers with a mobile."""
    pool = [member(f"{run}-{i}", mobile=f"+8869{i:08d}" if i % 3 else None) for i in range(members)]
    out = []
    for i in range(events):
        giver = pool[0] if i % 3 == 0 else rng.choice(pool)
        drawer = rng.choice([m for m in pool if m is not giver])
        out.append(
            drawn_event(event_id=f"{run}-{i:05d}", amount=100 + i, drawer=dict(drawer), giver=dict(giver))
        )
    return out


def notification_ids(event: dict[str, Any]) -> set[str]:
    """The notifications a valid packet.drawn event owes."""
    ids = {f"{event['event_id']}:packet-drawn-drawer", f"{event['event_id']}:packet-drawn-giver"}
    if event["drawer"]["mobile"]:
        ids.add(f"{event['event_id']}:packet-drawn-welcome")
    return ids


def sent_notifications(sandbox: Any) -> list[str]:
    """The NotificationId of every send MC accepted (the sender puts it on every send)."""
    return [m["attributes"].get("NotificationId", "?") for m in messages(sandbox)]


async def produce_events(bootstrap: str, events: Iterable[dict[str, Any]]) -> None:
    """Produce packet.drawn events in one burst, keyed by packet_id as the platform does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send("packet.drawn", orjson.dumps(event), key=event["packet_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def produce(
    bootstrap: str,
    topic: str,
    value: bytes | dict[str, Any],
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        raw = orjson.dumps(value) if isinstance(value, dict) else value
        await producer.send_and_wait(topic, raw, key=key, headers=headers or [])
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    async with _admin(bootstrap) as admin:
        (description,) = await admin.describe_topics([topic])
    return [TopicPartition(topic, p["partition"]) for p in description["partitions"]]


async def read_all(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record on `topic` right now (from the beginning to the end offsets seen at the start)."""
    partitions = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        records: list[Any] = []
        next_offset = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + timeout
        while any(next_offset[tp] < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout} s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp, items in batch.items():
                for record in items:
                    if record.offset < ends[tp]:
                        records.append(record)
                    next_offset[tp] = record.offset + 1
        return records
    finally:
        await consumer.stop()


async def ready_records(bootstrap: str, **match: str) -> list[Any]:
    """subscriber.ready records whose JSON value has these fields (other tests put junk there too)."""
    found = []
    for record in await read_all(bootstrap, "subscriber.ready"):
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and all(value.get(k) == v for k, v in match.items()):
            found.append(record)
    return found


# The outcomes MC's feedback adds after `sent` (stages/feedback.py): `statuses` leaves them out
# unless asked, so that a test counting a send's outcomes counts those alone.
FEEDBACK_STATUSES = frozenset({"bounced", "not_sent", "unsubscribed", "delivered", "undeliverable"})


async def statuses(bootstrap: str, event_id: str, *, feedback: bool = False) -> list[dict[str, Any]]:
    return [
        value
        for value in (orjson.loads(r.value) for r in await read_all(bootstrap, "notification.status"))
        if value["event_id"] == event_id and (feedback or value["status"] not in FEEDBACK_STATUSES)
    ]


def messages(sandbox: Any, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Accepted sends; with `event`, those to its parties (tests give every event fresh members)."""
    found = httpx.get(f"{sandbox.http_url}_sandbox/messages", timeout=10).json()
    if event is None:
        return list(found)
    keys = {event["drawer"]["member_id"], event["giver"]["member_id"]}
    return [m for m in found if m["subscriber_key"] in keys]


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Await until `check()` (sync or async) returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")


def sample(text: str, series: str) -> float:
    """The value of one exact series line of a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def sandbox_settings(sandbox: SandboxProcess) -> Settings:
    """Settings whose MC is this sandbox (its HTTP and SFTP ports, its host key)."""
    return Settings(
        mc_auth_url=sandbox.http_url,
        mc_sftp_host="127.0.0.1",
        mc_sftp_port=sandbox.sftp_port,
        mc_sftp_known_hosts=sandbox.known_hosts,
    )


def mc_client(sandbox: SandboxProcess) -> MarketingCloud:
    """Our MC client, pointed at a test's sandbox: for the state a worker left at MC."""
    return MarketingCloud(sandbox_settings(sandbox))


def fault(sandbox: Any, **body: Any) -> None:
    """Make the sandbox misbehave (`POST /_sandbox/faults`)."""
    httpx.post(f"{sandbox.http_url}_sandbox/faults", json=body, timeout=10).raise_for_status()


def clear_faults(sandbox: Any) -> None:
    httpx.delete(f"{sandbox.http_url}_sandbox/faults", timeout=10).raise_for_status()


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    """A topic's configs as the broker reports them (DescribeConfigs)."""
    async with _admin(bootstrap) as admin:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    (resource,) = response.resources
    entries = resource[4]
    return {str(entry[0]): str(entry[1]) for entry in entries}


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (partitions never committed are absent)."""
    async with _admin(bootstrap) as admin:
        offsets = await admin.list_consumer_group_offsets(group)
    return {
        tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0
    }


async def caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """Whether `group` has committed every record of `topic` there is now."""
    committed = await committed_offsets(bootstrap, group, topic)
    ends = await end_offsets(bootstrap, topic)
    return all(end == 0 or committed.get(p, -1) >= end for p, end in ends.items())


async def flow_caught_up(bootstrap: str, app_id: str) -> bool:
    """Whether the workers of `app_id` have committed every record of the flow's topics there is now:
    input (the intake's group), intents, batches and subscriber.ready (forwards included)."""
    return all(
        [
            await caught_up(bootstrap, f"{app_id}-intake", "packet.drawn"),
            await caught_up(bootstrap, app_id, "stream_app.intents"),
            await caught_up(bootstrap, app_id, "stream_app.batches"),
            await caught_up(bootstrap, app_id, "subscriber.ready"),
        ]
    )


def kcat_produce(bootstrap: str, topic: str, records: Iterable[Any], *options: str) -> None:
    """Produce records (key, value) back with kcat, as an operator replays a dump: librdkafka's own
    partitioner (consistent_random: CRC32) unless `options` say otherwise."""
    lines = b"".join((r.key or b"") + b"\t" + (r.value or b"") + b"\n" for r in records)
    subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t", *options],
        input=lines,
        check=True,
        timeout=60,
    )


def console_produce(bootstrap: str, topic: str, records: Iterable[Any]) -> None:
    """Produce records (key, value) back with Apache Kafka's own console producer (murmur2)."""
    lines = b"".join((r.key or b"") + b"\t" + (r.value or b"") + b"\n" for r in records)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_app",
            "kafka-console-producer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
        ],
        input=lines,
        check=True,
        timeout=120,
    )


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    partitions = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def print_mentions(bootstrap: str, needles: Iterable[bytes], topics: Iterable[str]) -> None:
    """Print every record of `topics` whose key or value mentions one of `needles` (a failing test's
    account of what happened to the thing it missed)."""
    wanted = list(needles)
    for topic in topics:
        for record in await read_all(bootstrap, topic):
            if any(needle in (record.key or b"") + (record.value or b"") for needle in wanted):
                value = (record.value or b"").decode(errors="replace")
                print(f"EXPLAIN {topic}[{record.partition}]@{record.offset}", value[:600])


# ----------------------------------------------------------------- child processes (by PID)


class Output:
    """A child's stdout, drained line by line on a thread (so the child never blocks on a full pipe).

    Not select() + readline(): readline buffers ahead, and lines already in the buffer would then
    wait for the *next* write to become visible.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, predicate: str | None, timeout: float) -> str | None:
        """Read until a line containing `predicate` (returned), EOF or the deadline (None)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.seen.append(line)
            if predicate is not None and predicate in line:
                return line.rstrip("\n")
        return None

    def rest(self, timeout: float = 10) -> str:
        """Everything up to EOF (call once the child has exited)."""
        self.until(None, timeout)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.seen)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def assert_all_gone(procs: list[psutil.Process], timeout: float = 15) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    # A reparented child may linger as a zombie until init reaps it; it holds no ports or files.
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


@contextmanager
def started(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A subprocess that is killed (by PID, with its descendants) if the test fails midway."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            leftovers = descendants(proc.pid)
            proc.kill()
            proc.wait(10)
            for p in leftovers:
                if p.is_running():
                    p.kill()
