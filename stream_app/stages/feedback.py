"""MC's feedback after `sent`: bounces, not-sent, unsubscribes and SMS deliveries, read where MC keeps them.

MC's Event Notification Service reports Transactional Messaging sends only (reference §7.1): for the
classic triggered sends and MobileConnect sends this service makes, the truth is polled.

Email. Per send definition (every email template in every language, domain/templates.py) and per
tracking object (`SentEvent`, `NotSentEvent`, `BounceEvent`, `UnsubEvent`, §2.7), the stage reads the
events whose EventDate lies between its high-water mark and now minus FEEDBACK_LAG_SECONDS (MC writes
a row a while after its EventDate), page by page, and joins each to its notification through the
send log (§2.8): the event's SendID/BatchID/SubscriberKey are the JobID/BatchID/SubscriberKey of the
send log row, which carries the send's NotificationId (the ledger key). domain/feedback.py says what
each event means; a BounceEvent or UnsubEvent also goes to `email.bounced` for the suppression list
(domain/suppression.py). An event no send log row names (another system's send, send logging off)
is counted and skipped.

SMS. Each SMS MobileConnect accepted is watched (the sender puts its tokenId on `stream_app.feedback`)
and its delivery status (§4.2) read until it is final: `delivered` or `undeliverable`.

Once per fleet. The stage runs with the senders (the workers that talk to MC for sends) and polls
only on the worker that owns partition 0 of its one-partition topic `stream_app.feedback`: Faust's
assignor gives that partition, and with it the one partition of the stage's tables (same partition
count, same subscribers: one copartitioned group), to one worker; another takes it over when that
one stops or dies.

A restart neither skips nor repeats. The mark (a table row per definition and tracking object) is the
EventDate up to which every event was handled, with the events at exactly that date. A pass reads
[mark, now - lag]; each chunk of new events is written to the table, with the outcomes it owes,
*before* they are produced, and the chunk's outbox is emptied once Kafka has them. A worker that dies
mid-pass leaves its chunks: the next owner reads the same window again, skips every event a chunk
names, produces what a chunk still owes, and only at the pass's end moves the mark and drops the
chunks. MC's page order is not relied on. A worker killed between producing a chunk's outcomes and
emptying its outbox produces them again (at least once, as every Kafka output here): the suppression
list and the soft-bounce counts take each MC event once by its identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TP, StreamT

from stream_app.contract.internal import UndecodableRecord, decode_record, encode_record
from stream_app.contract.records import EmailBounced, EnsReport, MessageWatch, SmsWatch, SubscriberReady
from stream_app.contract.topics import BOUNCED_TOPIC, FEEDBACK_TOPIC
from stream_app.domain import feedback as rules
from stream_app.domain.templates import TEMPLATES, localized
from stream_app.mc import MCError, PermanentMCError
from stream_app.mc.dates import from_epoch_ms, mc_time
from stream_app.mc.rest import sms_digits
from stream_app.mc.tracking import TRACKING_KINDS, MessageIds, SendLogEntry, TrackingEvent, iso
from stream_app.ops import metrics
from stream_app.runtime.health import is_store_error
from stream_app.runtime.outputs import Out, Outputs, now_rfc3339, outcome_detail, status, trace

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.feedback")

MARKS_TABLE = "feedback-marks"
SMS_TABLE = "feedback-sms"
ENS_TABLE = "feedback-ens"
# New events per chunk row of the marks table (with their outcomes: well under Kafka's 1 MB).
CHUNK_EVENTS = 100
# Batch ids per send log lookup (one IN filter).
JOIN_BATCHES = 500
# One pass reads at most this much of MC's time (a fleet back after a long stop catches up in steps).
PASS_SECONDS = 3600.0
# An SMS whose delivery is not final after this long is no longer followed (logged).
SMS_GIVE_UP_SECONDS = 3 * 86_400.0
SMS_MAX_BACKOFF_SECONDS = 900.0
SMS_CONCURRENCY = 8
# An ENS event no watch claimed is held this long (a watch normally trails its event by milliseconds;
# MC keeps a message's status 3 days, §3.2), then reported in the log and dropped.
ENS_HOLD_SECONDS = 3 * 86_400.0
# How often the ENS join's rows past their time are dropped.
ENS_SWEEP_SECONDS = 600.0


class Revoked(Exception):
    """The feedback partition went to another worker mid-poll: leave the rest to it."""


def sms_watch(ready: SubscriberReady, ledger_key: str, token_id: str) -> Out:
    """What the sender puts on `stream_app.feedback` once MobileConnect accepted an SMS."""
    watch = SmsWatch(
        token_id=token_id,
        message_id=localized(ready.template, ready.locale).definition_key,
        ledger_key=ledger_key,
        subscriber_key=ready.subscriber_key,
        locale=ready.locale,
        sent_at=time.time(),
        mobile_number=sms_digits(ready.mobile or "") or "",
    )
    return Out(FEEDBACK_TOPIC, watch_key(watch).encode(), encode_record(watch))


def watch_key(watch: SmsWatch) -> str:
    """A watch's key: its token and its number, as a batched send's numbers share one token."""
    return f"{watch.token_id}:{watch.mobile_number}" if watch.mobile_number else watch.token_id


def message_watch(ready: SubscriberReady, ledger_key: str, message_key: str, request_id: str) -> Out:
    """What the sender puts on `stream_app.feedback` once MC accepted a Transactional Messaging send:
    ENS names the message by its messageKey only (reference §7.2)."""
    watch = MessageWatch(
        message_key=message_key,
        ledger_key=ledger_key,
        channel=ready.channel,
        subscriber_key=ready.subscriber_key,
        definition_key=localized(ready.template, ready.locale).definition_key,
        request_id=request_id,
        locale=ready.locale,
        sent_at=time.time(),
    )
    return Out(FEEDBACK_TOPIC, message_key.encode(), encode_record(watch))


def ens_report(item: dict[str, Any]) -> Out:
    """One ENS event as the callback relays it onto `stream_app.feedback` (stages/suppression.py)."""
    info = item.get("info")
    info = info if isinstance(info, dict) else {}
    message_key = str(info.get("messageKey") or "") or None
    event = rules.EnsEvent.from_json(item)
    key = message_key or (event.composite if event else None) or str(info.get("to") or "")
    report = EnsReport(
        category=str(item.get("eventCategoryType")),
        event=orjson.dumps(item).decode(),
        message_key=message_key,
        received_at=now_rfc3339(),
    )
    return Out(FEEDBACK_TOPIC, key.encode(), encode_record(report))


FeedbackRecord = SmsWatch | MessageWatch | EnsReport


def decode_feedback(raw: bytes | None) -> FeedbackRecord:
    """A record of `stream_app.feedback`, whichever of its three kinds (its fields say which)."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise UndecodableRecord(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UndecodableRecord("not a JSON object")
    if "token_id" in data:
        return decode_record(SmsWatch, raw, FEEDBACK_TOPIC)
    if "category" in data:
        return decode_record(EnsReport, raw, FEEDBACK_TOPIC)
    return decode_record(MessageWatch, raw, FEEDBACK_TOPIC)


