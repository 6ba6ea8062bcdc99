"""What every stage writes besides its main output: outcomes, DLQ records and trace steps."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
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


def dlq_headers(
    headers: Iterable[tuple[str, bytes]], error: BaseException, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The original record's headers, plus why and where it failed (earlier reasons replaced)."""
    kept = [h for h in headers if not h[0].startswith(("error.", "source."))]
    return [
        *kept,
        ("error.class", type(error).__name__.encode()),
        ("error.message", str(error)[:MAX_HEADER_TEXT].encode("utf-8", "replace")),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def dlq_sent(topic: str, partition: int, offset: int, error: BaseException) -> None:
    """Count and log a record put on its DLQ."""
    metrics.record_dlq(
        dlq_topic=dlq_name(topic), source_topic=topic, partition=partition, offset=offset, error=error
    )
    log.warning("record sent to DLQ", extra={"topic": topic, "offset": offset, "error": str(error)[:300]})


async def send_to_dlq(event: EventT, error: BaseException) -> None:
    """Put the original record, bytes untouched, on `<topic>.dlq` with the reason in headers.

    Producing the record back onto `source.topic` (console tools, kcat or `resend --dlq`) replays it.
    """
    message = event.message
    await app.producer.send_and_wait(
        dlq_name(message.topic),
        key=message.key,
        value=message.value,
        partition=None,
        timestamp=None,
        headers=dlq_headers(_headers(event), error, message.topic, message.partition, message.offset),
    )
    dlq_sent(message.topic, message.partition, message.offset, error)


def status_value(
    ready: Mapping[str, Any],
    status: str,
    *,
    reason: str = "",
    mc_request_id: str = "",
    attempts: int = 0,
) -> bytes:
    """A notification.status record for the notification whose SubscriberReady fields are `ready`,
    counted in the metrics (and logged when it is a failure)."""
    record = NotificationStatus(
        notification_id=ready["notification_id"],
        event_id=ready["event_id"],
        channel=ready["channel"],
        template=ready["template"],
        subscriber_key=ready["subscriber_key"],
        status=status,
        reason=reason,
        mc_request_id=mc_request_id,
        attempts=attempts,
        at=now_rfc3339(),
    )
    metrics.record_outcome(
        channel=record.channel,
        status=status,
        notification_id=record.notification_id,
        event_id=record.event_id,
        template=record.template,
        reason=reason,
    )
    if status in metrics.FAILED_STATUSES:
        log.warning(
            "notification %s: %s",
            status,
            reason,
            extra={
                "event_id": record.event_id,
                "notification_id": record.notification_id,
                "channel": record.channel,
                "status": status,
            },
        )
    return record.dumps(serializer="json")


def trace_step(event_id: str, stage: str, **detail: Any) -> TraceStep:
    """A trace step for the event view (`tracking.py`), counted in the stage rates."""
    metrics.record_stage(stage)
    return TraceStep(event_id=event_id, stage=stage, at=now_rfc3339(), detail=detail)


def trace_value(event_id: str, stage: str, **detail: Any) -> bytes:
    """`trace_step` as the JSON on `stream_app.trace`, for producers outside Faust (the intake)."""
    return trace_step(event_id, stage, **detail).dumps(serializer="json")


def outcome_detail(ready: Mapping[str, Any], status: str, **detail: Any) -> dict[str, Any]:
    return {
        "notification_id": ready["notification_id"],
        "channel": ready["channel"],
        "status": status,
        **detail,
    }


async def send_status(
    ready: SubscriberReady,
    status: str,
    *,
    reason: str = "",
    mc_request_id: str = "",
    attempts: int = 0,
    upstream: Mapping[str, Any] | None = None,
) -> None:
    """Publish a notification's outcome, and its trace step (`upstream`: the steps before it that
    rode along with the record, see `tracking.py`)."""
    fields = ready.asdict()
    value = status_value(fields, status, reason=reason, mc_request_id=mc_request_id, attempts=attempts)
    await publish(status_topic, ready.notification_id, value)
    detail = outcome_detail(
        fields, status, reason=reason, mc_request_id=mc_request_id, attempts=attempts, **(upstream or {})
    )
    await trace(ready.event_id, "outcome", **detail)


async def trace(event_id: str, stage: str, **detail: Any) -> None:
    await publish(trace_topic, event_id, trace_step(event_id, stage, **detail))


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
