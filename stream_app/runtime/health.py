"""A worker whose state store fails stops consuming, and says so on /health/.

A RocksDB write error (disk full, I/O error, corruption) is no fault of the record being handled:
dead-lettering it, as a stage does with a record it cannot process, would fill the DLQ with good
events, one per record, while `/health/` stayed green. A stage that meets a store error instead
calls `Health.halt`: the worker marks itself unhealthy, pauses every partition it consumes (Faust's
agents and the intake's own consumer), and the record in hand stays unacked, so it is read again by
whoever owns the partition next. RocksDB takes no more writes after such an error until it is
reopened, so the worker is not resumed: its liveness probe (`/health/` answers 503 and names the
error) gets it restarted, on a disk with room.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import httpx
from aiokafka.errors import KafkaTimeoutError, ProducerClosed

from stream_app.contract.registry import RegistryError
from stream_app.ops import metrics

log = logging.getLogger("stream_app.health")

# What RocksDB's status messages start with (rocksdict and python-rocksdb pass them on as text).
STORE_MESSAGES = ("IO error", "Corruption", "No space left", "Resource busy", "Not implemented: read only")
# Where table stores live: an exception raised from one of these is the store's, not the record's.
STORE_MODULES = ("faust.stores", "rocksdict", "rocksdb")
STORE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT}


class StoreError(Exception):
    """The state store failed to read or write (a test's stand-in, or a wrapped store error)."""


def is_store_error(exc: BaseException) -> bool:
    """Whether `exc` is the store's failure rather than the record's."""
    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OSError) and exc.errno in STORE_ERRNOS:
        return True
    if type(exc).__module__.startswith(STORE_MODULES):
        return True
    if str(exc).startswith(STORE_MESSAGES):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_store_error(cause)


# What a stage depends on failing (the broker, the schema registry, the network), not its record:
# read the record again later, never dead-letter it.
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    KafkaTimeoutError,
    ProducerClosed,
    httpx.TransportError,
    RegistryError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` says the broker, a registry or the network is away for now."""
    if isinstance(exc, TRANSIENT_TYPES) or getattr(exc, "retriable", False):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


class Health:
    """The worker's own verdict on itself, beside Faust's (partitions assigned, tables recovered)."""

    def __init__(self, app: Any = None) -> None:
        self.store_failure: str | None = None
        self.app = app  # the Faust app whose consumer `halt` pauses
        if app is not None:
            # A rebalance resumes what it assigns: paused again while the store is failed.
            app.on_rebalance_complete.connect(self._after_rebalance)

    async def _after_rebalance(self, sender: Any, **kwargs: Any) -> None:
        if not self.healthy:
            self.pause_faust()

    @property
    def healthy(self) -> bool:
        return self.store_failure is None

    def store_failed(self, stage: str, exc: BaseException) -> None:
        """Mark the worker unhealthy and pause its consumption (idempotent)."""
        if self.store_failure is None:
            self.store_failure = f"{stage}: {type(exc).__name__}: {exc}"[:500]
            log.critical(
                "state store failed: consumption stopped, the worker needs a restart",
                extra={"stage": stage, "error": str(exc)[:300]},
            )
            metrics.STORE_FAILURES.labels(stage=stage).inc()
        self.pause_faust()

    def pause_faust(self) -> None:
        consumer = getattr(self.app, "consumer", None) if self.app is not None else None
        if consumer is None:
            return
        try:
            consumer.pause_partitions(consumer.assignment())
        except Exception:  # a consumer not started yet: nothing is consumed then either
            log.warning("could not pause the consumer", exc_info=True)

    async def halt(self, stage: str, exc: BaseException) -> None:
        """Stop here for good: the caller's record stays unacked (cancelled when the worker stops)."""
        self.store_failed(stage, exc)
        await asyncio.Event().wait()
