"""No stage acks a record it did not finish (issue 19): internal records decoded inside the stage's
error handling and dead-lettered with the reason; a store error stops the worker instead of
dead-lettering good records; a bad dedupe log record is skipped; an intake batch that fails twice is
split and the record that fails alone goes to its DLQ (without its value if the copy is too large)."""

from __future__ import annotations

import asyncio
import errno
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from stream_app.contract.internal import UndecodableRecord, decode_record, encode_record
from stream_app.contract.records import BatcherInput, EmailBounced, SubscriberBatch, TraceStep
from stream_app.contract.registry import RegistryError
from stream_app.contract.topics import BATCHES_TOPIC, BOUNCED_TOPIC, DLQ_SOURCES, INTENTS_TOPIC, TRACE_TOPIC
from stream_app.ops import metrics
from stream_app.runtime import outputs
from stream_app.runtime.app import Runtime
from stream_app.runtime.health import Health, StoreError, is_store_error, is_transient
from stream_app.settings import Settings
from stream_app.stages.batcher import Batcher
from stream_app.stages.intake.seen import BadMarks, read_marks
from stream_app.stages.intake.service import Intake

# --- internal records ------------------------------------------------------------------------------


def test_every_topic_a_stage_reads_has_a_dlq() -> None:
    assert {INTENTS_TOPIC, BATCHES_TOPIC, BOUNCED_TOPIC, TRACE_TOPIC} <= set(DLQ_SOURCES)


@pytest.mark.parametrize(
    ("cls", "schema"),
    [
        (BatcherInput, INTENTS_TOPIC),
        (SubscriberBatch, BATCHES_TOPIC),
        (EmailBounced, BOUNCED_TOPIC),
        (TraceStep, None),
    ],
)
@pytest.mark.parametrize("raw", [b"", b"\xff\xfe not json", b"[1, 2]", b'"text"', b"{}", b'{"kind": 7}'])
def test_an_undecodable_internal_record_says_why(cls: Any, schema: str | None, raw: bytes) -> None:
    with pytest.raises(UndecodableRecord):
        decode_record(cls, raw, schema)


def test_internal_records_round_trip() -> None:
    close = BatcherInput(kind="close", window_id="p1-1000-abc", close_round="r1", round_size=2)
    assert decode_record(BatcherInput, encode_record(close), INTENTS_TOPIC) == close
    step = TraceStep(event_id="d-1", stage="ready", at="t", detail={"intake": {"topic": "packet.drawn"}})
    assert decode_record(TraceStep, encode_record(step)) == step
    with pytest.raises(UndecodableRecord, match="schema"):
        decode_record(BatcherInput, orjson.dumps({"kind": "explode"}), INTENTS_TOPIC)


# --- store errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        StoreError("boom"),
        OSError(errno.ENOSPC, "No space left on device"),
        Exception("IO error: No space left on device: While appending to file: 000012.log"),
        Exception("Corruption: block checksum mismatch"),
    ],
)
def test_store_errors_are_told_from_the_records_faults(exc: BaseException) -> None:
    assert is_store_error(exc)
    wrapped = RuntimeError("table write failed")
    wrapped.__cause__ = exc
    assert is_store_error(wrapped)


@pytest.mark.parametrize(
    "exc", [KeyError("k"), ValueError("bad record"), TypeError("x"), OSError("no errno")]
)
def test_a_records_fault_is_no_store_error(exc: BaseException) -> None:
    assert not is_store_error(exc)


def test_transient_failures() -> None:
    assert is_transient(KafkaConnectionError()) and is_transient(TimeoutError())
    assert not is_transient(MessageSizeTooLargeError()) and not is_transient(ValueError())
    assert is_transient(RegistryError("schema registry unavailable"))


