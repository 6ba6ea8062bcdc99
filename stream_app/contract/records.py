"""The records of every topic, modelled once; each mirrors its schema in `schemas/`.

`include_metadata=False` keeps Faust's own `__faust` field out of the JSON, so the values on the
wire are exactly the contract of design.md and any producer or console tool can read them.
"""

from typing import Any, Optional

import faust


class Party(faust.Record, include_metadata=False):
    member_id: str
    name: str
    email: str | None = None
    mobile: str | None = None
    locale: str | None = None


class PacketDrawn(faust.Record, include_metadata=False):
    event_id: str
    occurred_at: str
    packet_id: str
    amount: int
    drawer: Party
    giver: Party
    cashback_amount: int = 100


class PacketRedeemed(faust.Record, include_metadata=False):
    event_id: str
    occurred_at: str
    packet_id: str
    spent_amount: int
    drawer: Party
    giver: Party
    cashback_amount: int = 100
    amount: int | None = None  # the packet's value: design.md §4 lets a producer leave it out


PacketEvent = PacketDrawn | PacketRedeemed


class SubscriberReady(faust.Record, include_metadata=False):
    notification_id: str
    event_id: str
    event_type: str
    channel: str
    template: str
    subscriber_key: str
    attributes: dict[str, str]
    email: str | None = None
    mobile: str | None = None
    from_name: str | None = None
    # The locale the message is written in (domain/templates.py); records from before it had none.
    locale: str | None = None


class NotificationStatus(faust.Record, include_metadata=False):
    notification_id: str
    event_id: str
    channel: str
    template: str
    subscriber_key: str
    status: str
    at: str
    reason: str = ""
    mc_request_id: str = ""
    attempts: int = 0


class EmailBounced(faust.Record, include_metadata=False):
    email: str
    kind: str
    at: str
    subscriber_key: str | None = None
    bounce_code: str | None = None
    reason: str = ""
    definition_key: str | None = None
    mc_event: str | None = None  # MC's identity of the event: a soft bounce is counted once
    event_date: str | None = None  # when MC recorded it
    notification_id: str | None = None


class SmsWatch(faust.Record, include_metadata=False):
    """stream_app.feedback: an SMS MobileConnect accepted, whose delivery the feedback stage follows."""

    token_id: str
    message_id: str  # the MobileConnect message (definition) the tokenId belongs to
    ledger_key: str  # the NotificationId the send carried
    subscriber_key: str
    channel: str = "sms"
    locale: str | None = None
    sent_at: float = 0.0
    # The number this watch follows among the token's (a batched send has many, §4.2); "" from a
    # watch written before sends were batched: the token's only number.
    mobile_number: str = ""


class BatcherInput(faust.Record, include_metadata=False):
    kind: str  # intent | confirmed | close
    ready: Optional[SubscriberReady] = None  # noqa: UP007 - Faust only revives Optional[Record]
    subscriber_key: str | None = None
    email: str | None = None
    mobile: str | None = None
    window_id: str | None = None
    received_at: float = 0.0
    # A close asked for with others in one sweep: the import watcher waits for the round's batches.
    close_round: str | None = None
    round_size: int = 0


class SubscriberBatch(faust.Record, include_metadata=False):
    window_id: str
    closed_at: float
    rows: list[SubscriberReady]
    close_round: str | None = None  # one file takes the `round_size` windows closed together
    round_size: int = 0


class TraceStep(faust.Record, include_metadata=False):
    event_id: str
    stage: str
    at: str
    detail: dict[str, Any]


class MessageWatch(faust.Record, include_metadata=False):
    """stream_app.feedback: a Transactional Messaging send MC accepted, whose ENS events (keyed by
    messageKey, a one-way hash of the ledger key) the feedback stage joins to its notification."""

    message_key: str
    ledger_key: str  # the NotificationId the send carried
    channel: str  # email | sms
    subscriber_key: str
    definition_key: str
    request_id: str = ""  # MC's requestId of the accepted send (the `sent` status's mc_request_id)
    locale: str | None = None
    sent_at: float = 0.0


class EnsReport(faust.Record, include_metadata=False):
    """stream_app.feedback: one ENS event, relayed by the worker whose callback MC posted it to."""

    category: str  # eventCategoryType
    event: str  # the event's JSON as MC posted it
    message_key: str | None = None
    received_at: str = ""
