"""The Faust application, its topics and its tables: the shared vocabulary of every stage.

Each stage lives in its own module (intake, batcher, imports, senders, suppression, tracking) and
registers its agents on `app` when imported; `worker.py` imports them all.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust

from stream_app import faust_fixes
from stream_app.mc import MarketingCloud
from stream_app.metrics import instrument_mc
from stream_app.records import BatcherInput, EmailBounced, SubscriberBatch, TraceStep
from stream_app.settings import ROCKSDB_OPTIONS, Settings, load

log = logging.getLogger("stream_app.app")

settings: Settings = load()
faust_fixes.apply()

INPUT_TOPICS = ("packet.drawn", "packet.redeemed")
READY_TOPIC = "subscriber.ready"
STATUS_TOPIC = "notification.status"
BOUNCED_TOPIC = "email.bounced"
INTENTS_TOPIC = "stream_app.intents"
BATCHES_TOPIC = "stream_app.batches"
TRACE_TOPIC = "stream_app.trace"
# A fast-path subscriber.ready record's header: the intake's steps for the event view (intake.py).
INTAKE_HEADER = "stream_app.intake"
DLQ_SOURCES = (*INPUT_TOPICS, READY_TOPIC, BATCHES_TOPIC, BOUNCED_TOPIC)


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def topic_partitions() -> dict[str, int]:
    """Every topic the app reads or writes, with its partition count (see `create-topics`)."""
    n = settings.topic_partitions
    counts = {name: n for name in (*INPUT_TOPICS, READY_TOPIC, STATUS_TOPIC, INTENTS_TOPIC, BATCHES_TOPIC)}
    counts[TRACE_TOPIC] = n
    counts[BOUNCED_TOPIC] = 1
    counts.update({dlq_name(t): 1 for t in DLQ_SOURCES})
    return counts


# Work a clean stop finishes before Faust's own stop, which first stops the consumer and the tables,
# then closes the MC client (`on_before_shutdown`), and only then cancels the agents.
_before_stop: list[Callable[[], Awaitable[None]]] = []


def before_stop(hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    _before_stop.append(hook)
    return hook


class _App(faust.App):
    async def on_stop(self) -> None:
        for hook in _before_stop:
            try:
                await hook()
            except Exception:  # a stop must go on whatever a hook did
                log.warning("stop step failed", exc_info=True)
        await super().on_stop()


app = _App(
    settings.app_id,
    broker=settings.broker_url,
    store=settings.store,
    datadir=str(settings.state_dir / f"worker-{settings.web_port}"),
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_bind=settings.web_host,
    # Faust's /table/ views answer any key with the raw row: members' addresses and numbers.
    web_tables_enabled=False,
    topic_partitions=settings.topic_partitions,
    # A new consumer group must start from the oldest event, not skip what arrived before it.
    consumer_auto_offset_reset="earliest",
    # Short commit interval: fewer replays after a SIGKILL (the ledger absorbs the rest).
    broker_commit_interval=0.5,
    broker_session_timeout=settings.session_timeout_seconds,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 3),
    # Our own sweeps close batch windows; Faust's 30 s default timer is not on our path.
    table_cleanup_interval=30.0,
    stream_wait_empty=False,
    producer_acks=-1,
    producer_linger_ms=2,
    key_serializer="raw",
    value_serializer="raw",
    logging_config=None,
)

# External topics carry raw bytes: the agents decode them so a bad record can go to its DLQ untouched.
packet_drawn_topic = app.topic("packet.drawn", value_type=bytes, value_serializer="raw")
packet_redeemed_topic = app.topic("packet.redeemed", value_type=bytes, value_serializer="raw")
ready_topic = app.topic(READY_TOPIC, value_type=bytes, value_serializer="raw")
status_topic = app.topic(STATUS_TOPIC, value_type=bytes, value_serializer="raw")
bounced_topic = app.topic(BOUNCED_TOPIC, value_type=EmailBounced, value_serializer="json")
intents_topic = app.topic(INTENTS_TOPIC, value_type=BatcherInput, value_serializer="json")
batches_topic = app.topic(BATCHES_TOPIC, value_type=SubscriberBatch, value_serializer="json")
trace_topic = app.topic(TRACE_TOPIC, value_type=TraceStep, value_serializer="json")

# Tables. Values are small and keyed per row, never lists that grow per event.
STORE_OPTIONS = ROCKSDB_OPTIONS if settings.store.startswith("rocksdb") else None


# Tables whose rows only matter for `STATE_RETENTION_DAYS` (see `changelog_configs`).
_RETAINED: set[str] = set()


def table(name: str, *, retained: bool = False, **options: Any) -> Any:
    """A table of the stage that defines it: a worker holds only the tables of the stages it runs,
    so Faust keeps each changelog partition with the source partition that writes it.
    Keys are str, values raw bytes each stage encodes itself (cheap, and readable with console tools).
    `retained`: a row per event or notification, kept for `STATE_RETENTION_DAYS`, not forever."""
    if retained:
        _RETAINED.add(name)
    return app.Table(name, key_type=str, value_type=bytes, options=STORE_OPTIONS, **options)


# One partition, like its source email.bounced: Faust refuses a changelog wider than the source, and
# a one-partition global table is its documented way round a recovery loop with several workers.
suppressed = app.GlobalTable(
    "suppressed", key_type=str, value_type=bytes, partitions=1, recovery_buffer_size=1, options=STORE_OPTIONS
)
event_trace = table("event-trace", retained=True)


def load_stages(stages: Iterable[str]) -> None:
    """Import the modules of these stages: each registers its agents and tables on `app`."""
    for stage in stages:
        importlib.import_module(f"stream_app.{stage}")


def marketing_cloud() -> MarketingCloud:
    """The worker's one MC client set (one token, one HTTP pool, one SFTP connection)."""
    global _mc
    if _mc is None:
        _mc = instrument_mc(MarketingCloud(settings))  # MC call latency in /metrics
    return _mc