class RaisingStore(dict[str, bytes]):
    """A table whose store is full."""

    def __setitem__(self, key: str, value: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def intents_event(value: bytes, offset: int = 5) -> Any:
    message = SimpleNamespace(
        topic=INTENTS_TOPIC, partition=1, offset=offset, key=b"M1", value=value, headers=[]
    )
    return SimpleNamespace(value=value, message=message, headers={})


class Spy:
    def __init__(self) -> None:
        self.dead: list[tuple[Any, BaseException]] = []

    async def dead_letter(self, event: Any, error: BaseException) -> None:
        self.dead.append((event, error))


def batcher() -> tuple[Batcher, Spy]:
    runtime = Runtime(Settings())
    runtime.health.pause_faust = lambda: None  # type: ignore[method-assign]  # no consumer here
    b = Batcher(runtime)
    spy = Spy()
    b.out = spy  # type: ignore[assignment]
    return b, spy


async def test_the_batcher_dead_letters_what_it_cannot_decode_or_handle() -> None:
    b, spy = batcher()
    for raw in (b"{not json", orjson.dumps({"kind": "intent"})):  # the second: an intent without one
        await b.process(intents_event(raw))
    assert [type(e).__name__ for _, e in spy.dead] == ["UndecodableRecord", "ValueError"]
    assert b.health.healthy


async def test_a_store_error_stops_the_batcher_instead_of_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b, spy = batcher()
    b.known_subscribers = RaisingStore()
    confirmed = BatcherInput(kind="confirmed", subscriber_key="M1", email="ez@example.com", mobile=None)
    with pytest.raises(TimeoutError):  # halted: the record is held unacked, never finished
        await asyncio.wait_for(b.process(intents_event(encode_record(confirmed))), 0.2)
    assert not spy.dead
    assert not b.health.healthy and "No space left" in (b.health.store_failure or "")
    assert metrics.STORE_FAILURES.labels(stage="batcher")._value.get() >= 1


def test_a_failed_store_pauses_the_consumer_and_keeps_it_paused() -> None:
    paused: list[set[str]] = []
    consumer = SimpleNamespace(assignment=lambda: {"tp"}, pause_partitions=paused.append)
    health = Health(
        SimpleNamespace(consumer=consumer, on_rebalance_complete=SimpleNamespace(connect=lambda f: f))
    )
    health.store_failed("intake", StoreError("disk full"))
    health.store_failed("batcher", StoreError("again"))  # the first failure is the one reported
    assert paused == [{"tp"}, {"tp"}] and health.store_failure == "intake: StoreError: disk full"


async def test_a_rebalance_does_not_resume_a_failed_worker() -> None:
    paused: list[set[str]] = []
    consumer = SimpleNamespace(assignment=lambda: {"tp"}, pause_partitions=paused.append)
    health = Health(
        SimpleNamespace(consumer=consumer, on_rebalance_complete=SimpleNamespace(connect=lambda f: f))
    )
    await health._after_rebalance(None)
    assert not paused  # healthy: nothing to pause
    health.store_failed("tracking", StoreError("disk full"))
    await health._after_rebalance(None)
    assert len(paused) == 2


# --- the dedupe log --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"garbage", b"[]", b'{"topic": "packet.drawn"}', b'{"topic": 1, "partition": 0, "seen": {}}'],
)
def test_a_bad_dedupe_log_record_is_refused_not_fatal(raw: bytes | None) -> None:
    with pytest.raises(BadMarks):
        read_marks(raw)


def test_a_good_dedupe_log_record_reads() -> None:
    raw = orjson.dumps({"topic": "packet.drawn", "partition": 3, "seen": {"d-1": 17}})
    assert read_marks(raw) == (TopicPartition("packet.drawn", 3), {"d-1": 17})


# --- the intake's failed batches -------------------------------------------------------------------

TP = TopicPartition("packet.drawn", 0)
POISON = 11


def rec(offset: int, value: bytes = b"{}") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, b"k", value, None, 1, len(value), [])


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def committed(self, tp: TopicPartition) -> int:
        return 10

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)


class FakeOutbox:
    """Kafka refuses a record over 100 bytes as too large."""

    def __init__(self, down: bool = False) -> None:
        self.pending: list[tuple[str, bytes, Any]] = []
        self.sent: list[tuple[str, bytes, Any]] = []
        self.down = down

    def add(self, topic: str, key: Any, value: bytes, *, partition: Any = None, headers: Any = None) -> None:
        self.pending.append((topic, value, dict(headers or [])))

    def discard(self) -> None:
        self.pending = []

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.down:
            raise KafkaConnectionError()
        if any(len(value) > 100 for _, value, _ in pending):
            raise MessageSizeTooLargeError()
        self.sent += pending