def email_definitions() -> list[tuple[str, str]]:
    """(MC definition key, locale) of every email template in every language."""
    from stream_app.stages.senders import CHANNEL_TEMPLATES  # the senders' list; they import this module

    return sorted(
        (found.definition_key, locale)
        for (template, locale), found in TEMPLATES.items()
        if template in CHANNEL_TEMPLATES["email"]
    )


def _ms(moment: datetime) -> datetime:
    """Whole milliseconds: the mark is compared with MC's EventDates, which have no finer grain."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Feedback:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = runtime.app
        self.settings = runtime.settings
        self.out = Outputs(runtime.app)
        self.topic = runtime.app.topic(FEEDBACK_TOPIC, value_type=bytes, value_serializer="raw", partitions=1)
        # One partition each, written from outside the agent too: the partitioner's (it has one).
        self.marks = runtime.table(MARKS_TABLE, partitions=1, use_partitioner=True)
        self.watches = runtime.table(SMS_TABLE, partitions=1, use_partitioner=True)
        # Transactional Messaging: each send's watch and the ENS events joined to it (or held for it),
        # written by the agent only, on the one partition whatever partitioner wrote the record.
        self.ens_rows = runtime.table(ENS_TABLE, partitions=1, use_partitioner=True, retained=True)
        self.ens = rules.EnsJoin(self.ens_rows)
        self._ens_swept = time.monotonic()
        self.partition = TP(FEEDBACK_TOPIC, 0)
        self.owner = False
        self.generation = 0  # bumped on every revocation: a poll of an older one stops
        self._object_ids: dict[str, str] = {}
        self._sms_next: dict[str, float] = {}  # token -> when to ask MC again (this owner's memory)

    # ------------------------------------------------------------------------------------ ownership

    async def on_revoked(self, sender: Any, revoked: Any = (), **kwargs: Any) -> None:
        if self.partition in set(revoked or ()):
            self.owner = False
            self.generation += 1

    async def on_rebalanced(self, sender: Any, **kwargs: Any) -> None:
        """After the rebalance and the tables' recovery: this worker polls if it got partition 0."""
        owner = self.partition in self.app.consumer.assignment()
        if owner and not self.owner:
            log.info("this worker follows MC's feedback (stream_app.feedback partition 0)")
            self._sms_next.clear()
        self.owner = owner

    def check(self, generation: int) -> None:
        if not self.owner or generation != self.generation:
            raise Revoked()

    async def put(self, key: str, value: bytes | None) -> None:
        """A row of the marks or chunks written and acknowledged by Kafka before anything follows."""
        delivered = await self.marks.changelog_topic.send(key=key, value=value, partition=0, force=True)
        await delivered
        if value is None:
            with contextlib.suppress(KeyError):
                del self.marks.data[key]
        else:
            self.marks.data[key] = value

    async def emit(self, outs: list[Out]) -> None:
        """Produce and wait until Kafka has every one."""
        producer = self.app.producer
        pending = [
            await producer.send(
                o.topic, key=o.key, value=o.value, partition=o.partition, timestamp=None, headers=o.headers
            )
            for o in outs
        ]
        await asyncio.gather(*pending)

    # ---------------------------------------------------------------------------------------- email

    async def poll(self) -> None:
        """One round: every definition's tracking objects, then the SMS deliveries due."""
        generation = self.generation
        until = _ms(datetime.now(UTC) - timedelta(seconds=self.settings.feedback_lag_seconds))
        # Transactional Messaging sends leave no tracking objects: ENS reports them (suppression.py).
        definitions = email_definitions() if self.settings.mc_email_api == "triggered" else []
        for definition_key, locale in definitions:
            object_id = await self.object_id(definition_key)
            if object_id is None:
                continue
            for kind in TRACKING_KINDS:
                self.check(generation)
                await self.follow(kind, definition_key, locale, object_id, until, generation)
        await self.poll_sms(generation)

    async def object_id(self, definition_key: str) -> str | None:
        found = self._object_ids.get(definition_key)
        if found is None:
            found = await self.runtime.marketing_cloud().soap.definition_object_id(definition_key)
            if found is None:
                log.warning(
                    "MC has no triggered send definition %s: its feedback is not read", definition_key
                )
                return None
            self._object_ids[definition_key] = found
        return found

    def pass_chunks(self, source: str) -> dict[str, dict[str, Any]]:
        prefix = f"chunk:{source}:"
        return {
            key: orjson.loads(raw)
            for key, raw in list(self.marks.data.items())
            if isinstance(key, str) and key.startswith(prefix) and raw is not None
        }

    async def follow(
        self, kind: str, definition_key: str, locale: str, object_id: str, until: datetime, generation: int
    ) -> None:
        """One pass over one tracking object of one definition (see the module's docstring)."""
        source = f"{kind}:{definition_key}"
        mark_key = f"mark:{source}"
        raw = self.marks.data.get(mark_key)
        if raw is None:
            # First poll of this fleet: what MC recorded before it is not this fleet's to report.
            await self.put(mark_key, orjson.dumps({"date": iso(until), "at_date": []}))
            return
        mark = orjson.loads(raw)
        since = mc_time(mark["date"])
        assert since is not None
        upper = min(until, _ms(since + timedelta(seconds=PASS_SECONDS)))
        if upper <= since:
            return
        chunks = self.pass_chunks(source)
        known: set[str] = set(mark.get("at_date") or [])
        for key, chunk in chunks.items():
            known.update(chunk.get("ids") or [])
            if chunk.get("outbox"):  # a worker died before Kafka had all of these
                self.check(generation)
                await self.deliver(key, chunk)
        at_upper: set[str] = set()
        soap = self.runtime.marketing_cloud().soap
        page_size = self.settings.feedback_page_size or None
        async for page in soap.tracking_pages(kind, object_id, since, upper, batch_size=page_size):
            self.check(generation)
            new, at_mark = rules.page_split(page, known, upper)
            at_upper.update(at_mark)
            if not new:
                continue
            logged = await self.join(new)
            for part in _chunks(new, CHUNK_EVENTS):
                outbox = [d for e in part if (d := self.outcome(e, logged, definition_key, locale))]
                key = f"chunk:{source}:{uuid.uuid4().hex}"
                chunk = {"ids": [e.identity for e in part], "outbox": outbox}
                self.check(generation)
                await self.put(key, orjson.dumps(chunk))
                known.update(chunk["ids"])
                chunks[key] = chunk
                await self.deliver(key, chunk)
        self.check(generation)
        await self.put(mark_key, orjson.dumps({"date": iso(upper), "at_date": sorted(at_upper)}))
        for key in chunks:
            await self.put(key, None)

    async def join(self, events: list[TrackingEvent]) -> dict[MessageIds, SendLogEntry]:
        """The send log rows of these events' messages, by (JobID, BatchID, SubscriberKey)."""
        batches: dict[int, set[int]] = {}
        for event in events:
            if event.send_id is not None and event.batch_id is not None:
                batches.setdefault(event.send_id, set()).add(event.batch_id)
        soap = self.runtime.marketing_cloud().soap
        found: dict[MessageIds, SendLogEntry] = {}
        for job, ids in batches.items():
            for group in _chunks(sorted(ids), JOIN_BATCHES):
                for row in await soap.send_log_entries(self.settings.mc_send_log_email, job, group):
                    if row.message is not None and row.notification_id:
                        found[row.message] = row
        return found

    def outcome(
        self,
        event: TrackingEvent,
        logged: dict[MessageIds, SendLogEntry],
        definition_key: str,
        locale: str,
    ) -> dict[str, Any] | None:
        """What one event owes, as the chunk keeps it (the records are built when produced)."""
        row = logged.get(event.message) if event.message is not None else None
        ref = rules.notification_of(row.notification_id) if row is not None else None
        if row is None or ref is None:
            metrics.feedback_event(event.kind, "unmatched")
            log.info(
                "%s not in MC's send log: not this service's send, or send logging is off",
                event.kind,
                extra={"definition": definition_key, "send_id": event.send_id, "batch_id": event.batch_id},
            )
            return None
        metrics.feedback_event(event.kind, "matched")
        found = rules.email_outcome(event, row)
        return {
            "key": ref.ledger_key,
            "channel": "email",
            "subscriber_key": event.subscriber_key,
            "locale": locale,
            "status": found.status,
            "reason": found.reason,
            "tracking": event.kind,
            "event_date": iso(event.event_date),
            "mc_event": event.identity,
            "definition": definition_key,
            "email": row.email,
            "bounce_kind": found.bounce_kind,
            "bounce_code": found.bounce_code,
        }

    async def deliver(self, key: str, chunk: dict[str, Any]) -> None:
        """A chunk's outcomes onto their topics; then its outbox is emptied."""
        outs = [out for owed in chunk.get("outbox") or [] for out in self.records(owed)]
        await self.emit(outs)
        await self.put(key, orjson.dumps({"ids": chunk.get("ids") or [], "outbox": []}))

    def records(self, owed: dict[str, Any]) -> list[Out]:
        ref = rules.notification_of(str(owed["key"]))
        if ref is None:
            return []
        fields = {
            "notification_id": ref.notification_id,
            "event_id": ref.event_id,
            "channel": owed.get("channel", "email"),
            "template": ref.template,
            "subscriber_key": owed.get("subscriber_key", ""),
            "locale": owed.get("locale"),
        }
        outs: list[Out] = []
        state = owed.get("status")
        if state:
            reason = str(owed.get("reason") or "")
            outs.append(status(fields, state, reason=reason))
            detail = outcome_detail(fields, state, reason=reason, mc_event=owed.get("tracking"))
            outs.append(trace(ref.event_id, "outcome", **detail, at_mc=owed.get("event_date")))
        else:
            outs.append(
                trace(
                    ref.event_id,
                    rules.SENT_BY_MC,
                    notification_id=ref.notification_id,
                    channel=fields["channel"],
                    at_mc=owed.get("event_date"),
                )
            )
        email = str(owed.get("email") or "").strip().lower()
        if owed.get("bounce_kind"):
            if not email:
                log.warning(
                    "a %s with no EmailAddress in MC's send log: not added to the suppression list",
                    owed["bounce_kind"],
                    extra={"notification_id": ref.notification_id},
                )
                return outs
            bounce = EmailBounced(
                email=email,
                kind=str(owed["bounce_kind"]),
                at=now_rfc3339(),
                subscriber_key=owed.get("subscriber_key"),
                bounce_code=owed.get("bounce_code"),
                reason=str(owed.get("reason") or ""),
                definition_key=owed.get("definition"),
                mc_event=owed.get("mc_event"),
                event_date=owed.get("event_date"),
                notification_id=ref.notification_id,
            )
            outs.append(Out(BOUNCED_TOPIC, email.encode(), encode_record(bounce)))
        return outs

    # ------------------------------------------------------------------------------------------ SMS

    async def record(self, raw: bytes | None) -> None:
        """One record of `stream_app.feedback`: an SMS to follow, a message to join, an ENS event."""
        found = decode_feedback(raw)
        if isinstance(found, SmsWatch):
            self.watches[watch_key(found)] = encode_record(found)
            return
        now = time.time()
        if isinstance(found, MessageWatch):
            joined = self.ens.watch(found.asdict(), now)
            outs = [o for j in joined for o in self.ens_outcome(j.event, j.watch, first=False)]
        else:
            outs = self.ens_event(found, now)
        for out in outs:
            await self.out.emit(out)
        if time.monotonic() - self._ens_swept > ENS_SWEEP_SECONDS:
            self.sweep_ens(now)

    def ens_event(self, report: EnsReport, now: float) -> list[Out]:
        try:
            item = orjson.loads(report.event)
        except orjson.JSONDecodeError as exc:
            raise UndecodableRecord(f"event: not JSON: {exc}") from None
        event = rules.EnsEvent.from_json(item)
        if event is None:
            raise UndecodableRecord("event: not an ENS event")
        new, joined = self.ens.event(event, item, now)
        if not new:
            metrics.feedback_event(event.name, "repeated")
            return [o for j in joined for o in self.ens_outcome(j.event, j.watch, first=False)]
        mine = next((j for j in joined if j.event.identity == event.identity), None)
        others = [j for j in joined if j is not mine]
        outs = self.ens_outcome(event, mine.watch if mine else None, first=True)
        return outs + [o for j in others for o in self.ens_outcome(j.event, j.watch, first=False)]

    def ens_outcome(self, event: rules.EnsEvent, watch: dict[str, Any] | None, *, first: bool) -> list[Out]:
        """What one ENS event owes: on its first delivery, the suppression list's record (which needs
        no watch: ENS names the address); once joined to its watch, the notification's status."""
        found = rules.ens_outcome(event)
        if found is None:
            return []
        at_mc = from_epoch_ms(event.timestamp_ms)
        event_date = iso(at_mc) if at_mc is not None else None
        ref = rules.notification_of(str(watch["ledger_key"])) if watch else None
        outs: list[Out] = []
        if first and found.bounce_kind:
            address = event.address
            if address:
                bounce = EmailBounced(
                    email=address,
                    kind=found.bounce_kind,
                    at=now_rfc3339(),
                    subscriber_key=event.info.get("subscriberKey") or (watch or {}).get("subscriber_key"),
                    bounce_code=found.bounce_code,
                    reason=found.reason,
                    definition_key=event.definition_key,
                    mc_event=f"ens:{event.identity}",
                    event_date=event_date,
                    notification_id=ref.notification_id if ref else None,
                )
                outs.append(Out(BOUNCED_TOPIC, address.encode(), encode_record(bounce)))
            else:
                log.warning("ENS %s with no address: not added to the suppression list", event.name)
        if watch is None or ref is None:
            if first:
                metrics.feedback_event(event.name, "held")
            return outs
        metrics.feedback_event(event.name, "matched")
        fields = {
            "notification_id": ref.notification_id,
            "event_id": ref.event_id,
            "channel": watch.get("channel") or "email",
            "template": ref.template,
            "subscriber_key": watch.get("subscriber_key") or "",
            "locale": watch.get("locale"),
        }
        request_id = str(watch.get("request_id") or "")
        if found.status is None:
            step = trace(
                ref.event_id,
                rules.SENT_BY_MC,
                notification_id=ref.notification_id,
                channel=fields["channel"],
                at_mc=event_date,
            )
            return [*outs, step]
        detail = outcome_detail(fields, found.status, reason=found.reason, mc_event=event.name)
        return [
            *outs,
            status(fields, found.status, reason=found.reason, mc_request_id=request_id),
            trace(ref.event_id, "outcome", **detail, at_mc=event_date),
        ]

    def sweep_ens(self, now: float) -> None:
        """Drop the join's rows past their time; an ENS event no watch ever claimed is logged."""
        self._ens_swept = time.monotonic()
        keep = self.settings.state_retention_days * 86_400.0
        for event in self.ens.expire(now, ENS_HOLD_SECONDS, keep):
            metrics.feedback_event(event.name, "unmatched")
            log.warning(
                "ENS %s for a message no send of this service announced: no status reported",
                event.name,
                extra={"message_key": event.message_key, "composite": event.composite},
            )

    async def poll_sms(self, generation: int) -> None:
        """The deliveries of every send with a watch due, one MC call per send (its tokenId): the
        numbers of a batched send share it, and each watch reads its own number's entries."""
        now = time.time()
        due: dict[tuple[str, str], list[tuple[str, SmsWatch]]] = {}
        for key, raw in list(self.watches.data.items()):
            if raw is not None and self._sms_next.get(str(key), 0.0) <= now:
                watch = decode_record(SmsWatch, raw)
                due.setdefault((watch.message_id, watch.token_id), []).append((str(key), watch))
        if not due:
            return
        gate = asyncio.Semaphore(SMS_CONCURRENCY)

        async def one(send: tuple[str, str], watches: list[tuple[str, SmsWatch]]) -> None:
            async with gate:
                self.check(generation)
                await self.follow_send(send, watches, now, generation)

        results = await asyncio.gather(*(one(send, w) for send, w in due.items()), return_exceptions=True)
        for result in results:
            if isinstance(result, Revoked):
                raise result
            if isinstance(result, MCError):
                log.warning("SMS delivery status not read (%s); asked again next round", result)
            elif isinstance(result, BaseException):
                log.error("SMS delivery status not handled", exc_info=result)

    async def drop_watch(self, token: str) -> None:
        self._sms_next.pop(token, None)
        delivered = await self.watches.changelog_topic.send(key=token, value=None, partition=0, force=True)
        await delivered
        with contextlib.suppress(KeyError):
            del self.watches.data[token]

    async def follow_send(
        self, send: tuple[str, str], watches: list[tuple[str, SmsWatch]], now: float, generation: int
    ) -> None:
        message_id, token_id = send
        try:
            payload = await self.runtime.marketing_cloud().rest.sms_deliveries(message_id, token_id)
        except PermanentMCError as exc:
            log.warning(
                "MC does not know this SMS send (%s): no longer followed", exc, extra={"token": token_id}
            )
            self.check(generation)
            for token, _ in watches:
                await self.drop_watch(token)
            return
        for token, watch in watches:
            await self.follow_sms(token, watch, payload, now, generation)

    async def follow_sms(
        self, token: str, watch: SmsWatch, payload: dict[str, Any], now: float, generation: int
    ) -> None:
        ref = rules.notification_of(watch.ledger_key)
        found = rules.sms_outcome(payload, watch.mobile_number)
        self.check(generation)
        if found is None or ref is None:
            age = now - watch.sent_at
            if ref is None or age > SMS_GIVE_UP_SECONDS:
                log.warning(
                    "no final SMS delivery status from MC: no longer followed", extra={"token": token}
                )
                await self.drop_watch(token)
                return
            # Asked again sooner while it is young: a held SMS (quiet hours) may wait for hours.
            wait = min(max(self.settings.feedback_interval_seconds, age / 4), SMS_MAX_BACKOFF_SECONDS)
            self._sms_next[token] = now + wait
            return
        fields = {
            "notification_id": ref.notification_id,
            "event_id": ref.event_id,
            "channel": watch.channel,
            "template": ref.template,
            "subscriber_key": watch.subscriber_key,
            "locale": watch.locale,
        }
        detail = outcome_detail(fields, found.status, reason=found.reason, mc_request_id=watch.token_id)
        await self.emit(
            [
                status(fields, found.status, reason=found.reason, mc_request_id=watch.token_id),
                trace(ref.event_id, "outcome", **detail),
            ]
        )
        await self.drop_watch(token)


