"""Email and SMS senders: `subscriber.ready` in, one MC send per notification, outcome out.

Exactly once at MC: the ledger (a table, backed by its changelog) is consulted before and written
after every send, and the `pending` mark is flushed to Kafka before MC is called, so a worker killed
mid-call leaves evidence; the next owner of the partition reconciles with MC's own send records.
Transient MC failures are retried with backoff inside one of `SEND_CONCURRENCY` slots: other
partitions keep flowing, and when MC is down every slot waits, which pauses consumption
(backpressure) instead of buffering or spinning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from faust.types import EventT, StreamT, TableT

from stream_app.app import (
    INTAKE_HEADER,
    app,
    intents_topic,
    marketing_cloud,
    ready_topic,
    settings,
    suppressed,
    table,
)
from stream_app.ledger import FAILED, PENDING, SENT, Decision, Entry, decide, ledger_key
from stream_app.mc import AuthError, PermanentMCError, SendReceipt, SubscriberRow, TransientMCError
from stream_app.notifications import RECIPIENT_NAME, sms_text
from stream_app.outputs import headers_of, send_status, send_to_dlq
from stream_app.records import BatcherInput, SubscriberReady
from stream_app.retry import RetriesExhausted, RetryPolicy, call_with_retries
from stream_app.schemas import SchemaError, validate

log = logging.getLogger("stream_app.senders")

email_ledger = table("ledger-email", retained=True)
sms_ledger = table("ledger-sms", retained=True)

CHANNEL_TEMPLATES = {
    "email": {"packet-drawn-drawer", "packet-drawn-giver", "packet-redeemed-giver"},
    "sms": {"packet-drawn-welcome"},
}
# Subscriber-level refusals an upsert can cure: 13 key unknown or mismatched, 14 email mismatch.
RESYNC_CODES = {13, 14}
# MC's clock and ours differ a little; look this far before the pending mark for the send.
RECONCILE_SLACK = timedelta(seconds=30)


class BadReadyRecord(ValueError):
    """A subscriber.ready record that can never be sent as it is."""


def decode_ready(raw: bytes | None) -> SubscriberReady:
    if not raw:
        raise BadReadyRecord("empty value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadReadyRecord(f"not JSON: {exc}") from None
    try:
        clean = validate("subscriber.ready", data)
    except SchemaError as exc:
        raise BadReadyRecord(f"schema: {exc}") from None
    ready = SubscriberReady.from_data(clean)
    if ready.template not in CHANNEL_TEMPLATES[ready.channel]:
        raise BadReadyRecord(f"unknown {ready.channel} template {ready.template!r}")
    if ready.channel == "email" and not ready.email:
        raise BadReadyRecord("email notification without an address")
    if ready.channel == "sms" and not ready.mobile:
        raise BadReadyRecord("SMS notification without a mobile number")
    missing = {"EventId", RECIPIENT_NAME[ready.template]} - set(ready.attributes)
    if missing:
        raise BadReadyRecord(f"attributes missing: {', '.join(sorted(missing))}")
    return ready


_inflight: dict[str, asyncio.Lock] = {}


@asynccontextmanager
async def exclusive(key: str) -> AsyncIterator[None]:
    """Two copies of one notification in flight on this worker (concurrent slots) wait in turn."""
    lock = _inflight.setdefault(key, asyncio.Lock())
    async with lock:
        yield
    if not lock.locked():
        _inflight.pop(key, None)


async def call_mc(ready: SubscriberReady, attempt: int) -> SendReceipt:
    mc = marketing_cloud()
    try:
        if ready.channel == "email":
            assert ready.email is not None
            return await mc.rest.send_email(
                ready.template,
                to=ready.email,
                subscriber_key=ready.subscriber_key,
                from_name=ready.from_name,
                attributes=ready.attributes,
            )
        assert ready.mobile is not None
        return await mc.rest.send_sms(
            ready.template,
            mobile_e164=ready.mobile,
            text=sms_text(ready.attributes),
            subscriber_key=ready.subscriber_key,
        )
    except AuthError as exc:  # credentials refused: wait for ops rather than fail every message
        raise TransientMCError(str(exc)) from exc


async def resync_subscriber(ready: SubscriberReady) -> None:
    assert ready.email is not None
    (result,) = await marketing_cloud().soap.upsert_subscribers(
        [SubscriberRow(ready.subscriber_key, ready.email)]
    )
    if not result.ok:
        raise PermanentMCError(f"subscriber upsert refused: {result.message}", result.code)
    log.info("subscriber re-synced with MC", extra={"notification_id": ready.notification_id})
    await intents_topic.send(
        key=ready.subscriber_key.encode(),
        value=BatcherInput(
            kind="confirmed", subscriber_key=ready.subscriber_key, email=ready.email, mobile=ready.mobile
        ),
        force=True,
    )


async def mark_pending(ledger: TableT, key: str, partition: int) -> None:
    """Write `pending` to the ledger's changelog and wait until Kafka has it: it is the evidence
    a crash during the MC call leaves. Only this record is awaited, not the whole producer buffer
    (a flush would make every send wait for all the traffic buffered before it)."""
    value = Entry(PENDING, time.time()).dumps()
    delivered = await ledger.changelog_topic.send(key=key, value=value, partition=partition, force=True)
    await delivered
    # The same row in the local store only: `data` is the table's store, written without a second
    # changelog record (Table.__setitem__ would send this one again).
    ledger.data[key] = value


async def reconcile(ready: SubscriberReady, entry: Entry) -> bool:
    """Did MC record this send although our worker died before writing `sent`?"""
    since = datetime.fromtimestamp(entry.at, UTC) - RECONCILE_SLACK
    records = await marketing_cloud().soap.sent_since(ready.subscriber_key, since, sms=ready.channel == "sms")
    if ready.channel == "sms":
        return bool(records)
    return any(r.definition_key in (None, ready.template) for r in records)


def upstream_steps(headers: dict[str, bytes]) -> dict[str, Any] | None:
    """The intake's steps that rode along with a fast-path record (see intake.py), for the trace."""
    raw = headers.get(INTAKE_HEADER)
    if not raw:
        return None
    try:
        return {"intake": orjson.loads(raw)}
    except orjson.JSONDecodeError:
        return None


