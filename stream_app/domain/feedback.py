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

SMS (MobileConnect): the delivery status of the send's tokenId (reference §4.2): the final state is
the tracking entry with the highest standardStatusCode. 4000 (handset) and 2000 with the send
Finished (the aggregator: final for shared codes) -> `delivered`; 2500-2999 and 4500+ ->
`undeliverable`; a Finished send whose number has no tracking (MC counts only subscribed numbers)
-> `undeliverable`; anything else is not final yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
