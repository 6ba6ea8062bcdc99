"""The crash window: a worker died after writing `pending` and before writing `sent`.

The next owner of the partition looks the notification up in MC's send log: a send MC accepted is not
repeated, a send MC never received goes out once. Runs on its own broker and sandbox (and the
production table store, RocksDB), so the ledger state it plants is the only state there is.
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

from stream_app.cli.topics import ensure_topics
from stream_app.contract.topics import partition_for, topic_partitions
from stream_app.domain.ledger import PENDING, Entry
from stream_app.localkafka import EmbeddedKafka
from stream_app.mc import SubscriberRow
from stream_app.settings import Settings
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    caught_up,
    clear_faults,
    committed_offsets,
    drawn_event,
    eventually,
    fault,
    mc_client,
    messages,
    private_stack,
    produce,
    read_all,
    sample,
    statuses,
    unique,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

APP_ID = "crashwin"
TEMPLATE = "packet-drawn-drawer"


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, SandboxProcess]]:
    with private_stack(tmp_path) as stack:
        yield stack


def ready_record(
    event_id: str, member: str, email: str, *, template: str = TEMPLATE, mobile: str | None = None
) -> dict[str, Any]:
    return {
        "notification_id": f"{event_id}:{template}",
        "event_id": event_id,
        "event_type": "packet.drawn",
        "channel": "sms" if mobile else "email",
        "template": template,
        "subscriber_key": member,
        "email": email,
        "mobile": mobile,
        "from_name": "TABLE via EZTABLE",
        "attributes": {
            "EventId": event_id,
            "DrawerName": "EZ",
            "GiverName": "TABLE",
            "Amount": "250",
            "Cashback": "100",
        },
    }


async def test_pending_sends_are_settled_by_mcs_send_log_not_guessed(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """Two packets of one giver drawn seconds apart: both giver emails (one member, one template)
    were `pending` when the worker died, MC had accepted only the first. A match of member,
    template and time would call both sent; MC's send log tells them apart by NotificationId."""
    kafka, sandbox = own_stack

    settings = Settings(broker_url=kafka.url)
    await ensure_topics(settings, {**topic_partitions(settings), f"{APP_ID}-ledger-email-changelog": 4})

    giver, email = unique("M"), f"{unique('g')}@example.com"
    accepted = ready_record(unique("d"), giver, email, template="packet-drawn-giver")
    never_arrived = ready_record(unique("d"), giver, email, template="packet-drawn-giver")
    client = mc_client(sandbox)
    try:
        assert all(r.ok for r in await client.soap.upsert_subscribers([SubscriberRow(giver, email)]))
        pending_at = time.time() - 1
        # MC accepted the first just before the crash, as the sender sends it...
        await client.rest.send_email(
            "packet-drawn-giver",
            to=email,
            subscriber_key=giver,
            from_name=accepted["from_name"],
            attributes={**accepted["attributes"], "NotificationId": accepted["notification_id"]},
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

    worker = start_worker(
        kafka,
        sandbox,
        tmp_path / "worker",
        APP_ID=APP_ID,
        TABLE_STORE="rocksdb://",
        MC_REQUEST_TIMEOUT_SECONDS="5",
        SEND_LOG_LAG_SECONDS="2",
    )
    try:
        worker.wait_ready()
        found = await eventually(lambda: _outcomes(kafka, accepted, never_arrived), timeout=60)
    finally:
        worker.stop()

    assert len(found) == 2, found
    by_event = {s["event_id"]: s for s in found}
    assert by_event[accepted["event_id"]]["status"] == "sent"
    assert "send log" in by_event[accepted["event_id"]]["reason"]
    assert by_event[never_arrived["event_id"]]["status"] == "sent"
    assert by_event[never_arrived["event_id"]]["mc_request_id"]  # sent now, not assumed
    sent = [m["attributes"].get("EventId") for m in messages(sandbox) if m["subscriber_key"] == giver]
    assert sorted(sent) == sorted([accepted["event_id"], never_arrived["event_id"]])  # each once


async def test_a_pending_send_whose_record_is_gone_is_settled_by_the_sweep(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """A `pending` entry no record will bring back (committed past by an older version, its DLQ copy
    never replayed): the sweep finds it, counts it, and sends it once, by the evidence rule."""
    kafka, sandbox = own_stack

    app_id = "sweep"
    await ensure_topics(
        Settings(broker_url=kafka.url),
        {**topic_partitions(Settings()), f"{app_id}-ledger-email-changelog": 4},
    )
    member, email = unique("M"), f"{unique('s')}@example.com"
    orphan = ready_record(unique("d"), member, email)
    client = mc_client(sandbox)
    try:
        assert all(r.ok for r in await client.soap.upsert_subscribers([SubscriberRow(member, email)]))
    finally:
        await client.close()
    # Only the ledger knows of it: pending since long ago, with its record; subscriber.ready has none.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{app_id}-ledger-email-changelog",
            Entry(PENDING, time.time() - 600, record=orjson.dumps(orphan).decode()).dumps(),
            key=orjson.dumps(orphan["notification_id"]),
            partition=partition_for(orphan["notification_id"].encode(), 4),
        )
    finally:
        await producer.stop()

    worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID=app_id, PENDING_STALE_SECONDS="3")
    try:
        worker.wait_ready()
        stale = await eventually(lambda: _stale_gauge(worker), timeout=30)
        assert stale == 1.0  # counted (and alerted on) before it is settled
        found = await eventually(lambda: _outcomes(kafka, orphan), timeout=60)
    finally:
        worker.stop()
    assert [s["status"] for s in found] == ["sent"]
    assert [m["attributes"].get("NotificationId") for m in messages(sandbox)] == [orphan["notification_id"]]