_mc: MarketingCloud | None = None
# Last words to MC on a clean stop, said before the client closes (one receiver: mode's signal
# receivers run in no set order).
_before_mc_close: list[Callable[[], Awaitable[None]]] = []


def before_mc_close(hook: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    _before_mc_close.append(hook)
    return hook


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types signal receivers too narrowly
async def _close_marketing_cloud(app: Any, **kwargs: Any) -> None:
    for hook in _before_mc_close:
        try:
            await asyncio.wait_for(hook(), timeout=5)
        except Exception:  # a stop must not hang or fail on MC
            log.warning("MC shutdown step failed", exc_info=True)
    if _mc is not None:
        await _mc.close()


# The intake's dedupe log (seen.py): its state, kept like a changelog but one record per batch.
SEEN_LOG_TOPIC = f"{settings.app_id}-intake-seen"


def changelog_partitions() -> dict[str, int]:
    """The changelog topic of every table, and the intake's dedupe log, with their partition counts."""
    counts = {
        table.changelog_topic.get_topic_name(): table.partitions or settings.topic_partitions
        for table in app.tables.values()
    }
    counts[SEEN_LOG_TOPIC] = settings.topic_partitions
    return counts


def changelog_configs() -> dict[str, dict[str, str]]:
    """Topic configs of every changelog: compacted, and for the retained tables (a row per event or
    notification) also deleted after `STATE_RETENTION_DAYS`, so that neither the changelogs nor a new
    worker's table recovery grow forever. Subscribers, open windows and suppressions stay."""
    retention_ms = str(int(settings.state_retention_days * 86_400_000))
    configs = {
        table.changelog_topic.get_topic_name(): (
            {"cleanup.policy": "compact,delete", "retention.ms": retention_ms}
            if table.name in _RETAINED
            else {"cleanup.policy": "compact"}
        )
        for table in app.tables.values()
    }
    # A record per batch holds distinct events: nothing to compact, only old marks to delete.
    configs[SEEN_LOG_TOPIC] = {"cleanup.policy": "delete", "retention.ms": retention_ms}
    return configs
