"""In-memory state of the sandbox.

Everything runs on one asyncio loop, and every read-modify-write below is synchronous (no ``await``
in between), so concurrent clients cannot interleave inside an update.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import clock


def utcnow() -> datetime:
    """The sandbox's time: the real one unless a test moved its clock (clock.py)."""
    return clock.now()


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 with a ``Z`` suffix; the inspection API and the SOAP dateTime fields use it."""
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# MC's REST dates (MobileConnect deliveries, Transactional Messaging statuses) are in Central Standard
# Time all year round: UTC-6, no daylight saving, written without a zone suffix.
CST = timezone(timedelta(hours=-6))


def cst(dt: datetime | None) -> str | None:
    """``2025-01-10T03:01:04.147``: MC's CST wall-clock time, with no zone, as its REST APIs write it."""
    if dt is None:
        return None
    return dt.astimezone(CST).replace(tzinfo=None).isoformat(timespec="milliseconds")


def mc_date_string(dt: datetime | None) -> str | None:
    """The ``M/D/YYYY h:mm:ss AM`` shape of ImportResultsSummary's string dates, in MC's server time
    (CST, UTC-6 all year) like every date MC writes without a zone."""
    if dt is None:
        return None
    dt = dt.astimezone(CST)
    hour = dt.hour % 12 or 12
    ampm = "AM" if dt.hour < 12 else "PM"
    return f"{dt.month}/{dt.day}/{dt.year} {hour}:{dt.minute:02d}:{dt.second:02d} {ampm}"


# MC's Email Studio rule: under 100 characters, no leading/trailing spaces, ASCII only, user@domain.tld.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
)


def valid_email(value: str | None) -> bool:
    if not value or len(value) >= 100 or value != value.strip() or not value.isascii():
        return False
    return _EMAIL_RE.match(value) is not None


@dataclass
class Config:
    http_port: int
    sftp_port: int
    import_delay: float = 1.0
    state_dir: Path = Path(".state/mc_sandbox")
    rate_limit: int = 0
    message_cap: int = 1_000_000
    token_ttl: float = 1200.0
    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"
    account_id: str = "100000001"
    sftp_user: str = "sandbox"
    sftp_password: str = "sandbox"
    # How long an import stays in Processing (per file, plus a little per row), so that a poller can
    # observe the New -> Processing -> Completed sequence.
    import_processing_seconds: float = 0.2
    # Seconds from a send to the bounce or unsubscribe its address's domain stands for (outcomes.py).
    bounce_delay: float = 0.2
    # Seconds from an accepted send to its send time: MC queues what its APIs accept, and only then
    # writes the send log row, the SentEvent/NotSentEvent and the final delivery record.
    send_log_delay: float = 1.0
    hard_bounce_domains: tuple[str, ...] = ("bounce.example",)
    soft_bounce_domains: tuple[str, ...] = ("soft.example",)
    unsub_domains: tuple[str, ...] = ("unsub.example",)
    # MC's call budget (call_budget.py): calls per sliding minute by API family (none = not limited),
    # and REST calls in flight at once (0 = no bound).
    calls_per_minute: dict[str, int] = field(default_factory=dict)
    max_concurrent_calls: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def sftp_root(self) -> Path:
        return self.state_dir / "sftp"


@dataclass
class Subscriber:
    subscriber_key: str
    email: str
    id: int
    mobile: str | None = None
    status: str = "Active"
    attributes: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    # When its emails bounced, hard or soft: MC's hold rule counts them (outcomes.held_by_bounces).
    bounce_dates: list[datetime] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "subscriber_key": self.subscriber_key,
            "email": self.email,
            "mobile": self.mobile,
            "status": self.status,
            "attributes": dict(self.attributes),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass
