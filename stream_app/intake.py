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


async def handle(event_type: str, event: EventT, seen: TableT) -> None:
    packet = decode_event(event_type, event.value)
    if packet.event_id in seen:
        await trace(packet.event_id, "duplicate-input", topic=event_type, offset=event.message.offset)
        return
    seen[packet.event_id] = b"%.3f" % time.time()
    ready, rejected = plan(event_type, packet)
    await trace(
        packet.event_id,
        "received",
        topic=event_type,
        partition=event.message.partition,
        offset=event.message.offset,
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
