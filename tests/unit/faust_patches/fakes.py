"""Faust's and aiokafka's objects as far as the patches use them, without a broker.

`consumer()` is a Faust consumer's bookkeeping (acked, in flight, committed, read offsets) with a
seek that only records; `Fetched` puts a real aiokafka SubscriptionState under it, so aiokafka's
position moves as records are handed out; `faust_app()` is a real Faust App (never started) for the
patches that run Faust's own code around them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.types import TP
from intervaltree import IntervalTree

from stream_app.runtime import faust_patches
from stream_app.runtime.faust_patches import fetch, seek, undelivered
from stream_app.runtime.faust_patches.seek import perform_seek

TP0 = TP("subscriber.ready", 1)
NOT_SUBSCRIBED = SimpleNamespace(subscription=None)  # aiokafka before an assignment


def consumer(
    committed: int | None, acked: list[int], in_flight: tuple[int, ...] = (), log_start: int = 0
) -> Any:
    """A Faust consumer's bookkeeping for TP0; `c.seeks` lists the seeks asked of it."""
    seeks: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: log_start for tp in tps}

    return SimpleNamespace(
        _read_offset=defaultdict(lambda: None),
        _thread=SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_subscription=NOT_SUBSCRIBED)),
        _acked=defaultdict(list, {TP0: list(acked)}),
        _acked_index=defaultdict(set, {TP0: set(acked)}),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
        _unacked_messages=[SimpleNamespace(tp=TP0, offset=o) for o in in_flight],
        _gap=defaultdict(IntervalTree),  # Faust's own gaps, for its own `_new_offset` and `_add_gap`
        app=SimpleNamespace(rebalancing=False, topics=SimpleNamespace(_topic_name_index={})),
        seek=seek,
        earliest_offsets=earliest_offsets,
        seeks=seeks,
    )


async def settle() -> None:
    """Let a scheduled seek back run (it asks for the log's start first)."""
    for _ in range(3):
        await asyncio.sleep(0)


def ack(c: Any, offset: int) -> None:
    c._acked[TP0].append(offset)
    c._acked_index[TP0].add(offset)


def record(offset: int, tp: TP = TP0) -> Any:
    return SimpleNamespace(tp=tp, topic=tp.topic, offset=offset, key=None, value=None)


def queue_of(size: int, maxsize: int = 0) -> Any:
    """A stream's channel whose queue holds `size` records (full at `maxsize`, if any)."""
    return SimpleNamespace(queue=SimpleNamespace(qsize=lambda: size, full=lambda: 0 < maxsize <= size))


def original(owner: type, name: str) -> Any:
    """The library's own method a patch replaces (to show what the patch changes)."""
    (patch,) = [p for p in faust_patches.PATCHES if p.owner is owner and p.name == name]
    return patch.original


class FakeKafkaConsumer:
    """aiokafka's consumer as far as the rewind uses it; the log of subscriber.ready:0 starts at 3."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int]] = []

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((f"{tp.topic}:{tp.partition}", offset))

    async def beginning_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: 3 for tp in tps}


class Fetched:
    """aiokafka's position of TP0 (a real SubscriptionState) and Faust's getmany over it."""

    def __init__(self, c: Any, position: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.subscription = SubscriptionState()
        self.tp = TopicPartition(TP0.topic, TP0.partition)
        self.subscription.assign_from_user({self.tp})
        self.subscription.seek(self.tp, position)
        c._thread = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_subscription=self.subscription))
        self.handed_out: list[int] = []
        self.up_to: int | None = None
        self.yielded: list[int] = []

        async def getmany_of_faust(_consumer: Any, _timeout: float) -> Any:
            if self.handed_out:  # aiokafka hands these out: its position moves past them
                state = self.subscription.subscription.assignment.state_value(self.tp)
                state.consumed_to(self.up_to or self.handed_out[-1] + 1)
            for offset in self.yielded:
                yield TP0, record(offset)

        async def seek_to_committed(_consumer: Any) -> None:
            pass

        monkeypatch.setattr(fetch, "faust_getmany", getmany_of_faust)
        monkeypatch.setattr(seek, "faust_perform_seek", seek_to_committed)
        monkeypatch.setattr(undelivered, "UNDELIVERED_CHECK_SECONDS", 0.0)

    async def drain(
        self,
        c: Any,
        handed_out: tuple[int, ...] = (),
        yielded: tuple[int, ...] | None = None,
        up_to: int | None = None,
    ) -> list[int]:
        """One fetch of the drain loop: what aiokafka hands out, what Faust's getmany yields of it."""
        self.handed_out, self.up_to = list(handed_out), up_to
        self.yielded = list(handed_out if yielded is None else yielded)
        return [message.offset async for _, message in fetch.getmany(c, 1.0)]


async def after_a_rebalance(committed: int | None, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Fetched]:
    """A consumer just past a rebalance's seek: to `committed`, or to the log start (0) when None."""
    c = consumer(committed=committed, acked=[])
    fetched = Fetched(c, position=committed or 0, monkeypatch=monkeypatch)
    await perform_seek(c)
    return c, fetched


async def fetch_all(records: AsyncIterator[tuple[TP, Any]]) -> list[int]:
    return [message.offset async for _, message in records]


_apps = itertools.count()


def faust_app() -> faust.App:
    """A real Faust App, never started: its consumer, conductor, producer and topics are Faust's."""
    app = faust.App(
        f"faust-patches-test-{next(_apps)}",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        web_enabled=False,
    )
    app.flow_control.resume()  # as after a rebalance: records may flow
    return app


async def turns_of_the_loop(work: Awaitable[Any]) -> int:
    """How many turns the event loop took while `work` ran: 0 if it never yielded."""
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.ensure_future(count())
    await asyncio.sleep(0)  # the counter is running
    before = turns
    try:
        await work
        return turns - before
    finally:
        counter.cancel()


Drain = Callable[[Any, Any], Awaitable[None]]