def intake(down: bool = False) -> tuple[Intake, FakeConsumer, FakeOutbox, list[int]]:
    it: Any = Intake.__new__(Intake)
    it.consumer, it.outbox = FakeConsumer(), FakeOutbox(down)
    it.seen = SimpleNamespace(forget=lambda tps: None)
    it.health = Health()
    handled: list[int] = []

    async def handle(fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        offsets = [r.offset for records in fetched.values() for r in records]
        if POISON in offsets:  # its DLQ copy is too large, so the whole batch fails at its flush
            raise MessageSizeTooLargeError()
        handled.extend(offsets)
        await it.consumer.commit({TP: offsets[-1] + 1})

    it.handle = handle
    return it, it.consumer, it.outbox, handled


async def test_a_batch_failing_twice_is_split_and_its_poison_goes_alone_to_the_dlq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", lambda s: _done())
    it, consumer, outbox, handled = intake()
    fetched = {TP: [rec(10), rec(POISON, b"x" * 500), rec(12)]}
    failure = MessageSizeTooLargeError()
    assert await it.recover(fetched, failure, failed_once=False) is True  # first time: read again
    assert not handled and consumer.seeks == [(TP, 10)]
    assert await it.recover(fetched, failure, failed_once=True) is False  # split: done with it
    assert handled == [10, 12]
    assert consumer.commits == [{TP: 11}, {TP: 12}, {TP: 13}]
    ((topic, value, headers),) = outbox.sent  # the poison's DLQ copy, without its 500 bytes
    assert topic == "packet.drawn.dlq" and value == b""
    assert headers["source.offset"] == b"11" and b"value left out (500 bytes" in headers["error.message"]
    assert consumer.seeks[-1] == (TP, 13)  # on past the batch
    assert it.health.healthy


async def test_a_split_stops_when_the_broker_is_away_and_dead_letters_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", lambda s: _done())
    it, consumer, outbox, handled = intake(down=True)
    fetched = {TP: [rec(10), rec(POISON, b"x" * 500), rec(12)]}
    assert await it.recover(fetched, MessageSizeTooLargeError(), failed_once=True) is True
    assert handled == [10] and not outbox.sent and consumer.commits == [{TP: 11}]


async def test_a_transient_or_store_failure_never_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio, "sleep", lambda s: _done())
    it, consumer, outbox, handled = intake()
    fetched = {TP: [rec(10), rec(12)]}
    assert await it.recover(fetched, KafkaConnectionError(), failed_once=True) is True
    assert not handled and not outbox.sent
    assert (
        await it.recover(fetched, OSError(errno.ENOSPC, "No space left on device"), failed_once=True) is False
    )
    assert not handled and not outbox.sent and not it.health.healthy  # stopped, nothing dead-lettered


async def _done() -> None:
    return None


# --- the DLQ write itself --------------------------------------------------------------------------


class FlakyProducer:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append({"topic": topic, **kwargs})


async def test_a_dlq_write_is_retried_and_a_too_large_copy_goes_without_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio, "sleep", lambda s: _done())
    producer = FlakyProducer([KafkaConnectionError(), MessageSizeTooLargeError()])
    out = outputs.Outputs(SimpleNamespace(producer=producer))
    message = SimpleNamespace(
        topic=INTENTS_TOPIC, partition=2, offset=9, key=b"k", value=b"v" * 50, headers=[]
    )
    await out.dead_letter(SimpleNamespace(message=message), ValueError("bad"))  # type: ignore[arg-type]
    ((sent,),) = [producer.sent]
    headers = dict(sent["headers"])
    assert sent["topic"] == "stream_app.intents.dlq" and sent["value"] == b""
    assert headers["error.message"].startswith(b"bad; value left out (50 bytes")


# --- the senders on a stop, and on a failed ledger store --------------------------------------------


def senders_with(failure: BaseException) -> tuple[Any, Spy, Any]:
    from stream_app.stages.senders import Senders

    runtime = Runtime(Settings())
    runtime.health.pause_faust = lambda: None  # type: ignore[method-assign]
    senders: Any = Senders(runtime)
    spy = Spy()
    senders.out = spy
    senders.home_partition = lambda notification_id: 0

    async def deliver(*args: Any) -> None:
        raise failure

    senders.deliver = deliver
    ready = {
        "notification_id": "d-1:packet-drawn-drawer",
        "event_id": "d-1",
        "event_type": "packet.drawn",
        "channel": "email",
        "template": "packet-drawn-drawer",
        "subscriber_key": "M1",
        "email": "ez@example.com",
        "attributes": {"EventId": "d-1", "DrawerName": "EZ"},
    }
    value = orjson.dumps(ready)
    message = SimpleNamespace(
        topic="subscriber.ready", partition=0, offset=3, key=b"k", value=value, headers=[]
    )
    return senders, spy, SimpleNamespace(value=value, message=message, headers={})


async def test_a_send_cut_short_by_the_stop_stays_uncommitted_not_dead_lettered() -> None:
    from stream_app.stages.senders import Revoked

    senders, spy, event = senders_with(RuntimeError("Cannot send a request, as the client has been closed."))
    await senders.handle(event)  # a failure while running: the DLQ keeps the record
    assert len(spy.dead) == 1
    senders.in_hand.stopping = True  # the stop's grace ran out, then the MC client closed
    with pytest.raises(Revoked):
        await senders.handle(event)
    assert len(spy.dead) == 1


async def test_a_ledger_store_error_stops_the_senders_instead_of_dead_lettering() -> None:
    senders, spy, event = senders_with(Exception("IO error: No space left on device"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(senders.handle(event), 0.2)
    assert not spy.dead and not senders.runtime.health.healthy
