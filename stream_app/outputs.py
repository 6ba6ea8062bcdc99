"""What every stage writes besides its main output: outcomes, DLQ records and trace steps."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import EventT, TopicT

from stream_app import metrics
from stream_app.app import app, dlq_name, ready_topic, status_topic, trace_topic
from stream_app.records import NotificationStatus, SubscriberReady, TraceStep

log = logging.getLogger("stream_app.outputs")

MAX_HEADER_TEXT = 2000


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _headers(event: EventT) -> list[tuple[str, bytes]]:
    headers = event.message.headers or []
    items: Any = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


async def send_to_dlq(event: EventT, error: BaseException) -> None:
    """Put the original record, bytes untouched, on `<topic>.dlq` with the reason in headers.

    Producing the record back onto `source.topic` (console tools, kcat or `resend --dlq`) replays it.
    """
    message = event.message
    headers = [h for h in _headers(event) if not h[0].startswith(("error.", "source."))]
    headers += [
        ("error.class", type(error).__name__.encode()),
        ("error.message", str(error)[:MAX_HEADER_TEXT].encode("utf-8", "replace")),
        ("source.topic", message.topic.encode()),
        ("source.partition", str(message.partition).encode()),
        ("source.offset", str(message.offset).encode()),
    ]
    await app.producer.send_and_wait(
        dlq_name(message.topic),
        key=message.key,
        value=message.value,
        partition=None,
        timestamp=None,
        headers=headers,
    )
    metrics.record_dlq(
        dlq_topic=dlq_name(message.topic),
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        error=error,
    )
    log.warning(
        "record sent to DLQ",
        extra={"topic": message.topic, "offset": message.offset, "error": str(error)[:300]},
    )


async def send_status(
    ready: SubscriberReady,
    status: str,
    *,
    reason: str = "",
    mc_request_id: str = "",
    attempts: int = 0,
) -> None:
    record = NotificationStatus(
        notification_id=ready.notification_id,
        event_id=ready.event_id,
        channel=ready.channel,
        template=ready.template,
        subscriber_key=ready.subscriber_key,
        status=status,
        reason=reason,
        mc_request_id=mc_request_id,
        attempts=attempts,
        at=now_rfc3339(),
    )
    await publish(status_topic, ready.notification_id, record.dumps(serializer="json"))
    metrics.record_outcome(
        channel=ready.channel,
        status=status,
        notification_id=ready.notification_id,
        event_id=ready.event_id,
        template=ready.template,
        reason=reason,
    )
    if status in metrics.FAILED_STATUSES:
        log.warning(
            "notification %s: %s",
            status,
            reason,
            extra={
                "event_id": ready.event_id,
                "notification_id": ready.notification_id,
                "channel": ready.channel,
                "status": status,
            },
        )
    await trace(
        ready.event_id,
        "outcome",
        notification_id=ready.notification_id,
        channel=ready.channel,
        status=status,
        reason=reason,
        mc_request_id=mc_request_id,
        attempts=attempts,
    )


async def trace(event_id: str, stage: str, **detail: Any) -> None:
    metrics.record_stage(stage)
    step = TraceStep(event_id=event_id, stage=stage, at=now_rfc3339(), detail=detail)
    await publish(trace_topic, event_id, step)


async def publish(topic: TopicT, key: str, value: Any) -> None:
    """Hand a record to the Kafka producer now.

    force=True: not attached to the current event (attached sends wait for the next commit, so
    every hop would pay the commit interval). Not `send_soon` either: Faust drains that buffer one
    record at a time, and records queued behind a backlog arrive seconds late. Faust flushes the
    producer before it commits offsets, so at-least-once holds.
    """
    await topic.send(key=key.encode(), value=value, force=True)


def headers_of(event: EventT) -> dict[str, bytes]:
    return dict(_headers(event))


async def send_ready(ready: SubscriberReady, *, via: str, **detail: Any) -> None:
    """Hand a notification whose recipient MC knows to the senders."""
    await publish(ready_topic, ready.notification_id, ready.dumps(serializer="json"))
    await trace(ready.event_id, "ready", notification_id=ready.notification_id, via=via, **detail)