def install(runtime: Runtime) -> None:
    feedback = Feedback(runtime)
    app = runtime.app
    app.on_partitions_revoked.connect(feedback.on_revoked)  # type: ignore[arg-type]
    app.on_rebalance_complete.connect(feedback.on_rebalanced)  # type: ignore[arg-type]

    @app.agent(feedback.topic, name="feedback")
    async def watches(stream: StreamT) -> None:
        async for event in stream.events():
            try:
                await feedback.record(event.value)
            except Exception as exc:  # stream_app.feedback.dlq keeps the watch with the reason
                if is_store_error(exc):  # not the record's fault: stop, unacked (runtime/health.py)
                    await runtime.health.halt("feedback", exc)
                log.exception("could not record a watch or an ENS event")
                await feedback.out.dead_letter(event, exc)

    interval = runtime.settings.feedback_interval_seconds
    if interval <= 0:
        return

    @app.timer(interval, name="stream_app.feedback.poll")
    async def poll() -> None:
        if not feedback.owner:
            return
        try:
            await feedback.poll()
        except Revoked:
            log.info("feedback partition revoked mid-poll; its next owner goes on")
        except MCError as exc:
            log.warning("MC's feedback not read this round (%s); read again next round", exc)
        except Exception as exc:
            if is_store_error(exc):
                await runtime.health.halt("feedback", exc)
            log.exception("MC's feedback not read this round")