async def deliver(event: EventT, ready: SubscriberReady, ledger: TableT) -> None:
    headers = headers_of(event)
    resend = headers.get("resend", b"").strip() == b"1"
    upstream = upstream_steps(headers)
    key = ledger_key(
        ready.notification_id, (event.message.partition, event.message.offset) if resend else None
    )
    async with exclusive(key):
        entry = Entry.loads(ledger.get(key))
        decision = decide(entry)
        if decision is Decision.DUPLICATE:
            assert entry is not None
            await send_status(
                ready,
                "duplicate",
                reason="already sent",
                mc_request_id=entry.mc_request_id,
                upstream=upstream,
            )
            return
        if decision is Decision.RECONCILE:
            assert entry is not None
            if await reconcile(ready, entry):
                ledger[key] = Entry(SENT, time.time(), entry.attempts, reason="reconciled with MC").dumps()
                await send_status(
                    ready,
                    "sent",
                    reason="confirmed by MC after a restart",
                    attempts=entry.attempts,
                    upstream=upstream,
                )
                return
        if ready.channel == "email" and ready.email and ready.email.lower() in suppressed:
            await send_status(
                ready, "suppressed", reason="address on the suppression list (bounced)", upstream=upstream
            )
            return

        await mark_pending(ledger, key, event.message.partition)
        policy = RetryPolicy.from_settings(settings)

        resynced = False

        async def attempt(number: int) -> SendReceipt:
            nonlocal resynced
            try:
                return await call_mc(ready, number)
            except PermanentMCError as exc:
                # MC lost or changed the subscriber we imported: upsert it and try once more.
                if resynced or ready.channel != "email" or exc.subscriber_code not in RESYNC_CODES:
                    raise
                resynced = True
                await resync_subscriber(ready)
                return await call_mc(ready, number)

        async def on_retry(number: int, exc: TransientMCError, wait: float) -> None:
            log.warning(
                "MC send failed (%s), retry %d in %.1f s",
                exc,
                number,
                wait,
                extra={"notification_id": ready.notification_id, "event_id": ready.event_id},
            )

        try:
            receipt, attempts = await call_with_retries(attempt, policy, on_retry)
        except PermanentMCError as exc:
            ledger[key] = Entry(FAILED, time.time(), 1, reason=exc.reason).dumps()
            await send_status(
                ready, "failed", reason=f"MC refused: {exc.reason}", attempts=1, upstream=upstream
            )
            return
        except RetriesExhausted as exc:
            ledger[key] = Entry(FAILED, time.time(), exc.attempts, reason=str(exc)).dumps()
            await send_to_dlq(event, exc)
            await send_status(ready, "failed", reason=str(exc), attempts=exc.attempts, upstream=upstream)
            return
        ledger[key] = Entry(SENT, time.time(), attempts, mc_request_id=receipt.request_id).dumps()
        await send_status(
            ready, "sent", mc_request_id=receipt.request_id, attempts=attempts, upstream=upstream
        )


LEDGERS = {"email": email_ledger, "sms": sms_ledger}


# One agent for both channels: every subscriber.ready record is read once, not once per channel.
@app.agent(ready_topic, name="sender", concurrency=settings.send_concurrency)
async def sender(stream: StreamT) -> None:
    async for event in stream.events():
        try:
            ready = decode_ready(event.value)
        except BadReadyRecord as exc:
            await send_to_dlq(event, exc)
            continue
        try:
            await deliver(event, ready, LEDGERS[ready.channel])
        except Exception as exc:  # never lose the record: it waits in the DLQ for a replay
            log.exception("send failed", extra={"notification_id": ready.notification_id})
            await send_to_dlq(event, exc)
