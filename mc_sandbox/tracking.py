"""MC's tracking objects (reference §2.7): where classic sends leave their traces, read by SOAP Retrieve.

Objects, with the WSDL's fields in its sequence order:

``SentEvent``, ``NotSentEvent``
    ``SendID``, ``SubscriberKey``, ``EventDate``, ``EventType``, ``TriggeredSendDefinitionObjectID``,
    ``BatchID`` (NotSentEvent has no reason field, as in the WSDL: the reason is in the send log's
    ``ErrorCode`` and the REST delivery record).
``BounceEvent``
    the same, then ``SMTPCode``, ``BounceCategory``, ``SMTPReason``, ``BounceType`` (outcomes.py).
``UnsubEvent``
    the same, then ``List`` (the All Subscribers list) and ``IsMasterUnsubscribed``.
``SMSMTEvent``
    MobileConnect messages delivered (``Subscriber.SubscriberKey``, ``MOCode``, ``EventDate``).

Written when MC writes them: SentEvent/NotSentEvent at send time (``--send-log-delay`` after the API
accepted the send), BounceEvent/UnsubEvent when the address's fate arrives (``Config.bounce_delay``
later). Only classic triggered sends (REST ``messageDefinitionSends``, SOAP ``TriggeredSend``) and
MobileConnect leave them; a Transactional Messaging API send reports through ENS instead.

Joining an event to its send, as MC documents it: ``SendID`` is the JobID of the definition's send
(one per definition, shared by all its messages) and ``BatchID`` tells its requests apart, so
(SendID, BatchID, SubscriberKey) names one message; the send log row (sendlog.py) carries the same
JobID/BatchID with the send's ``NotificationId``. MC puts no REST ``recipientSendId`` on a tracking
event, and neither does the sandbox: the delivery-record route answers for that id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .outcomes import Bounce
from .sendlog import LIST_ID
from .state import Message, State, TrackingEvent, utcnow

EVENT_FIELDS = (
    "SendID",
    "SubscriberKey",
    "EventDate",
    "EventType",
    "TriggeredSendDefinitionObjectID",
    "BatchID",
)
BOUNCE_FIELDS = (*EVENT_FIELDS, "SMTPCode", "BounceCategory", "SMTPReason", "BounceType")
UNSUB_FIELDS = (*EVENT_FIELDS, "List", "IsMasterUnsubscribed")
EMAIL_KINDS: dict[str, tuple[str, ...]] = {
    "SentEvent": EVENT_FIELDS,
    "NotSentEvent": EVENT_FIELDS,
    "BounceEvent": BOUNCE_FIELDS,
    "UnsubEvent": UNSUB_FIELDS,
}

Record = dict[str, Any]


def record(
    state: State,
    kind: str,
    msg: Message,
    definition_object_id: str,
    job: int,
    batch: int,
    event_type: str,
    when: datetime | None = None,
    bounce: Bounce | None = None,
) -> TrackingEvent:
    ev = TrackingEvent(
        kind=kind,
        subscriber_key=msg.subscriber_key,
        event_date=when or utcnow(),
        send_id=job,
        definition_key=msg.definition_key,
        definition_object_id=definition_object_id,
        message_id=msg.id,
        batch_id=batch,
        event_type=event_type,
    )
    if bounce is not None:
        ev.smtp_code, ev.bounce_category = bounce.smtp_code, bounce.category
        ev.smtp_reason, ev.bounce_type = bounce.smtp_reason, bounce.bounce_type
    if kind == "UnsubEvent":
        ev.is_master_unsubscribed = True
    state.events.append(ev)
    return ev


def rows(state: State, kind: str) -> list[Record]:
    """The Retrieve rows of one tracking object, oldest first."""
    return [
        {
            "SendID": e.send_id,
            "SubscriberKey": e.subscriber_key,
            "Subscriber.SubscriberKey": e.subscriber_key,
            "EventDate": e.event_date,
            "EventType": e.event_type,
            "TriggeredSendDefinitionObjectID": e.definition_object_id,
            "BatchID": e.batch_id,
            "SMTPCode": e.smtp_code,
            "BounceCategory": e.bounce_category,
            "SMTPReason": e.smtp_reason,
            "BounceType": e.bounce_type,
            "List": LIST_ID if kind == "UnsubEvent" else None,
            "IsMasterUnsubscribed": e.is_master_unsubscribed,
            "MOCode": e.definition_key,
            "Carrier": None,
        }
        for e in state.events
        if e.kind == kind
    ]