def _stale_gauge(worker: Any) -> float:
    text = httpx.get(f"{worker.web_url}metrics", timeout=10).text
    return sample(text, 'stream_app_stale_pending_sends{channel="email"}')


async def _outcomes(kafka: EmbeddedKafka, *records: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The records' outcomes once each has one. A record the worker reads again after its start-up
    rebalance rewound the partition adds a `duplicate` outcome, which is not counted."""
    found = [
        s
        for r in records
        for s in await statuses(kafka.bootstrap, r["event_id"])
        if s["status"] != "duplicate"
    ]
    return found if len(found) >= len(records) else None


async def test_a_send_mc_holds_up_is_not_committed_past(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """An SMS stuck in 429 retries at the head of a partition while the email sender acks the records
    behind it: the worker must not commit past the SMS, so a worker killed meanwhile leaves it to
    the next one. (faust-streaming 0.15.3 committed past it; fix 1 of docs/faust-patches.md.)"""
    kafka, sandbox = own_stack

    await ensure_topics(Settings(broker_url=kafka.url), topic_partitions(Settings()))
    members = [(unique("M"), f"{unique('h')}@example.com") for _ in range(6)]
    client = mc_client(sandbox)
    try:
        assert all(r.ok for r in await client.soap.upsert_subscribers(SubscriberRow(*m) for m in members))
    finally:
        await client.close()
    # Each record on its own ledger partition (a misplaced one would be forwarded there first).
    held = ready_on(0, *members[0], template="packet-drawn-welcome", mobile="+886912345678")
    behind = [ready_on(0, *m) for m in members[1:5]]
    elsewhere = ready_on(1, *members[5])
    fault(sandbox, target="sms", mode="error429", probability=1.0)

    # Every retry waits ~1 s and the budget outlasts the test: the SMS stays in flight.
    worker_env = {
        "APP_ID": "headheld",
        "RETRY_BASE_SECONDS": "1",
        "RETRY_MAX_SECONDS": "1",
        "RETRY_MAX_ATTEMPTS": "1000",
    }
    worker = start_worker(kafka, sandbox, tmp_path / "w1", **worker_env)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        worker.wait_ready()
        offsets = [
            (await producer.send_and_wait("subscriber.ready", orjson.dumps(record), partition=0)).offset
            for record in (held, *behind)
        ]
        await eventually(lambda: _sent_once(sandbox, behind), timeout=60)
        # A commit round that starts after the emails were acked: wait for one on another partition.
        other = await producer.send_and_wait("subscriber.ready", orjson.dumps(elsewhere), partition=1)
        await eventually(lambda: _sent_once(sandbox, [elsewhere]), timeout=60)
        await eventually(lambda: _committed_past(kafka, "headheld", 1, other.offset), timeout=30)
        committed = (await committed_offsets(kafka.bootstrap, "headheld", "subscriber.ready")).get(0)
        assert (
            committed is None or committed <= offsets[0]
        ), f"committed {committed} past the SMS at {offsets}"
    finally:
        await producer.stop()
        worker.kill()

    clear_faults(sandbox)
    worker = start_worker(kafka, sandbox, tmp_path / "w2", **worker_env)
    try:
        worker.wait_ready()
        await eventually(lambda: _sms_to(sandbox, held["subscriber_key"]), timeout=60)
        assert len(await eventually(lambda: _outcomes(kafka, held), timeout=30)) == 1
    finally:
        worker.stop()
    assert len(_sms_to(sandbox, held["subscriber_key"])) == 1
    assert _sent_once(sandbox, behind)  # not repeated by the second worker


def ready_on(partition: int, member: str, email: str, **kwargs: Any) -> dict[str, Any]:
    """A subscriber.ready record whose notification's ledger partition (of 4) is `partition`."""
    while True:
        record = ready_record(unique("d"), member, email, **kwargs)
        if partition_for(record["notification_id"].encode(), 4) == partition:
            return record


def _sent_once(sandbox: SandboxProcess, records: list[dict[str, Any]]) -> bool:
    ids = [m["attributes"].get("EventId") for m in messages(sandbox) if m["channel"] == "email"]
    return all(ids.count(r["event_id"]) == 1 for r in records)


def _sms_to(sandbox: SandboxProcess, member: str) -> list[dict[str, Any]]:
    return [m for m in messages(sandbox) if m["channel"] == "sms" and m["subscriber_key"] == member]


async def _committed_past(kafka: EmbeddedKafka, group: str, partition: int, offset: int) -> bool:
    committed = (await committed_offsets(kafka.bootstrap, group, "subscriber.ready")).get(partition)
    return committed is not None and committed > offset


async def test_a_worker_killed_while_mc_imports_leaves_the_batch_to_the_next(tmp_path: Path) -> None:
    """The import watcher watches imports in tasks of its own; a batch's offset must still wait for
    its import's end, so the batch a SIGKILLed worker was watching is redone, not lost."""
    with private_stack(tmp_path, import_delay=8.0) as (kafka, sandbox):  # MC takes its time
        event = drawn_event()
        worker = start_worker(kafka, sandbox, tmp_path / "w1", APP_ID="midimport")
        try:
            worker.wait_ready()
            await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
            await eventually(lambda: _stat(sandbox, "sftp_uploads") >= 1, timeout=30)
            # A commit round after the batch was taken: a bad record behind it, committed past.
            await produce(kafka.bootstrap, "packet.drawn", b"{not json", key=event["packet_id"].encode())
            await eventually(
                lambda: caught_up(kafka.bootstrap, "midimport-intake", "packet.drawn"), timeout=30
            )
            assert messages(sandbox) == []  # the import is still running
        finally:
            worker.kill()
        worker = start_worker(kafka, sandbox, tmp_path / "w2", APP_ID="midimport")
        try:
            worker.wait_ready()
            await eventually(lambda: len(messages(sandbox, event)) >= 3, timeout=60)
            await eventually(lambda: _settled(kafka, event["event_id"]), timeout=30)
        finally:
            worker.stop()
        sent = messages(sandbox, event)
        assert sorted(m["channel"] for m in sent) == ["email", "email", "sms"]  # each once


def _stat(sandbox: SandboxProcess, name: str) -> int:
    return int(httpx.get(f"{sandbox.http_url}_sandbox/stats", timeout=10).json().get(name, 0))


async def _settled(kafka: EmbeddedKafka, event_id: str) -> bool:
    return len([s for s in await statuses(kafka.bootstrap, event_id) if s["status"] == "sent"]) >= 3


async def test_a_worker_killed_while_mc_holds_its_answer_to_a_batch_sends_each_notification_once(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """Issues 23 and 18: MC accepted a batch of emails (two of them one giver's, one template, seconds
    apart) and a welcome SMS, made and logged every send, and the worker was SIGKILLed before MC's
    answers came back (the sandbox's hold_answer fault holds them). The next worker settles each
    `pending` entry by MC's send log, by NotificationId: each notification is sent exactly once, the
    held ones `sent` as found in the log, the rest sent now. (Classic emails only: Transactional
    Messaging sends are not batched in this version.)"""
    kafka, sandbox = own_stack
    app_id = "heldbatch"
    await ensure_topics(Settings(broker_url=kafka.url), topic_partitions(Settings()))

    giver = (unique("G"), f"{unique('giver')}@example.com")
    people = [(unique("M"), f"{unique('b')}@example.com") for _ in range(12)]
    client = mc_client(sandbox)
    try:
        assert all(
            r.ok for r in await client.soap.upsert_subscribers(SubscriberRow(*p) for p in [giver, *people])
        )
    finally:
        await client.close()
    opener = ready_record(unique("d"), *people[0])
    gifts = [ready_record(unique("d"), *giver, template="packet-drawn-giver") for _ in range(2)]
    batch = [*gifts, *(ready_record(unique("d"), *p) for p in people[1:])]
    sms = ready_record(unique("d"), *people[1], template="packet-drawn-welcome", mobile="+886912345678")
    records = [opener, *batch, sms]

    env = {"APP_ID": app_id, "MC_REQUEST_TIMEOUT_SECONDS": "15", "SEND_LOG_LAG_SECONDS": "2"}
    # One MC call in flight: what arrives while MC holds a call waits for the next, together.
    worker = start_worker(kafka, sandbox, tmp_path / "w1", MC_CALLS_IN_FLIGHT="1", **env)
    try:
        worker.wait_ready()
        held_batch = await _batch_behind_held_opener(kafka, sandbox, app_id, opener, [*batch, sms], 120)
        held_sms = await eventually(lambda: _holding(sandbox, "sms", 1), timeout=60)
    finally:
        worker.kill()
    held = set(held_batch["notification_ids"]) | set(held_sms["notification_ids"])
    assert {g["notification_id"] for g in gifts} <= set(held_batch["notification_ids"])
    assert sms["notification_id"] in held

    clear_faults(sandbox)  # the held answers go out to a dead socket
    worker = start_worker(kafka, sandbox, tmp_path / "w2", **env)
    try:
        worker.wait_ready()
        await eventually(lambda: _outcomes(kafka, *records), timeout=120)
    finally:
        worker.stop()

    outcomes: dict[str, list[dict[str, Any]]] = {r["notification_id"]: [] for r in records}
    for record in records:
        for status in await statuses(kafka.bootstrap, record["event_id"]):
            if status["status"] != "duplicate":
                outcomes[record["notification_id"]].append(status)
    assert {n: [s["status"] for s in found] for n, found in outcomes.items() if n in held} == {
        n: ["sent"] for n in held
    }
    assert all("found in MC's send log" in outcomes[n][0]["reason"] for n in held)
    assert "delivery is not followed" in outcomes[sms["notification_id"]][0]["reason"]
    assert all(s["status"] == "sent" for found in outcomes.values() for s in found)  # none lost
    sent = [m["attributes"].get("NotificationId") for m in messages(sandbox)]
    assert sorted(sent) == sorted(r["notification_id"] for r in records)  # each exactly once
    gift_emails = [m for m in messages(sandbox) if m["subscriber_key"] == giver[0]]
    assert len(gift_emails) == 2 and {m["definition_key"] for m in gift_emails} == {"packet-drawn-giver"}


async def _batch_behind_held_opener(
    kafka: EmbeddedKafka,
    sandbox: SandboxProcess,
    app_id: str,
    opener: dict[str, Any],
    rest: list[dict[str, Any]],
    hold_seconds: float,
) -> dict[str, Any]:
    """MC slow to answer the opener's call, so that `rest` (emails and SMS) forms a batch behind it
    (one MC call in flight); the calls that carry them are accepted in full by MC and their answers
    held `hold_seconds`. Returns the held email batch once the opener's answer was let go."""
    fault(sandbox, target="soap", mode="hold_answer", min_items=1, seconds=120)
    await produce(kafka.bootstrap, "subscriber.ready", opener, key=opener["notification_id"].encode())
    opened = await eventually(lambda: _holding(sandbox, "soap", 1), timeout=60)
    fault(sandbox, target="soap", mode="hold_answer", min_items=2, seconds=hold_seconds)
    fault(sandbox, target="sms", mode="hold_answer", min_items=1, seconds=hold_seconds)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for record in rest:  # within a second: two of one giver are well inside 30 s
            await producer.send(
                "subscriber.ready", orjson.dumps(record), key=record["notification_id"].encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    await eventually(lambda: _pending(kafka, app_id, rest), timeout=60)
    release = httpx.delete(f"{sandbox.http_url}_sandbox/held", params={"id": opened["id"]}, timeout=10)
    assert release.json() == {"released": 1}  # the opener's answer, now
    held: dict[str, Any] = await eventually(lambda: _holding(sandbox, "soap", 2), timeout=60)
    return held


def _holding(sandbox: SandboxProcess, target: str, at_least: int) -> dict[str, Any] | None:
    """A call to `target` that the sandbox accepted with at least `at_least` sends and is holding."""
    held = httpx.get(f"{sandbox.http_url}_sandbox/held", timeout=10).json()
    return next((h for h in held if h["target"] == target and h["holding"] and h["items"] >= at_least), None)


async def _pending(kafka: EmbeddedKafka, app_id: str, records: list[dict[str, Any]]) -> bool:
    """Whether every record's ledger entry was marked `pending` (in its table's changelog)."""
    marked: set[str] = set()
    for channel in ("email", "sms"):
        for r in await read_all(kafka.bootstrap, f"{app_id}-ledger-{channel}-changelog"):
            if r.value and orjson.loads(r.value)["state"] == PENDING:
                marked.add(orjson.loads(r.key))
    return {r["notification_id"] for r in records} <= marked


async def test_a_batch_whose_answer_outlives_the_clients_timeout_is_not_sent_again(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    """No crash, the same window: MC carried out a batch of emails and an SMS but answered after the
    client had given up on the call (the sandbox holds its answers past MC_REQUEST_TIMEOUT_SECONDS).
    A blind retry would send each of them twice; the sender asks MC's send log first and finds
    them. Each notification is sent exactly once and ends `sent`."""
    kafka, sandbox = own_stack
    await ensure_topics(Settings(broker_url=kafka.url), topic_partitions(Settings()))
    people = [(unique("M"), f"{unique('u')}@example.com") for _ in range(8)]
    client = mc_client(sandbox)
    try:
        assert all(r.ok for r in await client.soap.upsert_subscribers(SubscriberRow(*p) for p in people))
    finally:
        await client.close()
    opener = ready_record(unique("d"), *people[0])
    batch = [ready_record(unique("d"), *p) for p in people[1:]]
    sms = ready_record(unique("d"), *people[1], template="packet-drawn-welcome", mobile="+886912345679")
    records = [opener, *batch, sms]

    worker = start_worker(
        kafka,
        sandbox,
        tmp_path / "w",
        APP_ID="unanswered",
        MC_CALLS_IN_FLIGHT="1",
        MC_REQUEST_TIMEOUT_SECONDS="3",
        SEND_LOG_LAG_SECONDS="2",
    )
    try:
        worker.wait_ready()
        held_batch = await _batch_behind_held_opener(kafka, sandbox, "unanswered", opener, [*batch, sms], 8)
        await eventually(lambda: _outcomes(kafka, *records), timeout=120)
    finally:
        worker.stop()

    found = {s["notification_id"]: s for r in records for s in await statuses(kafka.bootstrap, r["event_id"])}
    assert {n: s["status"] for n, s in found.items()} == {r["notification_id"]: "sent" for r in records}
    unanswered = [*held_batch["notification_ids"], sms["notification_id"]]
    assert len(held_batch["notification_ids"]) >= 2
    assert all("after a call MC did not answer" in found[n]["reason"] for n in unanswered), [
        (n in unanswered, found[n]["reason"]) for n in found
    ]
    sent = [m["attributes"].get("NotificationId") for m in messages(sandbox)]
    assert sorted(sent) == sorted(r["notification_id"] for r in records)  # each exactly once
