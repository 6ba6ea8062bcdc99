"""The send ledger's decisions: whether a notification may go to MC now.

One entry per notification (or per deliberate resend), written `pending` *before* MC is called and
`sent`/`failed` after. A `pending` entry found later means a worker died while MC held the request:
the sender then asks MC what it recorded (SentEvent / SMSMTEvent) instead of guessing.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import orjson

PENDING, SENT, FAILED = "pending", "sent", "failed"


class Decision(enum.Enum):
    SEND = "send"
    DUPLICATE = "duplicate"
    RECONCILE = "reconcile"


@dataclass(frozen=True)
class Entry:
    state: str
    at: float
    attempts: int = 0
    mc_request_id: str = ""
    reason: str = ""

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | None) -> Entry | None:
        return None if raw is None else cls(**orjson.loads(raw))


def ledger_key(notification_id: str, resend_of: tuple[int, int] | None) -> str:
    """A deliberate resend (header `resend: 1`) is its own ledger entry, named by the record's
    partition and offset: the same resend record redelivered is still sent once."""
    if resend_of is None:
        return notification_id
    partition, offset = resend_of
    return f"{notification_id}#resend@{partition}:{offset}"


def decide(entry: Entry | None) -> Decision:
    if entry is None or entry.state == FAILED:
        return Decision.SEND  # a failed send replayed from the DLQ is tried again
    if entry.state == SENT:
        return Decision.DUPLICATE
    return Decision.RECONCILE
