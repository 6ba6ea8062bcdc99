"""No record is dropped quietly (issue 19), against a real broker and worker:

- an undecodable record on each internal topic (stream_app.intents, stream_app.batches,
  email.bounced, stream_app.trace) lands in its DLQ with the reason, and the agents go on: the next
  good records are handled;
- a bad record on the intake's dedupe log is skipped (an ERROR line, a metric), not the end of the
  intake;
- an intake batch that fails as a whole (here: an invalid event whose DLQ copy Kafka refuses as too
  large) fails twice, is split, and only that record goes to its DLQ (without its value); the good
  events fetched with it are sent once.

Its own broker and sandbox: the worker reads every topic, and the DLQ topic is made small on purpose.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.contract.records import EmailBounced
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    drawn_event,
    eventually,
    messages,
    private_stack,
    produce,
    read_all,
    sample,
    sent_notifications,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

APP_ID = "nsd"
SEEN_LOG = f"{APP_ID}-intake-seen"
DLQ_MAX_BYTES = 20_000

UNDECODABLE = {  # internal topic -> (value, expected fragment of error.message)
    "stream_app.intents": (b"{not json", "not JSON"),
    "stream_app.batches": (b"[1, 2, 3]", "expected a JSON object"),
    "email.bounced": (orjson.dumps({"kind": "EmailBounced"}), "schema"),
    "stream_app.trace": (b"\xff\xfe", "not JSON"),
}


async def _prepare(bootstrap: str) -> None:
    """Before the worker: its dedupe log with a bad record on every partition, and a packet.drawn
    DLQ that takes no record over DLQ_MAX_BYTES."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(SEEN_LOG, 4, 1, topic_configs={"cleanup.policy": "delete"}),
                NewTopic("packet.drawn.dlq", 1, 1, topic_configs={"max.message.bytes": str(DLQ_MAX_BYTES)}),
            ]
        )
    finally:
        await admin.close()
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(4):
            await producer.send_and_wait(SEEN_LOG, b"\x00 not marks", key=b"x", partition=partition)
    finally:
        await producer.stop()


async def _dlq(bootstrap: str, topic: str) -> list[Any]:
    return await read_all(bootstrap, f"{topic}.dlq")


def _all_sent(sandbox: Any, event: dict[str, Any]) -> bool:
    return len(messages(sandbox, event)) >= 3


async def test_undecodable_records_reach_their_dlq_and_the_stages_go_on(tmp_path: Path) -> None:
    with private_stack(tmp_path) as (kafka, sandbox):
        await _prepare(kafka.bootstrap)
        worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID=APP_ID, LOG_FORMAT="json")
        try:
            worker.wait_ready()
            await _check(kafka, sandbox, worker)
        finally:
            worker.stop()


async def _check(kafka: Any, sandbox: Any, worker: Any) -> None:
    bootstrap = kafka.bootstrap
    log_path = Path(worker.log_path)
    # One undecodable record on each internal topic.
    for topic, (value, _) in UNDECODABLE.items():
        await produce(bootstrap, topic, value, key=b"bad-" + topic.encode(), headers=[("trace-id", b"nsd")])

    # An intake batch with an invalid event too large for its DLQ between two good ones, on one
    # partition, produced in one go so that one fetch takes all three.
    first, second = drawn_event(), drawn_event()
    poison = b"not an event " + b"x" * (DLQ_MAX_BYTES * 2)
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=200)
    await producer.start()
    try:
        sent = [
            await producer.send("packet.drawn", value, key=b"same", partition=1)
            for value in (orjson.dumps(first), poison, orjson.dumps(second))
        ]
        poison_offset = (await sent[1]).offset
    finally:
        await producer.stop()

    # The stages went on: the good events' notifications (new subscribers: intents, batches, the
    # import, subscriber.ready) are sent once, their steps traced, a good bounce is recorded.
    for event in (first, second):
        await eventually(partial(_all_sent, sandbox, event), timeout=120)
    # The dedupe log's bad record was skipped as the intake restored partition 1's marks.
    assert "unreadable record on the dedupe log skipped" in log_path.read_text()
    metrics = httpx.get(f"{worker.web_url}metrics", timeout=10).text
    assert sample(metrics, "stream_app_seen_log_bad_records_total") >= 1
    bounce = EmailBounced(email="late@bounce.example", kind="EmailBounced", at="2026-01-01T00:00:00Z")
    await produce(bootstrap, "email.bounced", bounce.dumps(serializer="json"), key=b"late@bounce.example")

    def suppressed() -> bool:
        view = httpx.get(f"{worker.web_url}suppressed/late@bounce.example/", timeout=10).json()
        return bool(view["suppressed"])

    await eventually(suppressed, timeout=30)
    view = await eventually(
        lambda: (v := httpx.get(f"{worker.web_url}events/{first['event_id']}/", timeout=10).json())["found"]
        and v,
        timeout=30,
    )
    assert any(step["stage"] == "outcome" for step in view["steps"])

    # Each undecodable record is in its DLQ, untouched, with the reason.
    for topic, (value, fragment) in UNDECODABLE.items():
        records = await eventually(partial(_dlq, bootstrap, topic), timeout=30)
        (found,) = [r for r in records if r.key == b"bad-" + topic.encode()]
        headers = {k: v.decode("utf-8", "replace") for k, v in found.headers}
        assert found.value == value, topic
        assert headers["source.topic"] == topic and headers["trace-id"] == "nsd"
        assert fragment in headers["error.message"], (topic, headers["error.message"])

    # The batch's poison alone is in packet.drawn.dlq, without its value; the good events once each.
    dead = await eventually(lambda: _dlq(bootstrap, "packet.drawn"), timeout=30)
    (stub,) = [
        r for r in dead if dict(r.headers).get(b"source.offset".decode()) == str(poison_offset).encode()
    ]
    headers = {k: v.decode("utf-8", "replace") for k, v in stub.headers}
    assert not stub.value and "value left out" in headers["error.message"], headers
    owed = {
        f"{e['event_id']}:{t}" for e in (first, second) for t in ("packet-drawn-drawer", "packet-drawn-giver")
    }
    counts = Counter(sent_notifications(sandbox))
    assert all(counts[n] == 1 for n in owed), counts
    log_text = log_path.read_text()
    assert "intake batch failed twice" in log_text and "intake record failed alone" in log_text
    assert (
        sample(httpx.get(f"{worker.web_url}metrics", timeout=10).text, "stream_app_intake_batch_splits_total")
        >= 1
    )
