"""The Faust application a worker runs: built once from `Settings`, handed to every stage.

`Runtime` holds what the stages share (the Faust app, its topics, the tables every worker keeps,
the MC client set, the stop hooks); `build()` makes one and installs the stages on it. Nothing
here runs at import: the worker, `create-topics` and the tests each build their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TopicT

from stream_app.contract.topics import (
    BATCHES_TOPIC,
    BOUNCED_TOPIC,
    INTENTS_TOPIC,
    READY_TOPIC,
    STATUS_TOPIC,
    TRACE_TOPIC,
    seen_log_topic,
)
from stream_app.mc import MarketingCloud
from stream_app.ops.metrics import instrument_mc
from stream_app.runtime import faust_patches
from stream_app.runtime.health import Health
from stream_app.settings import ROCKSDB_OPTIONS, Settings
from stream_app.stages import install

log = logging.getLogger("stream_app.app")

Hook = Callable[[], Awaitable[None]]


class _App(faust.App):
    """Faust's App, plus work a clean stop finishes before Faust's own stop, which first stops the
    consumer and the tables, then closes the MC client (`on_before_shutdown`), and only then
    cancels the agents."""

    before_stop_hooks: list[Hook]

    async def on_stop(self) -> None:
        for hook in self.before_stop_hooks:
            try:
                await hook()
            except Exception:  # a stop must go on whatever a hook did
                log.warning("stop step failed", exc_info=True)
        await super().on_stop()


@dataclass(frozen=True)
class Topics:
    # Every topic carries raw bytes: the agents decode them inside their error handling, so a bad
    # record goes to its DLQ untouched (Faust acks a value that fails its own decoding unseen).
    # The internal ones hold our records' JSON (contract/internal.py).
    ready: TopicT
    status: TopicT
    bounced: TopicT
    intents: TopicT
    batches: TopicT
    trace: TopicT


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = _App(
            settings.app_id,
            broker=settings.broker_url,
            store=settings.store,
            datadir=str(self.worker_dir),
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_bind=settings.web_host,
            # Faust's /table/ views answer any key with the raw row (members' addresses and numbers):
            # ops/web.py serves /table/ in their place, decoded, masked and behind the token.
            web_tables_enabled=False,
            topic_partitions=settings.topic_partitions,
            # Faust's own topics (its assignor's leader topic) and any changelog it creates itself.
            topic_replication_factor=settings.topic_replication_factor,
            # A new consumer group must start from the oldest event, not skip what arrived before it.
            consumer_auto_offset_reset="earliest",
            # Short commit interval: fewer replays after a SIGKILL (the ledger absorbs the rest).
            broker_commit_interval=0.5,
            broker_session_timeout=settings.session_timeout_seconds,
            broker_heartbeat_interval=settings.heartbeat_interval_seconds,
            # Our own sweeps close batch windows; Faust's 30 s default timer is not on our path.
            table_cleanup_interval=30.0,
            stream_wait_empty=False,
            producer_acks=-1,
            producer_linger_ms=2,
            key_serializer="raw",
            value_serializer="raw",
            logging_config=None,
        )
        self.app.before_stop_hooks = []
        # A failed state store stops consumption and turns /health/ red (runtime/health.py).
        self.health = Health(self.app)
        app = self.app
        self.topics = Topics(
            ready=app.topic(READY_TOPIC, value_type=bytes, value_serializer="raw"),
            status=app.topic(STATUS_TOPIC, value_type=bytes, value_serializer="raw"),
            bounced=app.topic(BOUNCED_TOPIC, value_type=bytes, value_serializer="raw"),
            intents=app.topic(INTENTS_TOPIC, value_type=bytes, value_serializer="raw"),
            batches=app.topic(BATCHES_TOPIC, value_type=bytes, value_serializer="raw"),
            trace=app.topic(TRACE_TOPIC, value_type=bytes, value_serializer="raw"),
        )
        self.store_options = ROCKSDB_OPTIONS if settings.store.startswith("rocksdb") else None
        self._retained: set[str] = set()
        # One partition, like its source email.bounced: Faust refuses a changelog wider than the
        # source, and a one-partition global table is its documented way round a recovery loop
        # with several workers.
        self.suppressed: Any = app.GlobalTable(
            "suppressed",
            key_type=str,
            value_type=bytes,
            partitions=1,
            recovery_buffer_size=1,
            options=self.store_options,
        )
        self.event_trace: Any = self.table("event-trace", retained=True)
        self._mc: MarketingCloud | None = None
        # Last words to MC on a clean stop, said before the client closes (one receiver: mode's
        # signal receivers run in no set order).
        self._before_mc_close: list[Hook] = []
        app.on_before_shutdown.connect(self._close_marketing_cloud)  # type: ignore[arg-type]

    @property
    def worker_dir(self) -> Path:
        return self.settings.state_dir / f"worker-{self.settings.web_port}"

    def table(self, name: str, *, retained: bool = False, **options: Any) -> Any:
        """A table of the stage that defines it: a worker holds only the tables of the stages it
        runs, so Faust keeps each changelog partition with the source partition that writes it.
        Keys are str, values raw bytes each stage encodes itself (cheap, and readable with console
        tools). `retained`: a row per event or notification, kept for `STATE_RETENTION_DAYS`."""
        if retained:
            self._retained.add(name)
        return self.app.Table(name, key_type=str, value_type=bytes, options=self.store_options, **options)

    def marketing_cloud(self) -> MarketingCloud:
        """The worker's one MC client set (one token, one HTTP pool, one SFTP connection)."""
        if self._mc is None:
            self._mc = instrument_mc(MarketingCloud(self.settings))  # MC call latency in /metrics
        return self._mc

    def before_stop(self, hook: Hook) -> Hook:
        self.app.before_stop_hooks.append(hook)
        return hook

    def before_mc_close(self, hook: Hook) -> Hook:
        self._before_mc_close.append(hook)
        return hook

    async def _close_marketing_cloud(self, app: Any, **kwargs: Any) -> None:
        for hook in self._before_mc_close:
            try:
                await asyncio.wait_for(hook(), timeout=5)
            except Exception:  # a stop must not hang or fail on MC
                log.warning("MC shutdown step failed", exc_info=True)
        if self._mc is not None:
            await self._mc.close()

    @property
    def seen_log_topic(self) -> str:
        return seen_log_topic(self.settings.app_id)

    def changelog_partitions(self) -> dict[str, int]:
        """The changelog topic of every table, and the intake's dedupe log, with partition counts."""
        counts = {
            table.changelog_topic.get_topic_name(): table.partitions or self.settings.topic_partitions
            for table in self.app.tables.values()
        }
        counts[self.seen_log_topic] = self.settings.topic_partitions
        return counts

    def changelog_configs(self) -> dict[str, dict[str, str]]:
        """Topic configs of every changelog: compacted, and for the retained tables (a row per event
        or notification) also deleted after `STATE_RETENTION_DAYS`, so that neither the changelogs
        nor a new worker's table recovery grow forever. Subscribers, open windows and suppressions
        stay."""
        retention_ms = str(int(self.settings.state_retention_days * 86_400_000))
        configs = {
            table.changelog_topic.get_topic_name(): (
                {"cleanup.policy": "compact,delete", "retention.ms": retention_ms}
                if table.name in self._retained
                else {"cleanup.policy": "compact"}
            )
            for table in self.app.tables.values()
        }
        # A record per batch holds distinct events: nothing to compact, only old marks to delete.
        configs[self.seen_log_topic] = {"cleanup.policy": "delete", "retention.ms": retention_ms}
        return configs


def build(settings: Settings, stages: tuple[str, ...]) -> Runtime:
    """The worker's runtime with these stages of the flow installed (and what every worker runs)."""
    faust_patches.apply(allow_unverified=settings.allow_unverified_faust)
    runtime = Runtime(settings)
    install(runtime, stages)
    return runtime
