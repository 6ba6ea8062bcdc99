"""A classic triggered send's life, shared by the REST (rest.py) and SOAP (soap.py) routes.

1. Acceptance (the API call): ``check_recipient`` refuses synchronously what MC refuses in the API
   answer; ``accept_email`` queues the rest. A REST send's delivery record reads ``Queued``.
2. Send time, ``Config.send_log_delay`` seconds later: a subscriber Held or deleted meanwhile is not
   sent to (NotSentEvent, send log row with its ErrorCode, delivery record ``Error``); otherwise the
   message is sent (SentEvent, send log row, delivery record ``Sent``).
3. The address's fate, ``Config.bounce_delay`` after the send (outcomes.py): a BounceEvent or an
   UnsubEvent, and the subscriber status MC sets.

ENS hears of none of it (ens_events.py): MC reports classic sends through the tracking objects only.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from . import ens_events, tracking
from .context import Sandbox
from .outcomes import BOUNCES, Outcome, apply_to_subscriber, outcome_for
from .sendlog import log_email
from .state import Message, cst, utcnow, valid_email
from .templates import EmailDefinition, render

NO_VALID_SUBSCRIBERS = "Unable to queue Triggered Send request. There are no valid subscribers."


@dataclass(frozen=True)
class Refusal:
    """A subscriber-level refusal: ``code_id`` is MC's ErrorCodeID (§2.6 of the reference)."""

    code_id: int
    name: str
    text: str

    @property
    def description(self) -> str:
        return f"Error Code: {self.code_id} - {self.text}"


HELD = Refusal(2, "Held", "Subscriber status is held.")
DELETED = Refusal(40, "SubscriberDeleted", "The subscriber was deleted before the send.")


def check_recipient(sb: Sandbox, key: str | None, email: str | None) -> Refusal | None:
    """MC refuses a send unless a subscriber with this key AND this email exists and is sendable.

    Modelling choice: the TSDs run with AutoAddSubscribers/AutoUpdateSubscribers off, so an unknown
    key is refused (ErrorCodeID 13) and a key stored with another email is refused (ErrorCodeID 14)
    instead of being silently added or updated. Held subscribers are refused synchronously (ErrorCodeID
    2); one Held between acceptance and send time becomes a NotSent. Unsubscribed subscribers are sent
    to, as with a transactional send classification.
    """
    if not email:
        return Refusal(4, "MissingEmailAddress", "The subscriber has no email address.")
    if not valid_email(email):
        return Refusal(5, "InvalidEmailAddress", "The Email Address for this subscriber has invalid syntax.")
    if not key:
        return Refusal(8, "MissingSubscriberID", "Both subscriber key and subscriber ID are missing.")
    sub = sb.state.subscribers.get(key)
    if sub is None:
        return Refusal(
            13, "SubscriberKeyMismatch", f"SubscriberKeyNotFound: no subscriber with the key '{key}' exists."
        )
    if sub.email.lower() != email.lower():
        return Refusal(
            14,
            "EmailAddressMismatch",
            "The email address provided does not match the email address stored for this subscriber key.",
        )
    if sub.status == "Held":
        return HELD
    return None


def accept_email(
    sb: Sandbox,
    definition: EmailDefinition,
    key: str,
    email: str,
    from_name: str | None,
    attributes: dict[str, str],
    api: str,
    message_id: str | None = None,
    batch_id: int | None = None,
) -> Message:
    """Queue one message; ``batch_id`` groups the subscribers of one request (one new batch if None)."""
    state = sb.state
    sub = state.subscribers.get(key)
    merged = dict(sub.attributes) if sub else {}
    merged.update(attributes)
    msg = Message(
        id=message_id or str(uuid.uuid4()),
        channel="email",
        definition_key=definition.key,
        subscriber_key=key,
        to=email,
        from_name=from_name,
        attributes=dict(attributes),
        text=render(definition.text, merged),
        api=api,
    )
    state.messages.append(msg)
    state.bump("emails_accepted")
    if api == "rest":
        # Queued: the body has only these three fields until MC has sent the message (§3.1).
        state.delivery_records[msg.id] = {
            "id": str(uuid.uuid4()),
            "messageId": msg.id,
            "definitionKey": definition.key,
            "status": "Queued",
        }
    job = state.job_of(definition.key)
    batch = batch_id if batch_id is not None else state.next_batch(definition.key)
    state.later(state.config.send_log_delay, lambda: _send(sb, msg, definition, job, batch))
    return msg


