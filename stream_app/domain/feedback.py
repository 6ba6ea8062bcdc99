"""What MC's feedback means for a notification: the outcomes after `sent` (pure functions).

Email (classic triggered sends): MC's tracking objects, joined to the notification through the send
log (`stream_app.mc.tracking`):

- `BounceEvent` -> `bounced`, the reason saying hard or soft with MC's SMTP code and text. A hard
  bounce suppresses the address; a soft (or other) bounce counts towards MC's own rule (3 over 15+
  days, domain/suppression.py) and does not suppress alone.
- `UnsubEvent` -> `unsubscribed`, and the address is suppressed.
- `NotSentEvent` -> `not_sent`: MC did not send it after all. The event has no reason field (WSDL);
  the send log row's ErrorCode, when MC wrote one, is quoted.
- `SentEvent` -> no new status (the notification is `sent` already): a `sent-by-mc` step for the
  event view, with the time MC really sent it.

Transactional Messaging (MC_EMAIL_API / MC_SMS_API = transactional): ENS's events (reference §7.2),
joined to the notification through the watch its send left (`EnsJoin`), mean what `ens_outcome` says:
the same statuses as the classic path's, hard/soft by ENS's bounceCode.

SMS (MobileConnect): the delivery status of the send's tokenId (reference §4.2): the final state is
the tracking entry with the highest standardStatusCode. 4000 (handset) and 2000 with the send
Finished (the aggregator: final for shared codes) -> `delivered`; 2500-2999 and 4500+ ->
`undeliverable`; a Finished send whose number has no tracking (MC counts only subscribed numbers)
-> `undeliverable`; anything else is not final yet.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from stream_app.mc.tracking import SendLogEntry, TrackingEvent

# The statuses MC's feedback adds after `sent` (schemas/notification.status.avsc).
BOUNCED, NOT_SENT, UNSUBSCRIBED = "bounced", "not_sent", "unsubscribed"
DELIVERED, UNDELIVERABLE = "delivered", "undeliverable"
FEEDBACK_STATUSES = frozenset({BOUNCED, NOT_SENT, UNSUBSCRIBED, DELIVERED, UNDELIVERABLE})
# The trace step of a SentEvent: MC really sent it (not a status: the notification is `sent`).
SENT_BY_MC = "sent-by-mc"

# email.bounced kinds the tracking objects produce (ENS's are EmailBounced / EmailUnsubscribe).
HARD_BOUNCE, SOFT_BOUNCE, OTHER_BOUNCE, UNSUBSCRIBE = "HardBounce", "SoftBounce", "OtherBounce", "Unsubscribe"


@dataclass(frozen=True)
class NotificationRef:
    """The notification a send carried as its NotificationId (the ledger key)."""

    ledger_key: str
    notification_id: str
    event_id: str
    template: str


def notification_of(ledger_key: str) -> NotificationRef | None:
    """`<event_id>:<template>` (notifications.py), or a resend's `<that>#resend@<p>:<o>`."""
    notification_id = ledger_key.partition("#resend@")[0]
    event_id, sep, template = notification_id.rpartition(":")
    if not sep or not event_id or not template:
        return None
    return NotificationRef(ledger_key, notification_id, event_id, template)


@dataclass(frozen=True)
class EmailOutcome:
    """What one tracking event means: a status (None: a trace step only) and, for the suppression
    list, the email.bounced kind and bounce code (None: the list is not concerned)."""

    status: str | None
    reason: str
    bounce_kind: str | None = None
    bounce_code: str | None = None


def bounce_kind(event: TrackingEvent) -> str:
    """Hard, soft or other, by EventType, else by BounceCategory (whose values the reference could
    not verify: "Hard bounce", "Soft bounce", "Technical/Other bounce", "Block bounce")."""
    if event.event_type in (HARD_BOUNCE, SOFT_BOUNCE, OTHER_BOUNCE):
        return event.event_type
    category = (event.bounce_category or "").lower()
    if category.startswith("hard"):
        return HARD_BOUNCE
    if category.startswith("soft"):
        return SOFT_BOUNCE
    return OTHER_BOUNCE


