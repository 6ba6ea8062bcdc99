"""What every stage writes besides its main output: outcomes, DLQ records and trace steps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from faust.types import EventT, TopicT

from stream_app import metrics
from stream_app.app import app, dlq_name, ready_topic, status_topic, trace_topic
from stream_app.records import NotificationStatus, SubscriberReady, TraceStep, TraceSteps

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


class TraceBuffer:
    """Trace steps wait here up to `linger` seconds and leave as one record per event.

    An event's steps come in quick succession from several agents (received, then batched or ready for
    each notification); sent one by one, each cost a record on stream_app.trace, a tracker event and a
    changelog write of the event's whole step list, the largest share of the worker's Kafka traffic.
    The price: a SIGKILL loses the steps of the last `linger` seconds (the view shows fewer stages for
    those events; nothing else reads them). A clean stop sends them (`close`).
    """

    def __init__(self, linger: float, max_events: int) -> None:
        self.linger = linger
        self.max_events = max_events
        self._steps: dict[str, list[TraceStep]] = {}
        self._timer: asyncio.Task[None] | None = None
        # One flush at a time, so that an event's records leave in the order its steps were taken.
        self._lock = asyncio.Lock()

    async def add(self, event_id: str, step: TraceStep) -> None:
        self._steps.setdefault(event_id, []).append(step)
        if len(self._steps) >= self.max_events:
            await self.flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        # Steps added while a flush runs find this timer still running: it goes round again for them.
        while True:
            await asyncio.sleep(self.linger)
            await self.flush()
            if not self._steps:
                return

    async def close(self) -> None:
        """A clean stop: no timer left behind, every step out."""
        if self._timer is not None:
            self._timer.cancel()
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            steps, self._steps = self._steps, {}
            for event_id, taken in steps.items():
                await publish(trace_topic, event_id, TraceSteps(event_id=event_id, steps=taken))


# 0.2 s: an event's steps up to `ready` of a known subscriber fit in one record, and the event view
# trails by no more than that.
trace_buffer = TraceBuffer(linger=0.2, max_events=2000)


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types signal receivers too narrowly
async def _flush_trace(app: Any, **kwargs: Any) -> None:
    await trace_buffer.close()


async def trace(event_id: str, stage: str, **detail: Any) -> None:
    metrics.record_stage(stage)
    await trace_buffer.add(event_id, TraceStep(stage=stage, at=now_rfc3339(), detail=detail))


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