def _send(sb: Sandbox, msg: Message, definition: EmailDefinition, job: int, batch: int) -> None:
    state = sb.state
    sub = state.subscribers.get(msg.subscriber_key)
    sub_id = sub.id if sub else 0
    msg.sent_at = utcnow()
    ids = (job, batch, sub_id)
    refusal = DELETED if sub is None else HELD if sub.status == "Held" else None
    if refusal is not None:
        msg.status = "not_sent"
        state.bump("not_sent")
        tracking.record(state, "NotSentEvent", msg, definition.guid, job, batch, "NotSent", msg.sent_at)
        log_email(state, msg, definition, sub_id, job, batch, error_code=refusal.code_id)
        _settle_record(sb, msg, "Error", refusal.text)
        info = ens_events.not_sent_info(msg, refusal.code_id, refusal.name, refusal.text)
        ens_events.emit(sb, ens_events.NOT_SENT, msg, definition.guid, ids, info)
        return
    msg.status = "sent"
    tracking.record(state, "SentEvent", msg, definition.guid, job, batch, "Sent", msg.sent_at)
    log_email(state, msg, definition, sub_id, job, batch)
    _settle_record(sb, msg, "Sent")
    info = ens_events.sent_info(msg, definition.subject)
    ens_events.emit(sb, ens_events.SENT, msg, definition.guid, ids, info)
    outcome = outcome_for(state.config, msg.to)
    if outcome is not Outcome.DELIVERED:
        state.later(state.config.bounce_delay, lambda: _fate(sb, msg, definition, ids, outcome))


def _fate(
    sb: Sandbox, msg: Message, definition: EmailDefinition, ids: tuple[int, int, int], outcome: Outcome
) -> None:
    state = sb.state
    job, batch, _sub_id = ids
    apply_to_subscriber(state, msg.subscriber_key, outcome)
    bounce = BOUNCES.get(outcome)
    if bounce is not None:
        msg.status = "bounced"
        kind, event_type = "BounceEvent", bounce.event_type
        tracking.record(state, kind, msg, definition.guid, job, batch, event_type, bounce=bounce)
        info = ens_events.bounced_info(msg, bounce)
        ens_events.emit(sb, ens_events.BOUNCED, msg, definition.guid, ids, info)
        return
    msg.status = "unsubscribed"
    tracking.record(state, "UnsubEvent", msg, definition.guid, job, batch, "Unsubscribe")
    info = ens_events.unsubscribed_info(msg, int(time.time() * 1000))
    ens_events.emit(sb, ens_events.UNSUBSCRIBED, msg, definition.guid, ids, info)


def _settle_record(sb: Sandbox, msg: Message, status: str, reason: str | None = None) -> None:
    """The REST delivery record at send time: ``Sent`` with the recipient, or ``Error`` with the reason."""
    record = sb.state.delivery_records.get(msg.id)
    if record is None:
        return  # SOAP sends have none: the route answers for REST recipientSendIds only
    sub = sb.state.subscribers.get(msg.subscriber_key)
    record["status"] = status
    record["deliveryTime"] = cst(msg.sent_at)
    if reason is None:
        record["to"] = {"address": msg.to, "id": sub.id if sub else 0, "key": msg.subscriber_key}
    else:
        record["to"] = {"address": "", "id": 0, "key": ""}
        record["messageErrors"] = [{"messageErrorStatus": reason}]


def record_refusal(sb: Sandbox, recipient_send_id: str, definition_key: str, reason: str) -> None:
    sb.state.bump("emails_refused")
    sb.state.delivery_records[recipient_send_id] = {
        "id": str(uuid.uuid4()),
        "messageId": recipient_send_id,
        "definitionKey": definition_key,
        "status": "Error",
        "deliveryTime": cst(utcnow()),
        "to": {"address": "", "id": 0, "key": ""},
        "messageErrors": [{"messageErrorStatus": reason}],
    }
