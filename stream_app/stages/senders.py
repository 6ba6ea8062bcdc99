"""Email and SMS senders: `subscriber.ready` in, one MC send per notification, outcome out.

Exactly once at MC, whatever partition a record arrives on: a record that is not on the partition
Kafka's default partitioner gives its notification id (a kcat replay, `-p N`, a wrong key) is first
forwarded there, unchanged, so every copy of a notification meets one ledger partition. The ledger
(a table, backed by its changelog) is consulted before and written after every send, and the
`pending` mark is flushed to Kafka before MC is called, so a worker killed mid-call leaves evidence;
the next owner settles it with MC's send log (ledger.py), never by a guess.

No offset passes an unfinished send: events are acked by hand once their outcome is final (Faust
acks an event whose actor was cancelled, so a stop would commit past a send in flight). A clean
stop takes no new record, lets the sends in hand finish within STOP_GRACE_SECONDS, and only then
lets Faust close the MC client; what did not finish stays uncommitted for the next owner.

Transient MC failures are retried with backoff inside one of `SEND_CONCURRENCY` slots: other
partitions keep flowing, and when MC is down every slot waits, which pauses consumption
(backpressure) instead of buffering or spinning.

With MC_SEND_BATCH > 1 the sends of records waiting together share MC calls (mc/batching.py: classic
emails by SOAP Create, Transactional Messaging by `recipients`, MobileConnect by `Subscribers`), a
lone record on an idle sender still going at once. Each record keeps its own ledger entry, `pending`
flushed before its call, and its own result from that call: sent, retried, refused or dead-lettered
for itself, never for its batch-mates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import EventT, StreamT, TableT

from stream_app.contract.internal import encode_record
from stream_app.contract.records import BatcherInput, SubscriberReady
from stream_app.contract.schemas import SchemaError, validate
from stream_app.contract.topics import (
    FORWARDED_HEADER,
    INTAKE_HEADER,
    READY_TOPIC,
    RESEND_HEADER,
    partition_for,
)
from stream_app.domain.ledger import (
    FAILED,
    PENDING,
    SENT,
    Decision,
    Entry,
    decide,
    ledger_key,
    message_key,
    sent_per_log,
    settle_at,
    stale,
)
from stream_app.domain.notifications import RECIPIENT_NAME, sms_text
from stream_app.domain.quiet_hours import hold_note
from stream_app.domain.retry import RetriesExhausted, RetryPolicy, call_with_retries
from stream_app.domain.subscribers import SUPPRESSED_REASON, is_suppressed
from stream_app.domain.templates import localized
from stream_app.mc import (
    AuthError,
    DuplicateMessageKeyError,
    PermanentMCError,
    SendReceipt,
    SubscriberRow,
    TransactionalStatus,
    TransientMCError,
    may_have_reached_mc,
)
from stream_app.mc.batching import MobileConnectSms, SmsGroup, TransactionalMessages, TriggeredEmails
from stream_app.mc.rest import SmsSubscriber, TransactionalRecipient
from stream_app.mc.soap import TriggeredEmail
from stream_app.ops import metrics
from stream_app.runtime.health import is_store_error
from stream_app.runtime.outputs import Outputs, headers_of
from stream_app.stages.feedback import message_watch, sms_watch

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.senders")

CHANNEL_TEMPLATES = {
    "email": {"packet-drawn-drawer", "packet-drawn-giver", "packet-redeemed-giver"},
    "sms": {"packet-drawn-welcome"},
}
# Subscriber-level refusals an upsert can cure: 13 key unknown or mismatched, 14 email mismatch.
RESYNC_CODES = {13, 14}
# The send attribute MC's send log records each send under (a field of the same name in the log).
NOTIFICATION_ATTRIBUTE = "NotificationId"
# Transactional Messaging has no per-message From.Name: the sender name ("X via EZTABLE") rides as
# this attribute, which the definition's sender profile reads (README, "The two email APIs").
FROM_NAME_ATTRIBUTE = "FromName"


def found_in_send_log(channel: str, after: str = "a restart") -> str:
    """The reason of a `sent` settled by MC's send log (by its NotificationId, which we supply, so
    the row exists even when MC's answer never came back). An SMS settled so is not followed to its
    delivery: deliveries are read by the send's tokenId (reference §4.2), which only MC's lost answer
    carried; MC documents no tokenId in the SMSSendLog (§2.8 names the template, not a TokenID
    field), and a match by number and time would be a guess."""
    reason = f"found in MC's send log after {after}"
    if channel == "sms":
        reason += "; its delivery is not followed (the tokenId was in MC's answer, which never came)"
    return reason


# The outcome `sent` of a notification whose messageKey MC already had (see send_transactional).
ALREADY_AT_MC = "already sent: MC refused its messageKey as a duplicate (109110) and has the message"


def not_sent_reason(found: TransactionalStatus) -> str:
    """Why MC did not send a message it accepted (its status NotSent)."""
    code = f"statusCode {found.status_code}" if found.status_code else ""
    detail = ", ".join(x for x in (found.status_message, code) if x)
    return f"MC did not send it (NotSent: {detail or 'no reason given'})"


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


def upstream_steps(headers: dict[str, bytes]) -> dict[str, Any] | None:
    """The intake's steps that rode along with a fast-path record (see intake.py), for the trace."""
    raw = headers.get(INTAKE_HEADER)
    if not raw:
        return None
    try:
        return {"intake": orjson.loads(raw)}
    except orjson.JSONDecodeError:
        return None


