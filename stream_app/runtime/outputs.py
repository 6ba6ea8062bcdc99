"""What every stage writes besides its main output: outcomes, DLQ records and trace steps.

One way to produce for both runtimes: the builders here return an `Out` record (counted in the
metrics as it is built), and each runtime sends it its own way: the intake appends it to its
producer batches (`stages/intake/outbox.py`), the Faust stages hand it to `Outputs.emit`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from faust.types import EventT

from stream_app.contract.records import NotificationStatus, SubscriberReady, TraceStep
from stream_app.contract.topics import READY_TOPIC, STATUS_TOPIC, TRACE_TOPIC, dlq_name
from stream_app.ops import metrics
from stream_app.ops.logs import mask_text

log = logging.getLogger("stream_app.outputs")

MAX_HEADER_TEXT = 2000

Headers = list[tuple[str, bytes]]  # aiokafka takes only a list


class Out(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int | None = None


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def headers_of(event: EventT) -> dict[str, bytes]:
    return dict(_headers(event))


def _headers(event: EventT) -> Headers:
    headers = event.message.headers or []
    items: Any = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


def dlq_headers(
    headers: Iterable[tuple[str, bytes]], error: BaseException, topic: str, partition: int, offset: int
) -> Headers:
    """The original record's headers, plus why and where it failed (earlier reasons replaced). The
    reason is masked: an error often quotes the input it failed on, addresses and numbers included."""
    kept = [h for h in headers if not h[0].startswith(("error.", "source."))]
    return [
        *kept,
        ("error.class", type(error).__name__.encode()),
        ("error.message", mask_text(str(error))[:MAX_HEADER_TEXT].encode("utf-8", "replace")),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]],
    error: BaseException,
) -> Out:
    """The original record, bytes untouched, for `<topic>.dlq` with the reason in headers; counted
    and logged. Producing it back onto `source.topic` (console tools, kcat, `resend --dlq`) replays it."""
    metrics.record_dlq(
        dlq_topic=dlq_name(topic), source_topic=topic, partition=partition, offset=offset, error=error
    )
    log.warning("record sent to DLQ", extra={"topic": topic, "offset": offset, "error": str(error)[:300]})
    if value is None and key is None:
        value = b""  # a record with neither is still a record a tool can produce back
    return Out(dlq_name(topic), key, value, dlq_headers(headers, error, topic, partition, offset), 0)


def without_value(out: Out) -> Out:
    """A DLQ record whose copy Kafka refused as too large: its key and headers, the reason saying
    where the value still is (its source coordinates; retention permitting)."""
    headers = list(out.headers or [])
    size = len(out.value or b"")
    note = f"; value left out ({size} bytes, too large for the DLQ): read it at source.topic/partition/offset"
    for i, (name, value) in enumerate(headers):
        if name == "error.message" and not value.endswith(b"at source.topic/partition/offset"):
            headers[i] = (
                name,
                (value.decode("utf-8", "replace")[: MAX_HEADER_TEXT - len(note)] + note).encode(),
            )
    return out._replace(value=b"", headers=headers)


def status(
    ready: Mapping[str, Any],
    status: str,
    *,
    reason: str = "",
    mc_request_id: str = "",
    attempts: int = 0,
) -> Out:
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
    return Out(STATUS_TOPIC, record.notification_id.encode(), record.dumps(serializer="json"))


def trace(event_id: str, stage: str, **detail: Any) -> Out:
    """A step for the event view (`stages/tracking.py`), counted in the stage rates."""
    metrics.record_stage(stage)
    step = TraceStep(event_id=event_id, stage=stage, at=now_rfc3339(), detail=detail)
    return Out(TRACE_TOPIC, event_id.encode(), step.dumps(serializer="json"))


def outcome_detail(ready: Mapping[str, Any], status: str, **detail: Any) -> dict[str, Any]:
    return {
        "notification_id": ready["notification_id"],
        "channel": ready["channel"],
        # The language the message went out in (the event view shows it); None on older records.
        "locale": ready.get("locale"),
        "status": status,
        **detail,
    }


def ready_record(ready: SubscriberReady) -> Out:
    return Out(READY_TOPIC, ready.notification_id.encode(), ready.dumps(serializer="json"))


class Outputs:
    """The Faust stages' side: every `Out` goes through Faust's producer."""

    def __init__(self, app: Any) -> None:
        self._app = app

    async def emit(self, out: Out, *, wait: bool = False) -> None:
        """Hand a record to the producer now; `wait`: until Kafka has it.

        Not attached to the current event (attached sends wait for the next commit, so every hop
        would pay the commit interval), and not `send_soon` either: Faust drains that buffer one
        record at a time, and records queued behind a backlog arrive seconds late. Faust flushes
        the producer before it commits offsets, so at-least-once holds.
        """
        producer = self._app.producer
        send = producer.send_and_wait if wait else producer.send
        await send(
            out.topic,
            key=out.key,
            value=out.value,
            partition=out.partition,
            timestamp=None,
            headers=out.headers,
        )

    async def status(
        self,
        ready: SubscriberReady,
        state: str,
        *,
        reason: str = "",
        mc_request_id: str = "",
        attempts: int = 0,
        upstream: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish a notification's outcome, and its trace step (`upstream`: the steps before it
        that rode along with the record, see `stages/tracking.py`)."""
        fields = ready.asdict()
        await self.emit(status(fields, state, reason=reason, mc_request_id=mc_request_id, attempts=attempts))
        detail = outcome_detail(
            fields, state, reason=reason, mc_request_id=mc_request_id, attempts=attempts, **(upstream or {})
        )
        await self.trace(ready.event_id, "outcome", **detail)

    async def trace(self, event_id: str, stage: str, **detail: Any) -> None:
        await self.emit(trace(event_id, stage, **detail))

    async def dead_letter(self, event: EventT, error: BaseException) -> None:
        """The event's record on its DLQ, awaited: the event is acked right after. A write that
        fails is tried again (backing off) rather than acking a record kept nowhere; a copy too
        large for the DLQ goes without its value (`without_value`)."""
        m = event.message
        out = dead_letter(m.topic, m.partition, m.offset, m.key, m.value, _headers(event), error)
        delay = 1.0
        while True:
            try:
                await self.emit(out, wait=True)
                return
            except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
                if out.value:
                    out = without_value(out)
                    continue
                failure: Exception = exc
            except Exception as exc:
                failure = exc
            log.warning("DLQ write failed (%s); retrying in %.0f s", type(failure).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def ready(self, ready: SubscriberReady, *, via: str, **detail: Any) -> None:
        """Hand a notification whose recipient MC knows to the senders."""
        await self.emit(ready_record(ready))
        await self.trace(ready.event_id, "ready", notification_id=ready.notification_id, via=via, **detail)