def email_outcome(event: TrackingEvent, logged: SendLogEntry) -> EmailOutcome:
    if event.kind == "BounceEvent":
        kind = bounce_kind(event)
        word = {HARD_BOUNCE: "hard", SOFT_BOUNCE: "soft"}.get(kind, "other")
        detail = event.smtp_reason or event.bounce_category or ""
        code = f"SMTP {event.smtp_code}" if event.smtp_code else "no SMTP code"
        reason = f"{word} bounce ({code}): {detail}".rstrip(": ")
        return EmailOutcome(BOUNCED, reason, kind, word.upper())
    if event.kind == "UnsubEvent":
        return EmailOutcome(UNSUBSCRIBED, "the recipient unsubscribed (MC UnsubEvent)", UNSUBSCRIBE)
    if event.kind == "NotSentEvent":
        why = f"send log ErrorCode {logged.error_code}" if logged.error_code else "MC gives no reason"
        return EmailOutcome(NOT_SENT, f"MC did not send it (NotSentEvent; {why})")
    return EmailOutcome(None, "MC sent it (SentEvent)")


def page_split(
    page: list[TrackingEvent], known: set[str], upper: datetime
) -> tuple[list[TrackingEvent], set[str]]:
    """A page of a pass over [mark, upper]: its events not handled yet, and the identities of those
    at exactly `upper`, which the next pass (MC's `between` includes both ends) reads again and must
    know. Both compare MC's EventDate with the mark: read in the wrong zone (MC writes CST without a
    suffix, mc/dates.py) an event at `upper` would not be known and be reported twice."""
    return [e for e in page if e.identity not in known], {e.identity for e in page if e.event_date == upper}


# --------------------------------------------------------------------------------------------- SMS


@dataclass(frozen=True)
class SmsOutcome:
    status: str
    reason: str


def _code(entry: dict[str, Any]) -> int:
    try:
        return int(str(entry.get("standardStatusCode", "")).strip())
    except ValueError:
        return 0


def sms_outcome(payload: Any, number: str = "") -> SmsOutcome | None:
    """The final outcome for `number` of a MobileConnect send from its deliveries answer, or None
    while it is not final. The answer is the token's, whose request may have had many numbers: only
    `number`'s tracking entries speak for it (all of them when `number` is "", a one-number send)."""
    if not isinstance(payload, dict):
        return None
    status = str(payload.get("status") or "")
    tracking = [
        t
        for t in payload.get("tracking") or []
        if isinstance(t, dict) and (not number or str(t.get("mobileNumber") or "") == number)
    ]
    if status == "Error":
        return SmsOutcome(UNDELIVERABLE, "MobileConnect reports the send as Error")
    if not tracking:
        if status == "Finished":
            return SmsOutcome(
                UNDELIVERABLE,
                "MC did not deliver it: the number is not subscribed to the keyword (or STOPped)",
            )
        return None
    final = max(tracking, key=_code)
    code = _code(final)
    text = str(final.get("description") or final.get("message") or "").strip()
    if code == 4000:
        return SmsOutcome(DELIVERED, f"{code} {text}".strip())
    if code >= 4500 or 2500 <= code < 3000:
        return SmsOutcome(UNDELIVERABLE, f"{code} {text}".strip())
    if code == 2000 and status == "Finished":
        return SmsOutcome(DELIVERED, f"{code} {text} (final for shared codes)".strip())
    return None


# ------------------------------------------------------------------- Transactional Messaging (ENS)
#
# MC reports Transactional Messaging sends through ENS only (reference §7.1), by `info.messageKey`
# (§7.2): never our attributes, and the messageKey is a one-way hash of the ledger key. So each send
# MC accepted leaves a watch (messageKey -> the notification) and ENS's events are joined to it.

