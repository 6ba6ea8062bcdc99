"""Intake: packet events in, notifications out: straight to `subscriber.ready` for subscribers MC
already has, to the subscriber batcher (`stream_app.intents`) for new or changed ones.

Each record is decoded and validated against its schema; one that cannot be processed goes to
`<topic>.dlq` untouched. A party whose address is bad gets an `invalid` outcome without holding back
the other party's notifications. `event_id` is deduplicated per input partition (`seen.py`); the send
ledger is what makes a send exactly-once across partitions.

Why not a Faust agent: Faust hands an agent one event at a time through several queues, which caps
an agent at ~3.6k events/s here, a twentieth of what this machine's broker and aiokafka allow
(bench/README.md). The intake is the stage a campaign spike hits, so it is a plain aiokafka consumer
(group `<APP_ID>-intake`) that handles what one fetch returned as one batch: every output goes into
producer batches (`outbox.py`), the batch's dedupe marks into one log record per partition, and
its offsets are committed only once Kafka has all of that (at least once; the ledger absorbs the
rest). Per event it only decodes, checks and renders.

On the fast path the intake's own steps (received, ready) for the event view ride along with the
`subscriber.ready` record in the header `stream_app.intake`, and the sender records them with the
outcome: a trace record per event would cost the tracker more than the intake spends on the event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from aiokafka.structs import ConsumerRecord

from stream_app.contract.registry import SchemaRegistry
from stream_app.contract.topics import (
    INPUT_TOPICS,
    INTENTS_TOPIC,
    READY_TOPIC,
    STATUS_TOPIC,
    TRACE_TOPIC,
    dlq_name,
)
from stream_app.contract.wire import AvroSchemas, schema_ids
from stream_app.ops import metrics
from stream_app.runtime import outputs
from stream_app.runtime.health import is_store_error, is_transient
from stream_app.stages.intake.batch import IntakeBatch
from stream_app.stages.intake.known_subscribers import KnownSubscribers
from stream_app.stages.intake.outbox import Outbox
from stream_app.stages.intake.seen import SeenMarks

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.intake")

# Records handled as one batch: large enough that per-batch costs vanish, small enough that the
# batch's outputs fit a few producer requests and a rebalance waits for it only briefly.
MAX_BATCH = 2000


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Waits for the batch in hand: it is committed before another worker reads its partitions.
        async with self.intake.batch_lock:
            self.intake.seen.forget(revoked)
            for tp in revoked:
                metrics.INTAKE_COMMITTED.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            metrics.INTAKE_COMMITTED[(tp.topic, tp.partition)] = await self.intake.consumer.committed(tp)
        log.info(
            "intake partitions assigned",
            extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in assigned)},
        )


class Intake(mode.Service):
    """The intake consumer, started and stopped with the worker."""

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = runtime.settings
        self.batch_lock = asyncio.Lock()
        self.health = runtime.health
        bootstrap = settings.bootstrap_servers
        on_disk = settings.store.startswith("rocksdb")
        marks_dir = runtime.worker_dir / "intake-seen" if on_disk else None
        self.seen = SeenMarks(bootstrap, runtime.seen_log_topic, settings.topic_partitions, marks_dir)
        self.known = KnownSubscribers(bootstrap, settings.app_id)
        # Avro-framed records: their writer schemas are fetched per batch, before it is handled.
        self.registry = SchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
        self.avro = self.registry.schemas if self.registry is not None else AvroSchemas()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=f"{settings.app_id}-intake",
            client_id=f"{settings.app_id}-intake",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group starts from the oldest event, not the newest
            isolation_level="read_committed",  # a transactional producer's aborted events are not events
            session_timeout_ms=int(settings.session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_interval_seconds * 1000),
            max_poll_interval_ms=300_000,
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"{settings.app_id}-intake",
            acks="all",
            # A retried produce after a leader change must not write a record twice.
            enable_idempotence=True,
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
        )

    async def on_start(self) -> None:
        await self.producer.start()
        await self.known.start()
        topics = [READY_TOPIC, INTENTS_TOPIC, STATUS_TOPIC, TRACE_TOPIC, self.seen.topic]
        topics += [dlq_name(t) for t in INPUT_TOPICS]
        counts = {t: len(await self.producer.partitions_for(t)) for t in topics}
        self.outbox = Outbox(self.producer, counts)
        self.consumer.subscribe(list(INPUT_TOPICS), listener=_Rebalance(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        async with self.batch_lock:
            pass  # the batch in hand is committed first; `_consume` takes no other (should_stop)
        # Not under the lock: leaving the group runs the rebalance listener, whose revoke takes it.
        # Holding it here deadlocked a worker stopped while its intake was still joining the group.
        await self.consumer.stop()
        await self.known.stop()
        await self.producer.stop()
        if self.registry is not None:
            await self.registry.aclose()

    @mode.Service.task
    async def _consume(self) -> None:
        failed_once = False  # the batch at the head of the partitions failed once already
        while not self.should_stop:
            if not self.health.healthy:  # a failed store stopped the worker's consumption
                await asyncio.sleep(1)
                continue
            try:
                fetched = await self.consumer.getmany(timeout_ms=500, max_records=MAX_BATCH)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("intake fetch failed; retrying")
                await asyncio.sleep(1)
                continue
            if not fetched:
                continue
            async with self.batch_lock:
                if self.should_stop:
                    break  # uncommitted: read again by the partitions' next owner
                try:
                    await self.handle(fetched)
                    failed_once = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed_once = await self.recover(fetched, exc, failed_once)

    async def recover(
        self,
        fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        exc: Exception,
        failed_once: bool,
    ) -> bool:
        """After a failed batch (nothing of it committed): whether the batch now at the head of the
        partitions has failed once already."""
        await self.rewind(list(fetched))  # read again from the committed offsets
        if is_store_error(exc):  # not the events' fault: none goes to a DLQ
            self.health.store_failed("intake", exc)
            return False
        if failed_once and not is_transient(exc):
            # Failed twice: one of its records, alone, fails it (a DLQ copy too large, say). Read
            # one at a time, that record goes to its DLQ, the others on.
            log.error("intake batch failed twice (%s); handling it record by record", exc)
            return not await self.split(fetched)
        log.error("intake batch failed; reading it again", exc_info=exc)
        await asyncio.sleep(1)
        return True

    async def split(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> bool:
        """Handle a batch one record at a time (committing each); a record that fails alone goes to
        its DLQ with the reason. False when stopped by a failure that is not a record's (a store, the
        broker): the rest is read again from the committed offsets."""
        metrics.INTAKE_BATCH_SPLITS.inc()
        for tp, records in fetched.items():
            for record in records:
                if tp not in self.consumer.assignment():
                    break  # revoked meanwhile: its next owner reads it
                try:
                    await self.handle({tp: [record]})
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failure = exc
                self.outbox.discard()
                self.seen.forget([tp])  # its mark, if made: a replay from the DLQ is no duplicate
                if is_store_error(failure):
                    self.health.store_failed("intake", failure)
                elif not is_transient(failure):
                    log.error(
                        "intake record failed alone (%s); sent to its DLQ",
                        failure,
                        extra={"topic": tp.topic, "partition": tp.partition, "offset": record.offset},
                    )
                    if await self.dead_letter_alone(tp, record, failure):
                        continue
                await self.rewind(list(fetched))
                return False
        for tp, records in fetched.items():  # rewound to the old commit: on past what was handled
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, records[-1].offset + 1)
        return True

    async def dead_letter_alone(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], error: BaseException
    ) -> bool:
        """The record on its DLQ (without its value if Kafka refuses the copy as too large), then
        its offset committed. False if the DLQ could not be written (the broker away)."""
        headers = [(k, bytes(v)) for k, v in record.headers]
        out = outputs.dead_letter(
            record.topic, record.partition, record.offset, record.key, record.value, headers, error
        )
        for attempt in (out, outputs.without_value(out)):
            self.outbox.discard()
            self.outbox.add(
                attempt.topic,
                attempt.key,
                attempt.value or b"",
                partition=attempt.partition,
                headers=attempt.headers,
            )
            try:
                await self.outbox.flush()
            except (MessageSizeTooLargeError, RecordTooLargeError):
                continue
            except Exception:
                log.warning("could not write the intake's DLQ; the record is read again", exc_info=True)
                return False
            await self.consumer.commit({tp: record.offset + 1})
            metrics.INTAKE_COMMITTED[(tp.topic, tp.partition)] = record.offset + 1
            return True
        return False

    async def handle(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assigned = self.consumer.assignment()
        fetched = {tp: records for tp, records in fetched.items() if tp in assigned}
        await self.seen.restore(fetched)
        if self.registry is not None:
            # The per-record path is synchronous: schemas of ids not seen yet are fetched first. A
            # registry that cannot be asked fails the batch, which is read again (nothing is lost).
            ids = schema_ids(r.value for records in fetched.values() for r in records)
            if ids:
                await self.registry.prefetch(ids)
        batch = IntakeBatch(self.outbox, self.seen, self.known, self.avro)
        for tp, records in fetched.items():
            batch.handle(tp, records)
        self.seen.write_new(self.outbox)
        await self.outbox.flush()
        metrics.record_stage("ready", batch.ready)  # the fast path's step rides with the records
        offsets = {tp: records[-1].offset + 1 for tp, records in fetched.items()}
        await self.consumer.commit(offsets)
        metrics.INTAKE_COMMITTED.update({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})

    async def rewind(self, tps: list[TopicPartition]) -> None:
        committed = {tp: await self.consumer.committed(tp) for tp in tps}
        self.outbox.discard()
        self.seen.forget(tps)  # marks of the failed batch may be in memory only
        for tp, offset in committed.items():
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)


def install(runtime: Runtime) -> None:
    @runtime.app.service
    class WorkerIntake(Intake):
        # Faust builds its services inside the running loop, where aiokafka clients must be made.
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(runtime, **kwargs)
