"""The send ledger's decisions: whether a notification may go to MC now.

One entry per notification (or per deliberate resend), written `pending` *before* MC is called and
`sent`/`failed` after. A `pending` entry found later means a worker died while MC held the request:
the sender then looks for that very notification in MC's send log (every send carries the ledger key
as its `NotificationId` attribute) once MC has had time to log it, and sends again only if it is
not there. Never a match of person, template and time: a popular giver's emails look alike.

Entries are keyed and partitioned by the notification id, never by where a record arrived: a record
on another partition than its notification's is forwarded there first (senders.py), so one
partition's ledger sees every copy of a notification, whichever producer or partitioner sent it.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, fields

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
    # While `pending`: the subscriber.ready record, so that a send whose record will not be read
    # again (already committed past) can still be settled by the sweep.
    record: str = ""
    # Once `sent`: the per-message id MC answered with beside its request id (mc/rest.py SendReceipt:
    # a classic REST send's delivery record id, a transactional send's messageKey; none from a SOAP
    # Create or MobileConnect). For support and MC's per-message routes; never for settling a crash:
    # a crash before MC's answer leaves no such id, which is why the send log is keyed by our own id.
    recipient_send_id: str = ""

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes | None) -> Entry | None:
        """Rows of older versions load (fields added since have defaults), and so do rows of newer
        ones during a rolling deploy (fields this version does not know are left out)."""
        if raw is None:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in orjson.loads(raw).items() if k in known})


def ledger_key(notification_id: str, resend_of: tuple[int, int] | None) -> str:
    """A deliberate resend (header `resend: 1`) is its own ledger entry, named by the partition and
    offset the resend record was first produced at (before any forward): the same resend record
    redelivered or forwarded twice is still sent once."""
    if resend_of is None:
        return notification_id
    partition, offset = resend_of
    return f"{notification_id}#resend@{partition}:{offset}"


def message_key(key: str) -> str:
    """The Transactional Messaging `messageKey` of a ledger entry: the hex SHA-256 of its ledger key
    (64 characters; MC takes at most 100). MC refuses a key used in the prior 72 hours (109110), so
    every copy and every retry of one notification is one message at MC, while a deliberate resend,
    a ledger entry of its own, is a message of its own."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def decide(entry: Entry | None) -> Decision:
    if entry is None or entry.state == FAILED:
        return Decision.SEND  # a failed send replayed from the DLQ is tried again
    if entry.state == SENT:
        return Decision.DUPLICATE
    return Decision.RECONCILE


def settle_at(entry: Entry, request_timeout: float, log_lag: float) -> float:
    """When a `pending` entry can be judged by MC's send log: MC may still have held the request
    until the client's timeout, and logs the send only when it sends."""
    return entry.at + request_timeout + log_lag


def sent_per_log(error_codes: list[str | None]) -> bool:
    """MC's send log rows of one notification (their ErrorCode) prove a send when one has none: a
    row with an ErrorCode is a send MC attempted and stopped, and no row is no send."""
    return any(code is None for code in error_codes)


def stale(entry: Entry, now: float, after: float) -> bool:
    return entry.state == PENDING and now - entry.at >= after