ENS_EMAIL_SENT = "TransactionalSendEvents.EmailSent"
ENS_EMAIL_NOT_SENT = "TransactionalSendEvents.EmailNotSent"
ENS_EMAIL_BOUNCED = "TransactionalSendEvents.EmailBounced"
ENS_EMAIL_UNSUBSCRIBE = "EngagementEvents.EmailUnsubscribe"
ENS_SMS_SENT = "TransactionalSendEvents.SmsSent"
ENS_SMS_NOT_SENT = "TransactionalSendEvents.SmsNotSent"
ENS_SMS_DELIVERED = "TransactionalSendEvents.SmsDelivered"
ENS_SMS_BOUNCED = "TransactionalSendEvents.SmsBounced"
# What the service subscribes to (stages/suppression.py): the events that say what became of a
# message after `sent`. Not SmsTransient (interim), nor opens and clicks (no outcome).
ENS_EVENTS = (
    ENS_EMAIL_SENT,
    ENS_EMAIL_NOT_SENT,
    ENS_EMAIL_BOUNCED,
    ENS_EMAIL_UNSUBSCRIBE,
    ENS_SMS_SENT,
    ENS_SMS_NOT_SENT,
    ENS_SMS_DELIVERED,
    ENS_SMS_BOUNCED,
)


@dataclass(frozen=True)
class EnsEvent:
    """One ENS event as MC posts it (§7.2), with what the join needs."""

    category: str  # eventCategoryType
    message_key: str | None  # info.messageKey; engagement events have none
    composite: str | None  # "jobId.batchId.subscriberId": how engagement events join their send
    timestamp_ms: int | None  # timestampUTC, epoch milliseconds (UTC)
    info: dict[str, Any]
    definition_key: str | None

    @property
    def name(self) -> str:
        return self.category.rsplit(".", 1)[-1]

    @property
    def identity(self) -> str:
        """ENS's delivery is at least once (§7.4), and every worker's callback gets each event: one
        event is (eventCategoryType, messageKey, timestampUTC), the composite standing in for the
        messageKey an engagement event lacks."""
        return f"{self.category}|{self.message_key or 'c:' + str(self.composite)}|{self.timestamp_ms}"

    @property
    def address(self) -> str:
        return str(self.info.get("to") or "").strip().lower()

    @classmethod
    def from_json(cls, item: Any) -> EnsEvent | None:
        """An element of ENS's batch; None for what is no event."""
        if not isinstance(item, dict) or not isinstance(item.get("eventCategoryType"), str):
            return None
        info, composite = item.get("info"), item.get("composite")
        info = info if isinstance(info, dict) else {}
        composite = composite if isinstance(composite, dict) else {}
        ids = [str(composite.get(k) or "").strip() for k in ("jobId", "batchId", "subscriberId")]
        try:
            timestamp: int | None = int(item["timestampUTC"])
        except (KeyError, TypeError, ValueError):
            timestamp = None
        key = str(info.get("messageKey") or "").strip()
        definition = item.get("definitionKey")
        return cls(
            category=item["eventCategoryType"],
            message_key=key or None,
            composite=".".join(ids) if all(ids) else None,
            timestamp_ms=timestamp,
            info=info,
            definition_key=str(definition) if definition and definition != "NA" else None,
        )


def _bounce_word(code: Any) -> tuple[str, str]:
    """ENS's bounceCode (HARD/SOFT, §7.2) as the tracking objects' kinds, so the suppression list
    applies one rule to both paths: anything else is an OtherBounce, counted like a soft one."""
    code = str(code or "").strip().upper()
    if code == "HARD":
        return HARD_BOUNCE, "hard"
    if code == "SOFT":
        return SOFT_BOUNCE, "soft"
    return OTHER_BOUNCE, "other"


