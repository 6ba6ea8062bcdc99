"""The intake's batch logic without a broker: what one fetched batch puts into the outbox."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from stream_app.contract.records import BatcherInput, SubscriberReady
from stream_app.contract.topics import partition_for
from stream_app.domain.subscribers import subscriber_signature
from stream_app.stages.intake.batch import IntakeBatch
from stream_app.stages.intake.known_subscribers import KnownSubscribers, table_key
from stream_app.stages.intake.seen import SeenMarks
from stream_app.stages.intake.service import Intake, _Rebalance
from tests.fixtures.events import drawn

TP = TopicPartition("packet.drawn", 2)


class RecordingOutbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []

    def add(
        self, topic: str, key: bytes | None, value: bytes, *, partition: int | None = None, headers: Any = ()
    ) -> None:
        self.records.append((topic, key, value, dict(headers)))

    def on(self, topic: str) -> list[tuple[bytes | None, bytes, dict[str, bytes]]]:
        return [(k, v, h) for t, k, v, h in self.records if t == topic]


def record(value: bytes, offset: int, key: bytes = b"RP-1") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, key, value, None, len(key), len(value), [])


def run(
    records: list[ConsumerRecord[bytes, bytes]], known: dict[str, bytes] | None = None
) -> tuple[RecordingOutbox, SeenMarks]:
    outbox = RecordingOutbox()
    seen = SeenMarks("unused:9092", "app-intake-seen", 4)
    seen.load(TP, {})
    view = KnownSubscribers("unused:9092", "app")
    view.rows = dict(known or {})
    batch = IntakeBatch(outbox, seen, view)  # type: ignore[arg-type]
    batch.handle(TP, records)
    return outbox, seen


def test_known_subscribers_go_straight_to_ready_with_the_intake_steps_in_a_header() -> None:
    event = drawn()
    known = {
        "M1001": subscriber_signature("ez@example.com", "+886912345678"),
        "M2002": subscriber_signature("table@example.com", None),
    }
    outbox, _ = run([record(orjson.dumps(event), 40)], known)
    ready = outbox.on("subscriber.ready")
    assert sorted(k for k, _, _ in ready) == [
        b"d-000123:packet-drawn-drawer",
        b"d-000123:packet-drawn-giver",
        b"d-000123:packet-drawn-welcome",
    ]
    for key, value, headers in ready:
        parsed = SubscriberReady.loads(value, serializer="json")
        assert parsed.notification_id.encode() == key
        steps = orjson.loads(headers["stream_app.intake"])
        assert (steps["topic"], steps["partition"], steps["offset"], steps["via"]) == (
            "packet.drawn",
            2,
            40,
            "known subscriber",
        )
    assert outbox.on("stream_app.intents") == [] and outbox.on("stream_app.trace") == []


def test_new_or_changed_subscribers_go_to_the_batcher_and_the_event_is_traced() -> None:
    known = {"M1001": subscriber_signature("old@example.com", "+886912345678")}  # changed email
    outbox, _ = run([record(orjson.dumps(drawn()), 41)], known)
    intents = [BatcherInput.loads(v, serializer="json") for _, v, _ in outbox.on("stream_app.intents")]
    # The SMS goes with its party's import too: MC must hold the subscriber with this mobile.
    assert sorted((i.kind, i.ready.template) for i in intents if i.ready) == [
        ("intent", "packet-drawn-drawer"),
        ("intent", "packet-drawn-giver"),
        ("intent", "packet-drawn-welcome"),
    ]
    assert sorted(k for k, _, _ in outbox.on("stream_app.intents")) == [b"M1001", b"M1001", b"M2002"]
    (trace,) = [orjson.loads(v) for _, v, _ in outbox.on("stream_app.trace")]
    assert (trace["stage"], trace["detail"]["offset"], trace["detail"]["notifications"]) == (
        "received",
        41,
        3,
    )


def test_a_replayed_event_is_a_duplicate_but_the_same_record_read_again_is_handled_again() -> None:
    raw = orjson.dumps(drawn())
    outbox, seen = run([record(raw, 50), record(raw, 51), record(raw, 50)])
    assert seen.of(TP) == {"d-000123": 50}
    traces = [orjson.loads(v) for _, v, _ in outbox.on("stream_app.trace")]
    assert [t["stage"] for t in traces] == ["received", "duplicate-input", "received"]
    assert len(outbox.on("stream_app.intents")) == 6  # 3 notifications, twice


def test_a_bad_record_goes_to_the_dlq_untouched_and_the_next_one_is_handled() -> None:
    outbox, _ = run(
        [record(b"{not json", 60, key=b"k"), record(orjson.dumps(drawn(giver__email="nope")), 61)]
    )
    ((key, value, headers),) = outbox.on("packet.drawn.dlq")
    assert (key, value) == (b"k", b"{not json")
    assert headers["error.class"] == b"InvalidEvent" and headers["source.offset"] == b"60"
    assert b"not JSON" in headers["error.message"]
    (status,) = [orjson.loads(v) for _, v, _ in outbox.on("notification.status")]
    assert (status["template"], status["status"]) == ("packet-drawn-giver", "invalid")


def test_seen_marks_are_written_once_per_partition_per_batch() -> None:
    outbox, seen = run([record(orjson.dumps(drawn(event_id=f"d-{i}")), 70 + i) for i in range(5)])
    seen.write_new(outbox)  # type: ignore[arg-type]
    ((key, value, _),) = outbox.on("app-intake-seen")
    assert key == b"packet.drawn:2"
    assert orjson.loads(value) == {
        "topic": "packet.drawn",
        "partition": 2,
        "seen": {f"d-{i}": 70 + i for i in range(5)},
    }


def test_keys_land_where_kafkas_default_partitioner_puts_them() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        key = rng.randbytes(rng.randrange(0, 80))
        for n in (1, 4, 12):
            assert partition_for(key, n) == (murmur2(key) & 0x7FFFFFFF) % n


def test_the_view_reads_the_keys_faust_writes_to_the_changelog() -> None:
    assert table_key(b'"M0000137"') == "M0000137"  # what the batcher's table writes (seen in Kafka)
    assert table_key(b"M1001") == "M1001"


def test_marks_kept_on_disk_are_rebuilt_from_the_log_on_every_assignment(tmp_path: Path) -> None:
    seen = SeenMarks("unused:9092", "app-intake-seen", 4, tmp_path)
    seen.load(TP, {"d-1": 3})
    seen.mark(TP, "d-2", 4)
    assert (seen.of(TP).get("d-1"), seen.of(TP).get("d-2"), seen.of(TP).get("d-3")) == (3, 4, None)
    seen.forget([TP])  # revoked: the store is closed
    seen.load(TP, {"d-9": 1})  # assigned again: only what the log holds
    assert (seen.of(TP).get("d-1"), seen.of(TP).get("d-9")) == (None, 1)
    seen.forget([TP])


async def test_a_stop_while_the_consumer_joins_its_group_does_not_deadlock() -> None:
    # aiokafka's consumer.stop() first lets a join under way finish, and a join starts by calling
    # the rebalance listener's revoke, which waits for the batch lock: a stop holding that lock
    # hung the worker until its SIGKILL (twice in full CI runs).
    class Stopping:
        async def stop(self) -> None:
            pass

    intake: Any = SimpleNamespace(
        batch_lock=asyncio.Lock(), seen=SimpleNamespace(forget=lambda tps: None), registry=None
    )
    listener = _Rebalance(intake)

    class Joining:
        async def stop(self) -> None:
            await listener.on_partitions_revoked([])

    intake.consumer, intake.known, intake.producer = Joining(), Stopping(), Stopping()
    await asyncio.wait_for(Intake.on_stop(intake), timeout=5)
