"""What a triggered send checks and records, shared by the REST and SOAP routes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .context import Sandbox
from .sendlog import log_email
from .state import Message, TrackingEvent, is_bounce_address, iso, utcnow, valid_email
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


def check_recipient(sb: Sandbox, key: str | None, email: str | None) -> Refusal | None:
    """MC refuses a send unless a subscriber with this key AND this email exists and is sendable.

    Modelling choice: the TSDs run with AutoAddSubscribers/AutoUpdateSubscribers off, so an unknown
    key is refused (ErrorCodeID 13) and a key stored with another email is refused (ErrorCodeID 14)
    instead of being silently added or updated. Held subscribers are refused synchronously (ErrorCodeID
    2); real MC may instead accept and record a NotSent event. Unsubscribed subscribers are sent to,
    as with a transactional send classification.
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
        return Refusal(2, "Held", "Subscriber status is held.")
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
) -> Message:
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
    state.delivery_records[msg.id] = {
        "id": str(uuid.uuid4()),
        "messageId": msg.id,
        "definitionKey": definition.key,
        "status": "Sent",
        "deliveryTime": iso(msg.received_at),
        "to": {"address": email, "id": sub.id if sub else 0, "key": key},
    }
    send_id = state.next_send_id()
    state.events.append(
        TrackingEvent(
            kind="SentEvent",
            subscriber_key=key,
            event_date=msg.received_at,
            send_id=send_id,
            definition_key=definition.key,
            definition_object_id=definition.guid,
            message_id=msg.id,
        )
    )
    log_email(state, msg, definition, sub.id if sub else 0, send_id)
    if is_bounce_address(email):
        sb.ens.schedule_bounce(msg, definition)
    return msg


def record_refusal(sb: Sandbox, recipient_send_id: str, definition_key: str, reason: str) -> None:
    sb.state.bump("emails_refused")
    sb.state.delivery_records[recipient_send_id] = {
        "id": str(uuid.uuid4()),
        "messageId": recipient_send_id,
        "definitionKey": definition_key,
        "status": "Error",
        "deliveryTime": iso(utcnow()),
        "to": {"address": "", "id": 0, "key": ""},
        "messageErrors": [{"messageErrorStatus": reason}],
    }
