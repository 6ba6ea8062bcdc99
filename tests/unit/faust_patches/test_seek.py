"""Fix 2 (seek.py, and its part in fetch.py and delivery.py): after a rebalance every stream partition
is rewound, and nothing fetched before the seek is handed on after it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from stream_app.runtime.faust_patches import fetch
from stream_app.runtime.faust_patches.fetch import getmany
from stream_app.runtime.faust_patches.seek import perform_seek, rewind_uncommitted, seek_to_committed
from stream_app.runtime.faust_patches.state import tracking

from .fakes import TP0, FakeKafkaConsumer, after_a_rebalance, fetch_all, record

COMMITTED = {
    TP("subscriber.ready", 0): None,  # never committed: aiokafka leaves it where it was
    TP("subscriber.ready", 1): 0,  # committed at 0: the same
    TP("subscriber.ready", 2): 7,  # aiokafka seeks this one itself
    TP("app-ledger-email-changelog", 0): None,  # recovery's business
}


async def test_partitions_aiokafka_does_not_rewind_are_rewound() -> None:
    kafka = FakeKafkaConsumer()
    await rewind_uncommitted(kafka, COMMITTED, "earliest", {"app-ledger-email-changelog"})
    assert sorted(kafka.seeks) == [("subscriber.ready:0", 3), ("subscriber.ready:1", 0)]
    kafka = FakeKafkaConsumer()
    await rewind_uncommitted(kafka, COMMITTED, "latest", {"app-ledger-email-changelog"})
    assert kafka.seeks == [("subscriber.ready:1", 0)]


async def test_the_consumer_thread_s_seek_rewinds_them_on_its_thread() -> None:
    # AIOKafkaConsumerThread.seek_to_committed: aiokafka's seek, then the rewind, both run by the
    # consumer thread (call_thread); the committed offsets go back to Faust unchanged.
    kafka = FakeKafkaConsumer()
    on_thread: list[str] = []

    async def aiokafka_seek_to_committed() -> dict[TP, int | None]:
        return COMMITTED

    async def call_thread(fun: Any) -> Any:
        on_thread.append(fun.__name__)
        return await fun()

    kafka.seek_to_committed = aiokafka_seek_to_committed
    app = SimpleNamespace(
        conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
        tables=SimpleNamespace(changelog_topics={"app-ledger-email-changelog"}),
    )
    thread = SimpleNamespace(
        _ensure_consumer=lambda: kafka, consumer=SimpleNamespace(app=app), call_thread=call_thread
    )
    assert await seek_to_committed(thread) == COMMITTED
    assert on_thread == ["seek"]
    assert sorted(kafka.seeks) == [("subscriber.ready:0", 3), ("subscriber.ready:1", 0)]


async def test_records_fetched_before_a_rebalance_seek_are_not_handed_on_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The seek resets Faust's read offsets to the committed ones; a stale record handed on after it
    # moved the read offset past records read again from there, which were dropped as already read.
    c, _ = await after_a_rebalance(10, monkeypatch)

    async def sought_while_handing_on(_consumer: Any, _timeout: float) -> Any:
        yield TP0, record(10)
        await perform_seek(c)  # another rebalance, while the drain loop was handing on offset 10
        for offset in (11, 12):
            yield TP0, record(offset)

    monkeypatch.setattr(fetch, "faust_getmany", sought_while_handing_on)
    assert await fetch_all(getmany(c, 1.0)) == [10]

    async def read_again(_consumer: Any, _timeout: float) -> Any:
        for offset in (10, 11, 12):
            yield TP0, record(offset)

    monkeypatch.setattr(fetch, "faust_getmany", read_again)
    assert await fetch_all(getmany(c, 1.0)) == [10, 11, 12]


async def test_a_rebalance_seek_starts_the_records_of_what_was_fetched_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, fetched = await after_a_rebalance(10, monkeypatch)
    kept = tracking(c)
    assert kept.handed_on_to == {TP0: 10}  # aiokafka's position after the seek
    kept.fetched_from[TP0] = 3
    kept.sought_back[TP0] = (3, 0.0)
    seeks = kept.seeks_done
    await perform_seek(c)
    assert kept.fetched_from == {} and kept.sought_back == {}
    assert kept.seeks_done == seeks + 1 and not kept.seeking