class Message:
    id: str
    channel: str  # "email" | "sms"
    definition_key: str
    subscriber_key: str
    to: str
    from_name: str | None
    attributes: dict[str, str]
    text: str
    received_at: datetime = field(default_factory=utcnow)
    api: str = "rest"  # rest | soap | sms | transactional | transactional-sms: which API accepted it
    # queued, then sent | not_sent (email) or delivered | not_delivered (sms); an email's fate after it
    # was sent may turn it into bounced or unsubscribed.
    status: str = "queued"
    sent_at: datetime | None = None
    # A MobileConnect blackout window holds it (status "scheduled") until then (blackout.py).
    scheduled_for: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "definition_key": self.definition_key,
            "subscriber_key": self.subscriber_key,
            "to": self.to,
            "from_name": self.from_name,
            "attributes": dict(self.attributes),
            "text": self.text,
            "received_at": iso(self.received_at),
            "api": self.api,
            "status": self.status,
            "sent_at": iso(self.sent_at),
            "scheduled_for": iso(self.scheduled_for),
        }


@dataclass
class ImportRowError:
    row: int
    subscriber_key: str
    email: str
    error_code: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "subscriber_key": self.subscriber_key,
            "email": self.email,
            "error_code": self.error_code,
            "message": self.message,
        }


@dataclass
class ImportJob:
    task_id: int
    definition_key: str
    file: str  # path inside the SFTP root, e.g. "/Import/subscribers_w1.csv" ("" when none matched)
    allow_errors: bool = True
    source: str = "filedrop"  # filedrop | perform
    status: str = "New"
    total_rows: int = 0
    succeeded: int = 0
    errors: list[ImportRowError] = field(default_factory=list)
    error_message: str | None = None
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queued_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "definition_key": self.definition_key,
            "file": self.file,
            "source": self.source,
            "status": self.status,
            "total_rows": self.total_rows,
            "succeeded": self.succeeded,
            "errors": [e.to_json() for e in self.errors],
            "error_message": self.error_message,
            "queued_at": iso(self.queued_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
        }


@dataclass
class ImportDefinition:
    customer_key: str
    name: str
    file_spec: str
    allow_errors: bool = True
    update_type: str = "AddAndUpdate"
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class TrackingEvent:
    """One row of MC's tracking objects (tracking.py), read through SOAP Retrieve."""

    kind: str  # SentEvent | NotSentEvent | BounceEvent | UnsubEvent | SMSMTEvent
    subscriber_key: str
    event_date: datetime
    send_id: int  # the JobID of the definition's send
    definition_key: str
    definition_object_id: str
    message_id: str  # the sandbox's own id of the message, never shown through SOAP
    batch_id: int = 1
    event_type: str = "Sent"  # the WSDL's EventType
    smtp_code: str | None = None
    bounce_category: str | None = None
    smtp_reason: str | None = None
    bounce_type: str | None = None
    is_master_unsubscribed: bool | None = None


@dataclass
class SmsSend:
    token_id: str
    message_id: str
    numbers: list[str]  # every number of the request, in its order
    text: str
    created_at: datetime = field(default_factory=utcnow)
    delivered: list[str] = field(default_factory=list)  # those subscribed to the keyword at send time
    sent_at: datetime | None = None


