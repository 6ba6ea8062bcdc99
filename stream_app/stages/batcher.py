"""Subscriber batcher: gathers new or changed subscribers into windows, one CSV per window.

A notification whose subscriber MC already has (same email and mobile) goes straight on to
`subscriber.ready`. The others wait in a window: tumbling, aligned to the wall clock so that every
partition's window closes at the same moment and the import stage can merge them into one upload,
and closed early when it reaches `BATCH_MAX_ROWS`.

Why not Faust's windowed tables with `on_window_close`: that callback runs from a 30 s timer outside
stream iteration (it cannot write tables), is never called for windows restored after a restart, and
windows have no size limit. Here the window state is two plain tables keyed per row (`pending-rows`)
and per window (`open-windows`); a sweep only *asks* for a close by putting a `close` record on the
window's own partition, and the agent closes it in stream order, where table writes are allowed.
Windows restored from the changelog after a crash are seen by the same sweep and flushed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TP, EventT, StreamT

from stream_app.contract.internal import decode_record, encode_record
from stream_app.contract.records import BatcherInput, SubscriberBatch, SubscriberReady
from stream_app.contract.topics import INTENTS_TOPIC
from stream_app.domain.subscribers import (
    KNOWN_SUBSCRIBERS_TABLE,
    SUPPRESSED_REASON,
    is_suppressed,
    needs_import,
    subscriber_signature,
)
from stream_app.runtime.health import is_store_error
from stream_app.runtime.outputs import Outputs

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.batcher")

SEP = "\x1f"  # between a window id and a notification id in a pending row's key

# How often due windows are looked for at most: the sweep also wakes when the next one is due. Cheap:
# it reads the few open windows of this worker.
SWEEP_SECONDS = 0.05
# A close request not acted on after this long (worker busy or restarted) is asked again.
CLOSE_RETRY_SECONDS = 5.0


@dataclass
class WindowMeta:
    partition: int
    opened_at: float
    closes_at: float

    def dumps(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def loads(cls, raw: bytes) -> WindowMeta:
        data = orjson.loads(raw)  # rows written before 2026-12-01 also hold a row count
        return cls(data["partition"], data["opened_at"], data["closes_at"])


def window_bounds(now: float, size: float) -> tuple[float, float]:
    start = math.floor(now / size) * size
    return start, start + size


def window_partition(window_id: str) -> int | None:
    """The intents partition a window belongs to, from its id (`p<partition>-<start>-<random>`)."""
    head = window_id.split("-", 1)[0]
    return int(head[1:]) if head.startswith("p") and head[1:].isdigit() else None


class Batcher:
    def __init__(self, runtime: Runtime) -> None:
        self.app = runtime.app
        self.settings = runtime.settings
        self.intents = runtime.topics.intents
        self.batches = runtime.topics.batches
        self.suppressed = runtime.suppressed
        self.out = Outputs(runtime.app)
        self.health = runtime.health
        self.known_subscribers = runtime.table(KNOWN_SUBSCRIBERS_TABLE)
        self.pending_rows = runtime.table("pending-rows")
        self.open_windows = runtime.table("open-windows")
        # In-memory helpers, rebuilt from the tables whenever missing (after a restart or rebalance).
        self._current_window: dict[int, str] = {}
        self._close_requested: dict[str, float] = {}
        # The row keys of each window this worker opened (the size limit, and the close reads them
        # instead of scanning every pending row of the worker, which grows with a backlog of new
        # subscribers). A window restored after a restart takes no more rows: it is flushed when
        # due, after a scan.
        self._rows: dict[str, list[str]] = {}

    def forget(self, revoked: Iterable[TP]) -> None:
        """Drop what this worker kept in memory of the windows of revoked partitions: their next
        owner (maybe this worker again) rebuilds it from the tables, which alone are the truth. Kept,
        a window closed meanwhile by another worker would be reopened here with stale row keys."""
        partitions = {tp.partition for tp in revoked if tp.topic == INTENTS_TOPIC}
        if not partitions:
            return
        for partition in partitions:
            self._current_window.pop(partition, None)
        for window_id in [*self._rows, *self._close_requested]:
            if window_partition(window_id) in partitions:
                self._rows.pop(window_id, None)
                self._close_requested.pop(window_id, None)

    def _open_window(self, partition: int, now: float) -> str:
        window_id = self._current_window.get(partition)
        if window_id is not None and window_id in self._rows:
            raw = self.open_windows.get(window_id)
            if (
                raw is not None
                and WindowMeta.loads(raw).closes_at > now
                and len(self._rows[window_id]) < self.settings.batch_max_rows
            ):
                return window_id
        start, end = window_bounds(now, self.settings.batch_window_seconds)
        window_id = f"p{partition}-{int(start * 1000)}-{uuid.uuid4().hex[:6]}"
        # Written once, when the window opens: a rewrite per row cost a changelog record per row.
        self.open_windows[window_id] = WindowMeta(partition=partition, opened_at=now, closes_at=end).dumps()
        self._current_window[partition] = window_id
        self._rows[window_id] = []
        return window_id

    async def add_to_window(self, event: EventT, ready: SubscriberReady) -> None:
        window_id = self._open_window(event.message.partition, time.time())
        key = f"{window_id}{SEP}{ready.notification_id}"
        self.pending_rows[key] = ready.dumps(serializer="json")
        self._rows[window_id].append(key)
        await self.out.trace(
            ready.event_id, "batched", notification_id=ready.notification_id, window=window_id
        )
        if len(self._rows[window_id]) >= self.settings.batch_max_rows:
            await self.close_window(window_id)

    async def close_window(self, window_id: str, close_round: str | None = None, round_size: int = 0) -> None:
        raw = self.open_windows.get(window_id)  # None: already closed, a repeated close request
        keys: list[str] = []
        if raw is not None:
            added = self._rows.get(window_id)
            if added is None:  # restored after a restart
                prefix = f"{window_id}{SEP}"
                added = [key for key in self.pending_rows if key.startswith(prefix)]
            keys = [
                key for key in dict.fromkeys(added) if key in self.pending_rows
            ]  # a replayed intent: one row
        rows = [SubscriberReady.loads(self.pending_rows[key], serializer="json") for key in keys]
        if rows or close_round:
            # A round's window with nothing to import (already closed by a repeated request) still
            # reports, without rows: the import watcher waits for every window of a round.
            sent = await self.batches.send(
                key=(close_round or window_id).encode(),  # a round's batches reach one watcher, in order
                value=encode_record(
                    SubscriberBatch(
                        window_id=window_id,
                        closed_at=time.time(),
                        rows=rows,
                        close_round=close_round,
                        round_size=round_size,
                    )
                ),
                force=True,
            )
            # The rows are deleted only once the batch is in Kafka: the producer sends per partition in
            # no order across them, so a worker killed now could otherwise leave the deletes (and so an
            # "already closed" window when the close request is read again) without the batch.
            await sent
        if raw is None:
            return
        for key in keys:
            del self.pending_rows[key]
        del self.open_windows[window_id]
        self._close_requested.pop(window_id, None)
        self._rows.pop(window_id, None)
        for partition, current in list(self._current_window.items()):
            if current == window_id:
                del self._current_window[partition]
        log.info("window closed", extra={"window": window_id, "rows": len(rows), "round": close_round})

    async def handle(self, event: EventT, item: BatcherInput) -> None:
        if item.kind == "close":
            await self.close_window(item.window_id or "", item.close_round, item.round_size)
        elif item.kind == "confirmed":
            self.known_subscribers[item.subscriber_key] = subscriber_signature(item.email, item.mobile)
        elif item.kind == "intent" and item.ready is not None:
            ready = item.ready
            if is_suppressed(ready, self.suppressed):
                await self.out.status(ready, "suppressed", reason=SUPPRESSED_REASON)
            elif needs_import(ready.email, ready.mobile, self.known_subscribers.get(ready.subscriber_key)):
                await self.add_to_window(event, ready)
            else:
                await self.out.ready(ready, via="known subscriber")
        else:
            raise ValueError(f"unknown batcher input kind {item.kind!r}")

    async def process(self, event: EventT) -> None:
        """One stream_app.intents record to its end: handled, or on stream_app.intents.dlq with the
        reason (produced back, it is handled again). A store error is not the record's fault: the
        worker stops there, the record unacked (runtime/health.py)."""
        try:
            await self.handle(event, decode_record(BatcherInput, event.value, INTENTS_TOPIC))
        except Exception as exc:  # never stop the agent, never lose the record
            if is_store_error(exc):
                await self.health.halt("batcher", exc)
            log.exception("batcher failed on a record", extra={"offset": event.message.offset})
            await self.out.dead_letter(event, exc)

    async def request_due_closes(self) -> float:
        """Ask for the close of every due window this worker owns, restored ones included; return the
        seconds until the next sweep: at most SWEEP_SECONDS, and no later than the next window's end
        (a fixed 50 ms timer added 25 ms on average to every new subscriber's latency).

        The closes asked for in one sweep are one round (every partition's window of a slot is due at
        the same aligned moment): the import watcher puts a round into one file. Closes are acted on one
        after another, each after Kafka acked the batch before, so on a busy machine a slot's batches
        came more than half a second apart and a merge by arrival time split them into two uploads.
        """
        now = time.time()
        assigned = self.app.consumer.assignment()
        due: list[tuple[str, int]] = []  # window id, partition
        pause = SWEEP_SECONDS
        for window_id, raw in list(self.open_windows.items()):
            meta = WindowMeta.loads(raw)
            if TP(INTENTS_TOPIC, meta.partition) not in assigned:
                continue
            if meta.closes_at > now:
                pause = min(pause, meta.closes_at - now)
                continue
            asked = self._close_requested.get(window_id)
            if asked is not None and now - asked < CLOSE_RETRY_SECONDS:
                continue
            due.append((window_id, meta.partition))
        if due:
            close_round = uuid.uuid4().hex[:12]
            for window_id, partition in due:
                self._close_requested[window_id] = now
                request = BatcherInput(
                    kind="close", window_id=window_id, close_round=close_round, round_size=len(due)
                )
                await self.intents.send(value=encode_record(request), partition=partition)
        return pause


def install(runtime: Runtime) -> None:
    batcher = Batcher(runtime)
    app = runtime.app

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's receiver type omits args
    async def forget_revoked_windows(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        batcher.forget(revoked)

    @app.agent(runtime.topics.intents, name="subscriber-batcher")
    async def subscriber_batcher(stream: StreamT) -> None:
        async for event in stream.events():
            await batcher.process(event)

    @app.task
    async def sweep_windows() -> None:
        while not app.should_stop:
            try:
                pause = await batcher.request_due_closes()
            except Exception:  # the next sweep tries again: ending the loop would leave every window open
                log.exception("window sweep failed")
                pause = SWEEP_SECONDS
            await asyncio.sleep(pause)
