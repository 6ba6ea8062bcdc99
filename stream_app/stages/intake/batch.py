"""One fetched batch of input records turned into the intake's outputs (sent by the outbox).

Per event it only decodes, checks and renders: every output is appended to producer batches.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from stream_app.contract.topics import INTAKE_HEADER, INTENTS_TOPIC, READY_TOPIC
from stream_app.contract.wire import AvroSchemas
from stream_app.domain.notifications import InvalidEvent, decode_event, plan
from stream_app.domain.subscribers import needs_import
from stream_app.ops import metrics
from stream_app.runtime import outputs
from stream_app.runtime.health import is_store_error
from stream_app.runtime.outputs import Out
from stream_app.stages.intake.known_subscribers import KnownSubscribers
from stream_app.stages.intake.outbox import Outbox
from stream_app.stages.intake.seen import Marks, SeenMarks, is_duplicate

log = logging.getLogger("stream_app.intake")


class IntakeBatch:
    """The outputs of one fetched batch of input records: built here, sent by the outbox."""

    def __init__(
        self, outbox: Outbox, seen: SeenMarks, known: KnownSubscribers, avro: AvroSchemas | None = None
    ) -> None:
        self.outbox = outbox
        self.seen = seen
        self.known = known
        # The writer schemas of the batch's Avro records, fetched before the batch (service.py).
        self.avro = avro
        self.at = outputs.now_rfc3339()
        self.received_at = time.time()
        self.ready = 0

    def handle(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        marks = self.seen.of(tp)
        for record in records:
            try:
                self.handle_one(tp, marks, record)
            except InvalidEvent as exc:
                self.dead_letter(record, exc)
            except Exception as exc:  # one bad record must never stop the intake
                if is_store_error(exc):  # the dedupe marks' store, not the record: the batch fails
                    raise
                log.exception("intake failed", extra={"topic": tp.topic, "offset": record.offset})
                self.dead_letter(record, exc)
        metrics.events_received(tp.topic, len(records))

    def handle_one(self, tp: TopicPartition, marks: Marks, record: ConsumerRecord[bytes, bytes]) -> None:
        event = decode_event(tp.topic, record.value, self.avro)
        event_id: str = event["event_id"]
        if is_duplicate(marks.get(event_id), record.offset):
            self.trace(event_id, "duplicate-input", topic=tp.topic, offset=record.offset)
            return
        self.seen.mark(tp, event_id, record.offset)
        ready, rejected = plan(tp.topic, event)
        add = self.outbox.add
        batched = []
        header = b""
        for notification in ready:
            known = self.known.get(notification["subscriber_key"])
            if needs_import(notification["email"], notification["mobile"], known):
                batched.append(notification)
                continue
            header = header or orjson.dumps(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "offset": record.offset,
                    "at": self.at,
                    "notifications": len(ready) + len(rejected),
                    "via": "known subscriber",
                }
            )
            add(
                READY_TOPIC,
                notification["notification_id"].encode(),
                orjson.dumps(notification),
                headers=[(INTAKE_HEADER, header)],
            )
            self.ready += 1
        if batched or rejected:
            # Off the fast path the event's steps are traced as they happen.
            self.trace(
                event_id,
                "received",
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                notifications=len(ready) + len(rejected),
            )
        for notification in batched:
            intent = {"kind": "intent", "ready": notification, "received_at": self.received_at}
            add(INTENTS_TOPIC, notification["subscriber_key"].encode(), orjson.dumps(intent))
        for bad in rejected:
            self.put(outputs.status(bad.ready, "invalid", reason=bad.reason))
            self.trace(event_id, "outcome", **outputs.outcome_detail(bad.ready, "invalid", reason=bad.reason))

    def put(self, out: Out) -> None:
        self.outbox.add(
            out.topic, out.key, out.value or b"", partition=out.partition, headers=out.headers or []
        )

    def trace(self, event_id: str, stage: str, **detail: Any) -> None:
        self.put(outputs.trace(event_id, stage, **detail))

    def dead_letter(self, record: ConsumerRecord[bytes, bytes], error: BaseException) -> None:
        headers = [(k, bytes(v)) for k, v in record.headers]
        self.put(
            outputs.dead_letter(
                record.topic, record.partition, record.offset, record.key, record.value, headers, error
            )
        )
