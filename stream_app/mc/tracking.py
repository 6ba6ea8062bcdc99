"""MC's tracking objects and send log rows as the feedback stage reads them (reference §2.7, §2.8).

Classic triggered sends report nothing through ENS (§7.1): MC records each message's fate in the SOAP
tracking objects `SentEvent`, `NotSentEvent`, `BounceEvent` and `UnsubEvent`, read with Retrieve,
2,500 rows a page. A tracking event names its message by MC's ids only: `SendID` (the JobID of the
definition's send), `BatchID` (one per request) and `SubscriberKey`. The send logging data extension
carries the same JobID/BatchID/SubscriberKey beside the send's own `NotificationId` attribute, so the
two join on those ids (`SendLogEntry.message`), as MC documents for one-to-one triggered sends.

EventDate is MC's server time, CST without a zone (`stream_app.mc.dates`).

MC gives a tracking event no id of its own: `TrackingEvent.identity` is the one the feedback stage
dedupes on (kind, MC's three ids, EventType and EventDate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stream_app.mc.dates import iso_utc as iso
from stream_app.mc.dates import mc_time

TRACKING_KINDS = ("SentEvent", "NotSentEvent", "BounceEvent", "UnsubEvent")
EVENT_FIELDS = (
    "SendID",
    "SubscriberKey",
    "EventDate",
    "EventType",
    "TriggeredSendDefinitionObjectID",
    "BatchID",
)
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "SentEvent": EVENT_FIELDS,
    "NotSentEvent": EVENT_FIELDS,  # no reason field in the WSDL: the send log's ErrorCode has it
    "BounceEvent": (*EVENT_FIELDS, "SMTPCode", "BounceCategory", "SMTPReason", "BounceType"),
    "UnsubEvent": (*EVENT_FIELDS, "IsMasterUnsubscribed"),
}
# The send log fields the join reads: the template's JobID, BatchID and ErrorCode, and the custom
# SubscriberKey, EmailAddress and NotificationId fields the account added (README, MC setup).
SEND_LOG_JOIN_FIELDS = ("JobID", "BatchID", "SubscriberKey", "EmailAddress", "NotificationId", "ErrorCode")

MessageIds = tuple[int, int, str]  # (JobID/SendID, BatchID, SubscriberKey): one message of a send


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class TrackingEvent:
    """One row of a tracking object."""

    kind: str  # SentEvent | NotSentEvent | BounceEvent | UnsubEvent
    send_id: int | None
    batch_id: int | None
    subscriber_key: str
    event_date: datetime
    event_type: str = ""
    definition_object_id: str = ""
    smtp_code: str | None = None
    bounce_category: str | None = None
    smtp_reason: str | None = None
    bounce_type: str | None = None

    @property
    def message(self) -> MessageIds | None:
        if self.send_id is None or self.batch_id is None:
            return None
        return (self.send_id, self.batch_id, self.subscriber_key)

    @property
    def identity(self) -> str:
        """What tells this event from every other of its kind and definition: 20 hex characters."""
        parts = (
            self.kind,
            str(self.send_id),
            str(self.batch_id),
            self.subscriber_key,
            self.event_type,
            iso(self.event_date),
        )
        return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()

    @classmethod
    def from_row(cls, kind: str, row: Any) -> TrackingEvent | None:
        """A Retrieve result (zeep object, or any object with the fields as attributes); None for a
        row without the EventDate the feedback stage's mark is made of."""
        date = mc_time(getattr(row, "EventDate", None))  # MC's CST when zone-less (mc/dates.py)
        if date is None:
            return None
        return cls(
            kind=kind,
            send_id=_int(getattr(row, "SendID", None)),
            batch_id=_int(getattr(row, "BatchID", None)),
            subscriber_key=_text(getattr(row, "SubscriberKey", None)) or "",
            event_date=date,
            event_type=_text(getattr(row, "EventType", None)) or "",
            definition_object_id=_text(getattr(row, "TriggeredSendDefinitionObjectID", None)) or "",
            smtp_code=_text(getattr(row, "SMTPCode", None)),
            bounce_category=_text(getattr(row, "BounceCategory", None)),
            smtp_reason=_text(getattr(row, "SMTPReason", None)),
            bounce_type=_text(getattr(row, "BounceType", None)),
        )


@dataclass(frozen=True)
class SendLogEntry:
    """A send log row with the ids a tracking event is joined on, and what the send carried."""

    job_id: int | None
    batch_id: int | None
    subscriber_key: str
    notification_id: str
    email: str | None
    error_code: str | None

    @property
    def message(self) -> MessageIds | None:
        if self.job_id is None or self.batch_id is None:
            return None
        return (self.job_id, self.batch_id, self.subscriber_key)

    @classmethod
    def from_values(cls, values: dict[str, str | None]) -> SendLogEntry:
        """From a DataExtensionObject's name -> value pairs (names lower-cased)."""
        error_code = (values.get("errorcode") or "").strip()
        return cls(
            job_id=_int(values.get("jobid")),
            batch_id=_int(values.get("batchid")),
            subscriber_key=(values.get("subscriberkey") or "").strip(),
            notification_id=(values.get("notificationid") or "").strip(),
            email=_text(values.get("emailaddress")),
            error_code=None if error_code in ("", "0") else error_code,
        )
