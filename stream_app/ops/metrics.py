"""The worker's own figures: Prometheus series, and the short in-memory history behind the dashboard
and the alerts (rates over the last minute, recent failures, pending imports, offsets).

This module imports nothing of the Faust app, so any module (app.py included) can record into it
without an import cycle. Everything here is per worker: each worker serves its own `/metrics` and
Prometheus sums across workers; the dashboard and alerts of a worker speak for that worker.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from stream_app.ops.logs import mask_text

REGISTRY = CollectorRegistry(auto_describe=True)

NOTIFICATIONS = Counter(
    "stream_app_notifications",
    "Final notification outcomes (notification.status records) by channel and status",
    ["channel", "status"],
    registry=REGISTRY,
)
DLQ_RECORDS = Counter(
    "stream_app_dlq_records", "Records this worker put on a .dlq topic", ["topic"], registry=REGISTRY
)
EVENTS_RECEIVED = Counter(
    "stream_app_events_received", "Input records read by intake, by topic", ["topic"], registry=REGISTRY
)
RECORDS_READ_AGAIN = Counter(
    "stream_app_records_read_again",
    "Records Faust fetched but never handed to an agent, sought back and read again (runtime/faust_patches)",
    ["topic"],
    registry=REGISTRY,
)
RECORDS_GIVEN_UP = Counter(
    "stream_app_records_given_up",
    "Records Faust skipped that retention deleted before they could be read again (runtime/faust_patches)",
    ["topic"],
    registry=REGISTRY,
)
RECORDS_FORWARDED = Counter(
    "stream_app_records_forwarded",
    "subscriber.ready records that arrived on another partition than their ledger's, forwarded there",
    registry=REGISTRY,
)
STORE_FAILURES = Counter(
    "stream_app_store_failures",
    "State store errors (disk full, I/O) that stopped this worker's consumption (runtime/health.py)",
    ["stage"],
    registry=REGISTRY,
)
SEEN_LOG_BAD_RECORDS = Counter(
    "stream_app_seen_log_bad_records",
    "Records of the intake's dedupe log that could not be read, skipped (stages/intake/seen.py)",
    registry=REGISTRY,
)
INTAKE_BATCH_SPLITS = Counter(
    "stream_app_intake_batch_splits",
    "Intake batches that failed twice and were handled one record at a time",
    registry=REGISTRY,
)
STALE_PENDING = Gauge(
    "stream_app_stale_pending_sends",
    "Send ledger entries `pending` for longer than PENDING_STALE_SECONDS and not in flight here",
    ["channel"],
    registry=REGISTRY,
)
FEEDBACK_EVENTS = Counter(
    "stream_app_feedback_events",
    "MC's delivery events the feedback stage read (tracking objects for classic sends, ENS events "
    "for Transactional Messaging), by kind and result: matched to their notification; held (an ENS "
    "event waiting for its send's watch); repeated (an ENS delivery met before); unmatched (not this "
    "service's send, send logging off, or an ENS event whose watch never came)",
    ["kind", "result"],
    registry=REGISTRY,
)
STAGE_STEPS = Counter(
    "stream_app_stage_steps",
    "Trace steps written, by stage (received, batched, ...)",
    ["stage"],
    registry=REGISTRY,
)
IMPORT_DURATION = Histogram(
    "stream_app_import_duration_seconds",
    "From the end of the SFTP upload to MC's final ImportResultsSummary, per attempt",
    ["outcome"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "stream_app_import_batch_rows",
    "Notifications per subscriber import file",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)
IMPORT_ROWS = Counter(
    "stream_app_import_rows",
    "Rows of subscriber files whose import MC completed, by result (imported, rejected)",
    ["result"],
    registry=REGISTRY,
)
MC_LATENCY = Histogram(
    "stream_app_mc_call_seconds",
    "Latency of one Marketing Cloud call, by operation and outcome (ok / error)",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
MC_BLOCKED = Gauge(
    "stream_app_mc_blocked",
    "1 while MC blocks this worker's calls (errorcode 50200) and its circuit breaker holds every MC call",
    registry=REGISTRY,
)
MC_THROTTLED = Counter(
    "stream_app_mc_throttled",
    "MC's answers asking this worker to slow down, by API family and answer "
    "(rate_limited: REST 429 or the SOAP Rate Limited fault; blocked: errorcode 50200)",
    ["family", "answer"],
    registry=REGISTRY,
)
MC_PACED_SECONDS = Counter(
    "stream_app_mc_paced_seconds",
    "Seconds MC calls waited before going out, by reason (rate_limit: MC_MAX_REQUESTS_PER_SECOND; "
    "retry_after: MC's Retry-After or rate fault; blocked: the circuit breaker)",
    ["reason"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "stream_app_consumer_lag",
    "End offset minus committed offset, per assigned topic-partition",
    ["topic", "partition"],
    registry=REGISTRY,
)
DLQ_SIZE = Gauge(
    "stream_app_dlq_size",
    "Records held by each .dlq topic (end minus beginning offset)",
    ["topic"],
    registry=REGISTRY,
)
OPEN_WINDOWS = Gauge(
    "stream_app_open_windows", "Subscriber batch windows open on this worker", registry=REGISTRY
)
PENDING_IMPORTS = Gauge(
    "stream_app_pending_imports", "Import files this worker is waiting on MC for", registry=REGISTRY
)

# The STALE_PENDING gauge's values, for the alert rules (a gauge cannot be read back cleanly).
STALE_PENDING_COUNTS: dict[str, int] = {}


def feedback_event(kind: str, result: str) -> None:
    FEEDBACK_EVENTS.labels(kind=kind, result=result).inc()


def stale_pending(channel: str, count: int) -> None:
    STALE_PENDING_COUNTS[channel] = count
    STALE_PENDING.labels(channel=channel).set(count)


# While MC blocks this worker's calls: since when (wall clock) and what the breaker says, for the
# mc_blocked alert. Empty when MC is not blocking.
MC_BLOCK: dict[str, Any] = {}


def mc_blocked(since: float | None, detail: str) -> None:
    """The MC circuit breaker opened (`since`: when the block began) or closed (None)."""
    if since is None:
        MC_BLOCK.clear()
        MC_BLOCKED.set(0)
    else:
        MC_BLOCK.update(since=since, detail=detail)
        MC_BLOCKED.set(1)


def mc_throttled(family: str, answer: str) -> None:
    MC_THROTTLED.labels(family=family, answer=answer).inc()


def mc_paced(reason: str, seconds: float) -> None:
    if seconds > 0:
        MC_PACED_SECONDS.labels(reason=reason).inc(seconds)


FAILED_STATUSES = frozenset({"failed", "invalid"})
RATE_WINDOW_SECONDS = 60
RECENT_FAILURES_KEPT = 20


class RateWindow:
    """Counts per whole second over the last `seconds`: a rate that reacts within a second."""

    def __init__(self, seconds: int = RATE_WINDOW_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock
        self.started = clock()
        self.total = 0
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first

    def add(self, n: int = 1) -> None:
        second = int(self.clock())
        self.total += n
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
        self._trim(second)

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.seconds:
            self._buckets.popleft()

    def count(self) -> int:
        self._trim(int(self.clock()))
        return sum(c for _, c in self._buckets)

    def rate(self) -> float:
        """Per second over the window, or over the uptime while that is shorter."""
        span = min(float(self.seconds), max(self.clock() - self.started, 1.0))
        return self.count() / span


@dataclass
class PendingImport:
    file: str
    rows: int
    started: float = field(default_factory=time.time)


@dataclass
class PartitionOffsets:
    end: int
    committed: int

    @property
    def lag(self) -> int:
        return max(self.end - self.committed, 0)


# Per-stage rates of the dashboard, keyed by the trace stage each stage writes.
STAGE_RATES: dict[str, RateWindow] = {}
RECENT_FAILURES: deque[dict[str, Any]] = deque(maxlen=RECENT_FAILURES_KEPT)
# Wall-clock times of failed outcomes, for the failure-burst alert (bounded: a burst is a count).
FAILURE_TIMES: deque[float] = deque(maxlen=10_000)
OUTCOME_COUNTS: dict[str, int] = {}
DLQ_SENT: dict[str, int] = {}
PENDING: dict[str, PendingImport] = {}
# Refreshed by the offsets sampler (dashboard.py): the partitions this worker consumes, and DLQ sizes.
PARTITIONS: dict[tuple[str, int], PartitionOffsets] = {}
# The input partitions this worker's intake owns (its own consumer, not Faust's), with the offset it
# committed last (None: nothing yet, it reads from the beginning), for the offsets sampler.
INTAKE_COMMITTED: dict[tuple[str, int], int | None] = {}
DLQ_SIZES: dict[str, int] = {}


def stage_rate(stage: str) -> RateWindow:
    window = STAGE_RATES.get(stage)
    if window is None:
        window = STAGE_RATES[stage] = RateWindow()
    return window


def record_stage(stage: str, n: int = 1) -> None:
    STAGE_STEPS.labels(stage=stage).inc(n)
    stage_rate(stage).add(n)


def rows_imported(imported: int, rejected: int) -> None:
    """Rows of one completed import, as MC's summary counts them (the dashboard's import figure)."""
    for result, n in (("imported", imported), ("rejected", rejected)):
        IMPORT_ROWS.labels(result=result).inc(n)
        stage_rate(f"rows-{result}").add(n)


def events_received(topic: str, n: int) -> None:
    EVENTS_RECEIVED.labels(topic=topic).inc(n)
    stage_rate("intake").add(n)


def record_outcome(
    *, channel: str, status: str, notification_id: str, event_id: str, template: str = "", reason: str = ""
) -> None:
    NOTIFICATIONS.labels(channel=channel, status=status).inc()
    OUTCOME_COUNTS[status] = OUTCOME_COUNTS.get(status, 0) + 1
    if status in FAILED_STATUSES:
        now = time.time()
        FAILURE_TIMES.append(now)
        RECENT_FAILURES.appendleft(
            {
                "at": now,
                "kind": "outcome",
                "status": status,
                "channel": channel,
                "template": template,
                "event_id": mask_text(event_id),
                "notification_id": mask_text(notification_id),
                "reason": mask_text(reason)[:300],
            }
        )


def record_dlq(
    *, dlq_topic: str, source_topic: str, partition: int, offset: int, error: BaseException
) -> None:
    DLQ_RECORDS.labels(topic=dlq_topic).inc()
    DLQ_SENT[dlq_topic] = DLQ_SENT.get(dlq_topic, 0) + 1
    RECENT_FAILURES.appendleft(
        {
            "at": time.time(),
            "kind": "dlq",
            "status": "dlq",
            "topic": dlq_topic,
            "source": f"{source_topic}[{partition}]@{offset}",
            "error_class": type(error).__name__,
            "reason": mask_text(str(error))[:300],
        }
    )


@contextmanager
def import_pending(file: str, rows: int) -> Iterator[PendingImport]:
    """While MC imports `file`: visible on the dashboard, watched by the stuck-import alert, timed."""
    pending = PendingImport(file, rows)
    PENDING[file] = pending
    PENDING_IMPORTS.set(len(PENDING))
    outcome = "error"
    try:
        yield pending
        outcome = "ok"
    finally:
        PENDING.pop(file, None)
        PENDING_IMPORTS.set(len(PENDING))
        IMPORT_DURATION.labels(outcome=outcome).observe(time.time() - pending.started)


T = TypeVar("T")


def timed(operation: str, call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """`call` with its latency observed in `stream_app_mc_call_seconds{operation=...}`."""

    async def wrapper(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call(*args, **kwargs)
            outcome = "ok"
            return result
        finally:
            MC_LATENCY.labels(operation=operation, outcome=outcome).observe(time.perf_counter() - started)

    wrapper.__wrapped__ = call  # type: ignore[attr-defined]
    return wrapper


class _MarketingCloudLike(Protocol):
    rest: Any
    soap: Any
    sftp: Any


# Every MC operation on the pipeline's path; token fetches are timed inside these calls.
MC_OPERATIONS = {
    "rest": (
        "send_email",
        "send_sms",
        "send_sms_subscribers",
        "send_transactional",
        "send_transactional_many",
        "transactional_status",
        "register_callback",
        "subscribe",
        "sms_deliveries",
    ),
    "soap": (
        "import_summary",
        "send_log",
        "send_triggered",
        "upsert_subscribers",
        "definition_object_id",
        "send_log_entries",
    ),
    "sftp": ("upload", "read_file"),
}

M = TypeVar("M", bound=_MarketingCloudLike)


def instrument_mc(mc: M) -> M:
    """Time every MC call of this client set, at one place instead of at every call site, and
    count what its pacer (mc/pacing.py) holds back."""
    for part, operations in MC_OPERATIONS.items():
        client = getattr(mc, part)
        for name in operations:
            method = getattr(client, name, None)
            if method is not None and not hasattr(method, "__wrapped__"):
                setattr(client, name, timed(f"{part}.{name}", method))
    pacer = getattr(mc, "pacer", None)
    if pacer is not None:
        pacer.listener.blocked = mc_blocked
        pacer.listener.throttled = mc_throttled
        pacer.listener.waited = mc_paced
    return mc


def update_offsets(partitions: dict[tuple[str, int], PartitionOffsets], dlq_sizes: dict[str, int]) -> None:
    """Publish a fresh sample of offsets (the sampler's result) to the gauges and the snapshot."""
    for topic, partition in set(PARTITIONS) - set(partitions):
        CONSUMER_LAG.remove(topic, str(partition))
    PARTITIONS.clear()
    PARTITIONS.update(partitions)
    for (topic, partition), offsets in partitions.items():
        CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(offsets.lag)
    DLQ_SIZES.clear()
    DLQ_SIZES.update(dlq_sizes)
    for topic, size in dlq_sizes.items():
        DLQ_SIZE.labels(topic=topic).set(size)


def render() -> tuple[bytes, str]:
    """The Prometheus exposition of this worker: our series and Faust's, one registry."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def reset_for_tests() -> None:
    STAGE_RATES.clear()
    RECENT_FAILURES.clear()
    FAILURE_TIMES.clear()
    OUTCOME_COUNTS.clear()
    DLQ_SENT.clear()
    PENDING.clear()
    PARTITIONS.clear()
    DLQ_SIZES.clear()
    STALE_PENDING_COUNTS.clear()
    MC_BLOCK.clear()