def ens_outcome(event: EnsEvent) -> EmailOutcome | None:
    """What one ENS event means for its message (None: nothing, e.g. an event of no interest).

    - EmailSent -> no status (it is `sent` already): the `sent-by-mc` step, as a SentEvent.
    - EmailBounced -> `bounced`, hard/soft by `bounceCode`, quoting `smtpReason` and `bounceMessage`.
    - EmailNotSent -> `not_sent` with MC's `statusCode`/`statusMessage` (§2.6 codes) and `reason`.
    - EmailUnsubscribe -> `unsubscribed`; the address is suppressed.
    - SmsSent -> the `sent-by-mc` step only: its statusCode is an interim §4.2 code (3000 Enroute,
      3001 SentToCarrier), MC handed it on, nothing says the handset got it.
    - SmsDelivered -> `delivered` (§4.2's 4000, or 2000 for a shared code: MC's own final word).
    - SmsBounced -> `undeliverable`; SmsNotSent -> `undeliverable` too: `not_sent` is an email status
      (schemas/notification.status.avsc), and for SMS both mean the number will not get it.
    """
    info = event.info
    status_text = " ".join(str(info.get(k) or "").strip() for k in ("statusCode", "statusMessage")).strip()
    why = str(info.get("reason") or "").strip()
    match event.category:
        case "TransactionalSendEvents.EmailSent" | "TransactionalSendEvents.SmsSent":
            return EmailOutcome(None, f"MC sent it ({event.name} {status_text})".replace(" )", ")"))
        case "TransactionalSendEvents.EmailBounced":
            kind, word = _bounce_word(info.get("bounceCode"))
            smtp = str(info.get("smtpReason") or "").strip() or "no SMTP reason"
            detail = str(info.get("bounceMessage") or "").strip()
            reason = f"{word} bounce (ENS {smtp}): {detail}".rstrip(": ")
            return EmailOutcome(BOUNCED, reason, kind, word.upper())
        case "TransactionalSendEvents.EmailNotSent":
            said = "; ".join(p for p in (f"statusCode {status_text}" if status_text else "", why) if p)
            return EmailOutcome(NOT_SENT, f"MC did not send it (EmailNotSent; {said or 'no reason given'})")
        case "EngagementEvents.EmailUnsubscribe":
            how = str(info.get("unsubscribeMethod") or "").strip()
            return EmailOutcome(
                UNSUBSCRIBED,
                f"the recipient unsubscribed (MC EmailUnsubscribe{', ' + how if how else ''})",
                UNSUBSCRIBE,
            )
        case "TransactionalSendEvents.SmsDelivered":
            return EmailOutcome(DELIVERED, status_text or "MC reports it delivered (SmsDelivered)")
        case "TransactionalSendEvents.SmsBounced" | "TransactionalSendEvents.SmsNotSent":
            said = "; ".join(p for p in (status_text, why) if p)
            return EmailOutcome(
                UNDELIVERABLE, f"MC did not deliver it ({event.name}; {said or 'no reason given'})"
            )
    return None


@dataclass(frozen=True)
class Joined:
    """An ENS event and the watch of its message: a status (or step) for that notification."""

    watch: dict[str, Any]
    event: EnsEvent


def _load(raw: bytes | None) -> dict[str, Any] | None:
    return orjson.loads(raw) if raw else None


