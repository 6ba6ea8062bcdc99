"""Intake: packet events in, notification intents out (to the subscriber batcher).

Decode and validate each record against its schema; a record that cannot be processed goes to
`<topic>.dlq` untouched. A party whose address is bad gets an `invalid` outcome without holding back
the other party's notifications. `event_id` is deduplicated per partition (a replayed record keeps
its key and so its partition); the send ledger is what makes a send exactly-once across partitions.
"""

from __future__ import annotations

import logging
import time

from faust.types import EventT, StreamT, TableT, TopicT

from stream_app import metrics
from stream_app.app import app, intents_topic, packet_drawn_topic, packet_redeemed_topic, table
from stream_app.notifications import InvalidEvent, decode_event, plan
from stream_app.outputs import publish, send_status, send_to_dlq, trace
from stream_app.records import BatcherInput

log = logging.getLogger("stream_app.intake")

seen_drawn = table("seen-packet.drawn", retained=True)
seen_redeemed = table("seen-packet.redeemed", retained=True)


def seen_mark(partition: int, offset: int) -> bytes:
    """What the dedupe table keeps for an event: the record it was first seen in."""
    return b"%d:%d" % (partition, offset)


def is_duplicate(mark: bytes | None, partition: int, offset: int) -> bool:
    """Whether an event whose dedupe mark is `mark` was already handled by another record.

    The same record read again is not a duplicate: that happens when a worker died before its offset
    was committed, and the mark may have reached Kafka while the intents sent before it had not (the
    producer sends per partition, in no order across them). It is handled again; the send ledger
    absorbs what did go out. Marks written before 2026-11-25 hold a time, never a record: duplicates.
    """
    return mark is not None and mark != seen_mark(partition, offset)


async def handle(event_type: str, event: EventT, seen: TableT) -> None:
    packet = decode_event(event_type, event.value)
    message = event.message
    if is_duplicate(seen.get(packet.event_id), message.partition, message.offset):
        await trace(packet.event_id, "duplicate-input", topic=event_type, offset=message.offset)
        return
    seen[packet.event_id] = seen_mark(message.partition, message.offset)
    ready, rejected = plan(event_type, packet)
    await trace(
        packet.event_id,
        "received",
        topic=event_type,
        partition=message.partition,
        offset=message.offset,
        notifications=len(ready) + len(rejected),
    )
    for bad in rejected:
        await send_status(bad.ready, "invalid", reason=bad.reason)
    now = time.time()
    for notification in ready:
        await publish(
            intents_topic,
            notification.subscriber_key,
            BatcherInput(kind="intent", ready=notification, received_at=now),
        )


def _intake_agent(topic: TopicT, event_type: str, seen: TableT) -> None:
    @app.agent(topic, name=f"intake-{event_type}")
    async def intake(stream: StreamT) -> None:
        async for event in stream.events():
            metrics.event_received(event_type)
            try:
                await handle(event_type, event, seen)
            except InvalidEvent as exc:
                await send_to_dlq(event, exc)
            except Exception as exc:  # one bad record must never stop the agent
                log.exception("intake failed", extra={"topic": event_type})
                await send_to_dlq(event, exc)


_intake_agent(packet_drawn_topic, "packet.drawn", seen_drawn)
_intake_agent(packet_redeemed_topic, "packet.redeemed", seen_redeemed)