class Revoked(Exception):
    """The record's partition went to another worker mid-send, or the worker is stopping and its
    grace ran out: leave the record unacked to the partition's next owner."""


def first_produced_at(event: EventT, headers: dict[str, bytes]) -> tuple[int, int]:
    """Where a record was first produced: before a forward (FORWARDED_HEADER), or here."""
    origin = headers.get(FORWARDED_HEADER, b"").decode("ascii", "replace")
    partition, _, offset = origin.partition(":")
    if partition.isdigit() and offset.isdigit():
        return int(partition), int(offset)
    return event.message.partition, event.message.offset


class InHand:
    """The records the sender actors are working on: a clean stop waits for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def one(self) -> AsyncIterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drain(self, grace: float) -> int:
        """Take no new record; wait up to `grace` s for those in hand. Returns how many remain."""
        self.stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        return self.count


class Senders:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = runtime.app
        self.settings = runtime.settings
        self.intents = runtime.topics.intents
        self.suppressed = runtime.suppressed
        self.out = Outputs(runtime.app)
        self.ledgers: dict[str, Any] = {
            "email": runtime.table("ledger-email", retained=True),
            "sms": runtime.table("ledger-sms", retained=True),
        }
        self.in_hand = InHand()
        self._triggered_emails: TriggeredEmails | None = None
        self._transactional_messages: TransactionalMessages | None = None
        self._mobileconnect_sms: MobileConnectSms | None = None
        # SMS quiet hours, passed to MobileConnect with every SMS: MC holds what it gets inside them.
        self.quiet_hours = runtime.settings.quiet_hours
        self.blackout_window = self.quiet_hours.blackout_window() if self.quiet_hours else None
        # Per channel: through the Transactional Messaging API (MC_EMAIL_API, MC_SMS_API), else the
        # classic routes (triggered sends, MobileConnect).
        self.transactional = {
            "email": runtime.settings.mc_email_api == "transactional",
            "sms": runtime.settings.mc_sms_api == "transactional",
        }
        # Two copies of one notification in flight on this worker (concurrent slots) wait in turn.
        self._inflight: dict[str, asyncio.Lock] = {}
        # Ledger keys (per table) that may still be `pending` here: those this worker marked, and
        # those one full read of the ledgers found after the worker's assignment last changed (rows
        # it recovered). The sweep reads only these: a ledger keeps a row per notification for
        # STATE_RETENTION_DAYS.
        self._maybe_pending: dict[str, set[str]] = {}
        self._read_for: frozenset[Any] = frozenset()  # the assignment of the last full read
        self._swept: dict[str, float] = {}  # key -> when the sweep last re-queued its record

    async def finish_sends_in_flight(self) -> None:
        left = await self.in_hand.drain(self.settings.stop_grace_seconds)
        if left:
            log.warning("stopping with %d sends unfinished; their records stay uncommitted", left)

    async def consume(self, stream: StreamT) -> None:
        manual = stream.noack()  # type: ignore[attr-defined]  # on Stream, missing from StreamT
        async for event in manual.events():
            if self.in_hand.stopping:
                await asyncio.Event().wait()  # held unacked until the agent is cancelled: read again later
            try:
                async with self.in_hand.one():
                    await self.handle(event)
                    await manual.ack(event)
            except Revoked as exc:
                log.info(
                    "send not finished (partition revoked, or the worker stopping); left uncommitted to the "
                    "partition's next owner",
                    extra={"notification_id": str(exc)},
                )

    @asynccontextmanager
    async def exclusive(self, key: str) -> AsyncIterator[None]:
        """Two copies of one notification in flight on this worker (concurrent slots) wait in turn."""
        lock = self._inflight.setdefault(key, asyncio.Lock())
        async with lock:
            yield
        if not lock.locked():
            self._inflight.pop(key, None)

    def triggered_emails(self) -> TriggeredEmails:
        """Classic emails, many per SOAP Create while MC is busy (mc/batching.py); made on first use,
        as the MC client is."""
        if self._triggered_emails is None:
            self._triggered_emails = TriggeredEmails(
                self.runtime.marketing_cloud().soap,
                max_items=self.settings.mc_send_batch,
                max_calls=self.settings.mc_calls_in_flight,
            )
        return self._triggered_emails

    def transactional_messages(self) -> TransactionalMessages:
        """Transactional Messaging sends, many recipients of one definition per request while MC is
        busy (mc/batching.py)."""
        if self._transactional_messages is None:
            self._transactional_messages = TransactionalMessages(
                self.runtime.marketing_cloud().rest,
                max_items=self.settings.mc_send_batch,
                max_calls=self.settings.mc_calls_in_flight,
            )
        return self._transactional_messages

    def mobileconnect_sms(self) -> MobileConnectSms:
        """MobileConnect SMS, many `Subscribers` of one message per request while MC is busy."""
        if self._mobileconnect_sms is None:
            self._mobileconnect_sms = MobileConnectSms(
                self.runtime.marketing_cloud().rest,
                max_items=self.settings.mc_send_batch,
                max_calls=self.settings.mc_calls_in_flight,
            )
        return self._mobileconnect_sms

    async def call_mc(self, ready: SubscriberReady, key: str) -> SendReceipt:
        """One send; `key` (the ledger key) rides along as `NotificationId` for MC's send log."""
        mc = self.runtime.marketing_cloud()
        # The notification keeps its logical template; MC gets the definition in its language.
        definition_key = localized(ready.template, ready.locale).definition_key
        try:
            if self.transactional[ready.channel]:
                return await self.send_transactional(ready, key, definition_key)
            if ready.channel == "email":
                assert ready.email is not None
                attributes = {**ready.attributes, NOTIFICATION_ATTRIBUTE: key}
                if self.settings.mc_send_batch > 1:
                    email = TriggeredEmail(
                        definition_key,
                        ready.email,
                        ready.subscriber_key,
                        ready.from_name,
                        self.settings.mc_from_address,
                        attributes,
                    )
                    return await self.triggered_emails().send(email)
                return await mc.rest.send_email(
                    definition_key,
                    to=ready.email,
                    subscriber_key=ready.subscriber_key,
                    from_name=ready.from_name,
                    attributes=attributes,
                )
            assert ready.mobile is not None
            if self.settings.mc_send_batch > 1:
                # No override text: the message's stored text renders the attributes (README,
                # "Batched sends"), so each subscriber of a shared request gets its own words.
                group = SmsGroup(
                    definition_key,
                    self.settings.mc_sms_keyword or None,
                    tuple(sorted(self.blackout_window.items())) if self.blackout_window else None,
                )
                subscriber = SmsSubscriber(
                    ready.mobile, ready.subscriber_key, {**ready.attributes, NOTIFICATION_ATTRIBUTE: key}
                )
                return await self.mobileconnect_sms().send(group, subscriber)
            return await mc.rest.send_sms(
                definition_key,
                mobile_e164=ready.mobile,
                text=sms_text(ready.attributes, ready.locale),
                subscriber_key=ready.subscriber_key,
                attributes={NOTIFICATION_ATTRIBUTE: key},
                blackout_window=self.blackout_window,
                # The welcome SMS subscribes its number: MobileConnect delivers to subscribed ones only.
                subscribe_keyword=self.settings.mc_sms_keyword,
            )
        except AuthError as exc:  # credentials refused: wait for ops rather than fail every message
            raise TransientMCError(str(exc)) from exc

    async def send_transactional(self, ready: SubscriberReady, key: str, definition_key: str) -> SendReceipt:
        """One notification through Transactional Messaging, as the message `message_key(key)`. MC
        refusing that key as used (109110) means an earlier request of this very notification (a
        crashed worker's, a try that timed out) reached MC: its status says whether MC sent it."""
        rest = self.runtime.marketing_cloud().rest
        attributes = {**ready.attributes, NOTIFICATION_ATTRIBUTE: key}
        text: str | None = None
        if ready.channel == "email":
            assert ready.email is not None
            to = ready.email
            if ready.from_name:
                attributes[FROM_NAME_ATTRIBUTE] = ready.from_name
        else:
            assert ready.mobile is not None
            to, text = ready.mobile, sms_text(ready.attributes, ready.locale)  # as MobileConnect's
        mkey = message_key(key)
        try:
            if self.settings.mc_send_batch > 1:
                # Many recipients per request, no content override: the definition's stored text
                # renders each recipient's attributes (README, "Batched sends").
                recipient = TransactionalRecipient(mkey, ready.subscriber_key, to, attributes)
                return await self.transactional_messages().send(ready.channel, definition_key, recipient)
            return await rest.send_transactional(
                ready.channel,
                definition_key,
                mkey,
                to=to,
                contact_key=ready.subscriber_key,
                attributes=attributes,
                text=text,
            )
        except DuplicateMessageKeyError:
            found = await rest.transactional_status(ready.channel, mkey)
            if found is not None and not found.accepted:
                raise PermanentMCError(not_sent_reason(found), code=found.status_code or "NotSent") from None
            # Sent or queued; or (None) past the 3 days MC keeps a status, while the key's 72 h hold.
            request_id = found.request_id if found is not None else ""
            return SendReceipt(request_id=request_id, recipient_send_id=mkey, already_sent=True)

    async def status_at_mc(self, ready: SubscriberReady, key: str) -> TransactionalStatus | None:
        """MC's status of this notification's message (None: MC has no message with its key)."""
        rest = self.runtime.marketing_cloud().rest

        async def lookup(number: int) -> TransactionalStatus | None:
            return await rest.transactional_status(ready.channel, message_key(key))

        found, _ = await call_with_retries(
            lookup, RetryPolicy.from_settings(self.settings), pace=self.runtime.marketing_cloud().pacer.ready
        )
        return found

    async def resync_subscriber(self, ready: SubscriberReady) -> None:
        assert ready.email is not None
        (result,) = await self.runtime.marketing_cloud().soap.upsert_subscribers(
            [SubscriberRow(ready.subscriber_key, ready.email)]
        )
        if not result.ok:
            raise PermanentMCError(f"subscriber upsert refused: {result.message}", result.code)
        log.info("subscriber re-synced with MC", extra={"notification_id": ready.notification_id})
        await self.intents.send(
            key=ready.subscriber_key.encode(),
            value=encode_record(
                BatcherInput(
                    kind="confirmed",
                    subscriber_key=ready.subscriber_key,
                    email=ready.email,
                    mobile=ready.mobile,
                )
            ),
            force=True,
        )

    async def mark_pending(self, ledger: TableT, key: str, partition: int, record: bytes) -> None:
        """Write `pending` to the ledger's changelog and wait until Kafka has it: it is the evidence
        a crash during the MC call leaves. Only this record is awaited, not the whole producer buffer
        (a flush would make every send wait for all the traffic buffered before it)."""
        value = Entry(PENDING, time.time(), record=record.decode("utf-8", "replace")).dumps()
        delivered = await ledger.changelog_topic.send(key=key, value=value, partition=partition, force=True)
        await delivered
        # The same row in the local store only: `data` is the table's store, written without a second
        # changelog record (Table.__setitem__ would send this one again).
        ledger.data[key] = value
        self._maybe_pending.setdefault(ledger.name, set()).add(key)

    async def logged_by_mc(self, ready: SubscriberReady, key: str, entry: Entry) -> bool:
        """Did MC send this very notification, although the worker that asked died before writing
        `sent`? Asked of MC's send log once MC has had time to write it (ledger.settle_at)."""
        wait = (
            settle_at(entry, self.settings.mc_request_timeout_seconds, self.settings.send_log_lag_seconds)
            - time.time()
        )
        if wait > 0:
            await asyncio.sleep(wait)
        log_name = (
            self.settings.mc_send_log_email if ready.channel == "email" else self.settings.mc_send_log_sms
        )
        mc = self.runtime.marketing_cloud()

        async def read(number: int) -> list[str | None]:
            return [row.error_code for row in await mc.soap.send_log(log_name, key)]

        # A failed read is retried like a send: giving up here would dead-letter a send MC may
        # well have made (found by the chaos test once it failed SOAP calls too).
        codes, _ = await call_with_retries(
            read, RetryPolicy.from_settings(self.settings), pace=mc.pacer.ready
        )
        return sent_per_log(codes)

    async def deliver(self, event: EventT, ready: SubscriberReady, ledger: TableT) -> None:
        headers = headers_of(event)
        resend = headers.get(RESEND_HEADER, b"").strip() == b"1"
        upstream = upstream_steps(headers)
        key = ledger_key(ready.notification_id, first_produced_at(event, headers) if resend else None)
        async with self.exclusive(key):
            entry = Entry.loads(ledger.get(key))
            decision = decide(entry)
            if decision is Decision.DUPLICATE:
                assert entry is not None
                await self.out.status(
                    ready,
                    "duplicate",
                    reason="already sent",
                    mc_request_id=entry.mc_request_id,
                    upstream=upstream,
                )
                return
            if decision is Decision.RECONCILE and self.transactional[ready.channel]:
                # By the message's status at MC, at once: had the crashed worker's request reached
                # MC after this lookup, the send below would be refused as a duplicate key (109110).
                assert entry is not None
                found = await self.status_at_mc(ready, key)
                if found is not None:
                    state, reason = (SENT, "") if found.accepted else (FAILED, not_sent_reason(found))
                    if found.accepted:  # ENS names the message by its messageKey: join it here too
                        await self.out.emit(message_watch(ready, key, message_key(key), found.request_id))
                    ledger[key] = Entry(
                        state,
                        time.time(),
                        entry.attempts,
                        mc_request_id=found.request_id,
                        reason=reason,
                        recipient_send_id=message_key(key),
                    ).dumps()
                    await self.out.status(
                        ready,
                        "sent" if found.accepted else "failed",
                        reason=reason or f"MC's status of the message after a restart: {found.state}",
                        mc_request_id=found.request_id,
                        attempts=entry.attempts,
                        upstream=upstream,
                    )
                    return
            elif decision is Decision.RECONCILE:
                assert entry is not None
                if await self.logged_by_mc(ready, key, entry):
                    found_reason = found_in_send_log(ready.channel)
                    ledger[key] = Entry(SENT, time.time(), entry.attempts, reason=found_reason).dumps()
                    await self.out.status(
                        ready, "sent", reason=found_reason, attempts=entry.attempts, upstream=upstream
                    )
                    return
            if is_suppressed(ready, self.suppressed):
                await self.out.status(ready, "suppressed", reason=SUPPRESSED_REASON, upstream=upstream)
                return

            # While MC throttles or blocks this worker's calls nothing is marked: a worker killed
            # meanwhile leaves no pending send to settle.
            pacer = self.runtime.marketing_cloud().pacer
            if await pacer.ready() and event.message.tp not in self.app.consumer.assignment():
                raise Revoked(ready.notification_id)
            await self.mark_pending(ledger, key, event.message.partition, event.message.value or b"")
            policy = RetryPolicy.from_settings(self.settings)

            resynced = False
            calls = 0
            # When a classic call MC may have carried out went unanswered (a timeout, a dropped
            # connection, a 5xx): the send log decides before it is made again. Transactional
            # sends need no such look: MC refuses their messageKey a second time (109110).
            unanswered_at: float | None = None
            found_in_log = False

            async def attempt(number: int) -> SendReceipt:
                nonlocal resynced, calls, unanswered_at, found_in_log
                calls += 1
                if calls > 1 and event.message.tp not in self.app.consumer.assignment():
                    # Revoked while waiting to retry: the partition's new owner settles this send.
                    raise Revoked(ready.notification_id)
                if unanswered_at is not None:
                    # The failed call had its whole timeout already: MC's log lag is what is left.
                    since = Entry(PENDING, unanswered_at - self.settings.mc_request_timeout_seconds)
                    if await self.logged_by_mc(ready, key, since):
                        found_in_log = True
                        return SendReceipt(request_id="")
                    unanswered_at = None
                try:
                    return await self.call_mc(ready, key)
                except TransientMCError as exc:
                    if not self.transactional[ready.channel] and may_have_reached_mc(exc):
                        unanswered_at = time.time()
                    raise
                except PermanentMCError as exc:
                    # MC lost or changed the subscriber we imported: upsert it and try once more.
                    if resynced or ready.channel != "email" or exc.subscriber_code not in RESYNC_CODES:
                        raise
                    resynced = True
                    await self.resync_subscriber(ready)
                    return await self.call_mc(ready, key)

            async def on_retry(number: int, exc: TransientMCError, wait: float) -> None:
                log.warning(
                    "MC send failed (%s), retry %d in %.1f s",
                    exc,
                    number,
                    wait,
                    extra={"notification_id": ready.notification_id, "event_id": ready.event_id},
                )

            try:
                # MC's pace (429, rate faults, the 50200 block) is waited out, not counted as a try.
                receipt, attempts = await call_with_retries(attempt, policy, on_retry, pace=pacer.ready)
            except PermanentMCError as exc:
                ledger[key] = Entry(FAILED, time.time(), 1, reason=exc.reason).dumps()
                await self.out.status(
                    ready, "failed", reason=f"MC refused: {exc.reason}", attempts=1, upstream=upstream
                )
                return
            except RetriesExhausted as exc:
                ledger[key] = Entry(FAILED, time.time(), exc.attempts, reason=str(exc)).dumps()
                await self.out.dead_letter(event, exc)
                await self.out.status(
                    ready, "failed", reason=str(exc), attempts=exc.attempts, upstream=upstream
                )
                return
            if found_in_log:
                reason = found_in_send_log(ready.channel, "a call MC did not answer")
                ledger[key] = Entry(SENT, time.time(), attempts, reason=reason).dumps()
                await self.out.status(ready, "sent", reason=reason, attempts=attempts, upstream=upstream)
                return
            if ready.channel == "sms" and not self.transactional["sms"]:
                # MobileConnect's tokenId, whose delivery the feedback stage follows (stages/feedback.py).
                await self.out.emit(sms_watch(ready, key, receipt.request_id))
            elif self.transactional[ready.channel]:
                # ENS names the message by its messageKey only: the feedback stage joins it here.
                await self.out.emit(message_watch(ready, key, message_key(key), receipt.request_id))
            ledger[key] = Entry(
                SENT,
                time.time(),
                attempts,
                mc_request_id=receipt.request_id,
                recipient_send_id=receipt.recipient_send_id,
            ).dumps()
            await self.out.status(
                ready,
                "sent",
                reason=ALREADY_AT_MC if receipt.already_sent else self.held_reason(ready),
                mc_request_id=receipt.request_id,
                attempts=attempts,
                upstream=upstream,
            )

    def held_reason(self, ready: SubscriberReady) -> str:
        """Why MC has not sent an accepted SMS yet (quiet hours), for the status and the event view."""
        return hold_note(self.quiet_hours, datetime.now(UTC)) if ready.channel == "sms" else ""

    def home_partition(self, notification_id: str) -> int:
        """The partition of this notification's ledger entry: Kafka's default partitioner on its id."""
        partitions = self.app.consumer.topic_partitions(READY_TOPIC) or self.settings.topic_partitions
        return partition_for(notification_id.encode(), partitions)

    async def forward(self, event: EventT, ready: SubscriberReady, home: int) -> None:
        """Produce a misplaced record onto its home partition, value and headers unchanged (plus where
        it was first produced); the home partition's ledger then decides. Forwarded twice (a crash
        before the commit), the second copy is a `duplicate` there."""
        message = event.message
        headers = headers_of(event)
        if FORWARDED_HEADER not in headers:
            headers[FORWARDED_HEADER] = f"{message.partition}:{message.offset}".encode()
        await self.app.producer.send_and_wait(
            READY_TOPIC,
            key=ready.notification_id.encode(),
            value=message.value,
            partition=home,
            timestamp=None,
            headers=list(headers.items()),
        )
        metrics.RECORDS_FORWARDED.inc()
        await self.out.trace(
            ready.event_id,
            "forwarded",
            notification_id=ready.notification_id,
            partition=message.partition,
            offset=message.offset,
            to_partition=home,
        )

    async def handle(self, event: EventT) -> None:
        """One subscriber.ready record to its final outcome (or forwarded to its home partition)."""
        try:
            ready = decode_ready(event.value)
        except BadReadyRecord as exc:
            await self.out.dead_letter(event, exc)
            return
        home = self.home_partition(ready.notification_id)
        if event.message.partition != home:
            await self.forward(event, ready, home)
            return
        try:
            await self.deliver(event, ready, self.ledgers[ready.channel])
        except Revoked:
            raise
        except Exception as exc:  # never lose the record: it waits in the DLQ for a replay
            if self.in_hand.stopping:  # the stop's grace ran out mid-send: not the record's fault
                raise Revoked(ready.notification_id) from exc
            if is_store_error(exc):  # the ledger's store failed: stop here, unacked (runtime/health.py)
                await self.runtime.health.halt("senders", exc)
            log.exception("send failed", extra={"notification_id": ready.notification_id})
            await self.out.dead_letter(event, exc)

    async def sweep_pending(self) -> None:
        """Settle `pending` entries whose send is in flight nowhere here and whose record may never be
        read again (committed past by an older version, or its DLQ copy never replayed): their record,
        kept in the entry, goes back to its home partition, where the ledger settles it by MC's log."""
        now = time.time()
        assigned = frozenset(self.app.consumer.assignment())
        read_all, self._read_for = assigned != self._read_for, assigned
        for channel, ledger in self.ledgers.items():
            keys = self._maybe_pending.setdefault(ledger.name, set())
            if read_all:
                keys.update(key for key, raw in ledger.data.items() if orjson.loads(raw)["state"] == PENDING)
            found = 0
            for key in list(keys):
                entry = Entry.loads(ledger.data.get(key))
                if entry is None or entry.state != PENDING:
                    keys.discard(key)
                    self._swept.pop(key, None)
                    continue
                if not stale(entry, now, self.settings.pending_stale_seconds) or key in self._inflight:
                    continue
                found += 1
                if not entry.record or self._swept.get(key, 0.0) > now - self.settings.pending_stale_seconds:
                    continue
                self._swept[key] = now
                notification_id, resend, origin = key.partition("#resend@")
                headers = [(RESEND_HEADER, b"1"), (FORWARDED_HEADER, origin.encode())] if resend else []
                await self.app.producer.send_and_wait(
                    READY_TOPIC,
                    key=notification_id.encode(),
                    value=entry.record.encode(),
                    partition=self.home_partition(notification_id),
                    timestamp=None,
                    headers=headers,
                )
                log.warning("stale pending send re-queued to be settled", extra={"notification_id": key})
            metrics.stale_pending(channel, found)


def install(runtime: Runtime) -> None:
    senders = Senders(runtime)
    runtime.before_stop(senders.finish_sends_in_flight)
    settings = runtime.settings

    # One agent for both channels: every subscriber.ready record is read once, not once per channel.
    @runtime.app.agent(runtime.topics.ready, name="sender", concurrency=settings.send_concurrency)
    async def sender(stream: StreamT) -> None:
        await senders.consume(stream)

    @runtime.app.timer(min(60.0, settings.pending_stale_seconds), name="stream_app.senders.sweep")
    async def sweep_pending() -> None:
        await senders.sweep_pending()