class EnsJoin:
    """ENS events joined to their message's watch, over a key -> bytes store (the stage's table).

    Rows: `m:<messageKey>` {"watch", "seen", "events", "since"}: the watch once it came, the events
    already joined (their identities) and those that came before it (held, in full); `c:<composite>`
    {"key", "events", "seen", "since"}: the messageKey an EmailSent/SmsSent gave that composite, and
    the engagement events (which carry no messageKey, §7.2) held until it is known. Nothing is lost
    for arriving first, and an event met again (ENS's retries, another worker's callback) is known.
    """

    def __init__(self, rows: MutableMapping[str, bytes]) -> None:
        self.rows = rows

    def _save(self, key: str, row: dict[str, Any]) -> None:
        self.rows[key] = orjson.dumps(row)

    def watch(self, watch: dict[str, Any], now: float) -> list[Joined]:
        """The watch of `watch["message_key"]`; the events that were waiting for it, joined."""
        key = f"m:{watch['message_key']}"
        row = _load(self.rows.get(key)) or {"watch": None, "seen": [], "events": [], "since": now}
        if row["watch"] is not None:
            return []  # the same send's watch again (a sender retried its output)
        row["watch"], row["since"] = watch, now
        held = [e for e in (EnsEvent.from_json(raw) for raw in row["events"]) if e is not None]
        row["seen"] = [*row["seen"], *(e.identity for e in held)]
        row["events"] = []
        self._save(key, row)
        return [Joined(watch, e) for e in held]

    def event(self, event: EnsEvent, raw: dict[str, Any], now: float) -> tuple[bool, list[Joined]]:
        """(whether this is the event's first delivery, what it joined: itself and, for a send
        event that names a composite, the engagement events that were waiting for it)."""
        joined: list[Joined] = []
        if event.message_key and event.composite:
            joined += self._link(event.composite, event.message_key, now)
        if event.message_key:
            new, mine = self._at(event.message_key, event, raw, now)
            return new, [*mine, *joined]
        if event.composite is None:
            return True, []  # nothing to join on, nor to know it again by
        ckey = f"c:{event.composite}"
        row = _load(self.rows.get(ckey)) or {"key": None, "events": [], "seen": [], "since": now}
        if row["key"]:
            return self._at(row["key"], event, raw, now)
        known = set(row["seen"]) | {e.identity for e in _events(row["events"])}
        if event.identity in known:
            return False, []
        row["events"] = [*row["events"], raw]
        self._save(ckey, row)
        return True, []

    def _link(self, composite: str, message_key: str, now: float) -> list[Joined]:
        ckey = f"c:{composite}"
        row = _load(self.rows.get(ckey)) or {"key": None, "events": [], "seen": [], "since": now}
        if row["key"] == message_key:
            return []
        row["key"], held, row["events"] = message_key, row["events"], []
        row["since"] = now
        self._save(ckey, row)
        joined: list[Joined] = []
        for raw in held:
            event = EnsEvent.from_json(raw)
            if event is not None:
                joined += self._at(message_key, event, raw, now)[1]
        return joined

    def _at(
        self, message_key: str, event: EnsEvent, raw: dict[str, Any], now: float
    ) -> tuple[bool, list[Joined]]:
        key = f"m:{message_key}"
        row = _load(self.rows.get(key)) or {"watch": None, "seen": [], "events": [], "since": now}
        if event.identity in set(row["seen"]) | {e.identity for e in _events(row["events"])}:
            return False, []
        if row["watch"] is None:
            row["events"] = [*row["events"], raw]
            self._save(key, row)
            return True, []
        row["seen"] = [*row["seen"], event.identity]
        self._save(key, row)
        return True, [Joined(row["watch"], event)]

    def expire(self, now: float, hold_seconds: float, keep_seconds: float) -> list[EnsEvent]:
        """Rows past their time dropped: watches (and composites) after `keep_seconds`, and events
        no watch claimed after `hold_seconds`, which are returned for the caller to report."""
        dropped: list[EnsEvent] = []
        for key, raw in list(self.rows.items()):
            row = _load(raw)
            if row is None:
                continue
            age = now - float(row.get("since") or 0.0)
            waiting = row.get("key") is None if key.startswith("c:") else row.get("watch") is None
            if waiting and row.get("events") and age > hold_seconds:
                dropped += _events(row["events"])
                del self.rows[key]
            elif age > (hold_seconds if waiting else keep_seconds):
                del self.rows[key]
        return dropped


def _events(raws: list[Any]) -> list[EnsEvent]:
    return [e for e in (EnsEvent.from_json(raw) for raw in raws) if e is not None]