class State:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.subscribers: dict[str, Subscriber] = {}
        self.messages: deque[Message] = deque(maxlen=max(1, config.message_cap))
        self.delivery_records: dict[str, dict[str, Any]] = {}
        self.sms_sends: dict[str, SmsSend] = {}
        self.events: deque[TrackingEvent] = deque(maxlen=max(1, config.message_cap))
        self.imports: dict[int, ImportJob] = {}
        self.import_definitions: dict[str, ImportDefinition] = {}
        # Send logging data extension name -> its rows (see sendlog.py).
        self.send_logs: dict[str, deque[dict[str, Any]]] = {}
        # Retrieve paging: RequestID -> what is left to return (see soap.py, ContinueRequest).
        self.retrieve_cursors: dict[str, Any] = {}
        # Classic triggered sends: definition key -> the JobID of its send, and its last BatchID.
        self.jobs: dict[str, int] = {}
        self.batches: dict[str, int] = {}
        # MobileConnect: (mobile number, keyword) -> "Subscribed" | "Unsubscribed".
        self.mobile_subscriptions: dict[tuple[str, str], str] = {}
        # Transactional Messaging API: messageKey -> its message record (transactional.py).
        self.tx_messages: dict[str, Any] = {}
        self.tx_not_sent: list[dict[str, Any]] = []
        self.tokens: dict[str, float] = {}  # token -> expiry (loop.time())
        self.stats: dict[str, int] = {}
        self._next_subscriber_id = 481_746_000
        self._next_task_id = 130_040_000
        self._next_send_id = 1_888_000
        # Bumped on reset, so that background work started before a reset (a scheduled bounce, an
        # import waiting for its delay) can notice it belongs to a previous generation and stand down.
        self.generation = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = dict.fromkeys(
            (
                "token_requests",
                "token_failures",
                "soap_calls",
                "rest_calls",
                "sms_calls",
                "sftp_logins",
                "sftp_login_failures",
                "sftp_uploads",
                "imports_started",
                "imports_completed",
                "emails_accepted",
                "emails_refused",
                "sms_accepted",
                "rate_limited",
                "faults_injected",
                "ens_deliveries",
                "ens_delivery_failures",
                "bounces",
                "soft_bounces",
                "unsubscribes",
                "not_sent",
                "sms_not_delivered",
                "transactional_accepted",
                "transactional_refused",
            ),
            0,
        )

    def bump(self, counter: str, by: int = 1) -> None:
        self.stats[counter] = self.stats.get(counter, 0) + by

    def reset(self) -> None:
        self.subscribers.clear()
        self.messages.clear()
        self.delivery_records.clear()
        self.sms_sends.clear()
        self.events.clear()
        self.imports.clear()
        self.import_definitions.clear()
        self.send_logs.clear()
        self.retrieve_cursors.clear()
        self.jobs.clear()
        self.batches.clear()
        self.mobile_subscriptions.clear()
        self.tx_messages.clear()
        self.tx_not_sent.clear()
        self.tokens.clear()
        self.generation += 1
        self.reset_stats()

    def next_subscriber_id(self) -> int:
        self._next_subscriber_id += 1
        return self._next_subscriber_id

    def next_task_id(self) -> int:
        self._next_task_id += 1
        return self._next_task_id

    def next_send_id(self) -> int:
        self._next_send_id += 1
        return self._next_send_id

    def job_of(self, definition_key: str) -> int:
        """The JobID of a definition's send: one per definition, shared by all its messages, as MC's."""
        job = self.jobs.get(definition_key)
        if job is None:
            job = self.jobs[definition_key] = self.next_send_id()
        return job

    def next_batch(self, definition_key: str) -> int:
        """A new BatchID under the definition's job: JobID + BatchID + subscriber tell messages apart."""
        self.batches[definition_key] = self.batches.get(definition_key, 0) + 1
        return self.batches[definition_key]

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` after ``delay`` seconds unless the sandbox was reset meanwhile.

        A plain timer, not a task: thousands of sends must stay cheap. Equal delays fire in order.
        """
        generation = self.generation

        def run() -> None:
            if generation == self.generation:
                fn()

        asyncio.get_running_loop().call_later(max(0.0, delay), run)

    def find_subscriber_by_email(self, email: str) -> Subscriber | None:
        low = email.lower()
        for sub in self.subscribers.values():
            if sub.email.lower() == low:
                return sub
        return None

    def upsert_subscriber(
        self,
        key: str,
        email: str,
        mobile: str | None = None,
        attributes: dict[str, str] | None = None,
        status: str | None = None,
    ) -> tuple[Subscriber, bool]:
        """Add or update; returns (subscriber, created)."""
        now = utcnow()
        sub = self.subscribers.get(key)
        created = sub is None
        if sub is None:
            sub = Subscriber(subscriber_key=key, email=email, id=self.next_subscriber_id(), created_at=now)
            self.subscribers[key] = sub
        sub.email = email
        if mobile:
            sub.mobile = mobile
        if attributes:
            sub.attributes.update(attributes)
        if status:
            sub.status = status
        sub.updated_at = now
        return sub, created
