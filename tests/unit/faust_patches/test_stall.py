"""Fix 7 (stall.py): a partition with lag and nothing moving is read again from its committed offset."""

from __future__ import annotations

import pytest

from stream_app.runtime.faust_patches import stall
from stream_app.runtime.faust_patches.gaps import note_fetched
from stream_app.runtime.faust_patches.stall import find_stalled

from .fakes import TP0, after_a_rebalance, consumer, queue_of, settle


async def test_a_partition_with_lag_and_nothing_moving_is_read_again_from_its_committed_offset() -> None:
    # Seen after a restart mid-burst: committed 21, aiokafka's position 40, no agent holding or
    # waiting for any of 21..39, the drain loop's mark at 40 too (fix 5 saw nothing).
    c = consumer(committed=21, acked=[])
    find_stalled(c, {TP0: 40}, now=100.0)
    find_stalled(c, {TP0: 40}, now=100.0 + stall.STALL_SECONDS - 0.1)
    await settle()
    assert c.seeks == []  # not yet: a quiet moment is no stall
    find_stalled(c, {TP0: 40}, now=100.0 + stall.STALL_SECONDS)
    await settle()
    assert c.seeks == [(TP0, 21)]


@pytest.mark.parametrize(
    "busy",
    ["a record in flight", "a record acked, not yet committed", "records waiting in a stream's queue"],
)
async def test_a_partition_whose_records_are_on_their_way_is_not_stalled(busy: str) -> None:
    c = consumer(
        committed=21,
        acked=[21] if busy.startswith("a record acked") else [],
        in_flight=(21,) if busy == "a record in flight" else (),
    )
    if busy.startswith("records waiting"):
        c.app.topics._topic_name_index = {TP0.topic: [queue_of(3)]}
    for now in (100.0, 100.0 + 2 * stall.STALL_SECONDS):
        find_stalled(c, {TP0: 40}, now=now)
    await settle()
    assert c.seeks == []


async def test_only_offsets_the_log_lacks_past_the_committed_offset_are_no_stall() -> None:
    c = consumer(committed=21, acked=[])
    note_fetched(TP0, 21, [], 22)  # a transaction's marker, no record
    for now in (100.0, 100.0 + 2 * stall.STALL_SECONDS):
        find_stalled(c, {TP0: 22}, now=now)
    await settle()
    assert c.seeks == []


async def test_the_drain_check_runs_the_stall_check(monkeypatch: pytest.MonkeyPatch) -> None:
    # Wired in: every pass of the drain check (fix 5, between two fetches) looks for a stall too.
    monkeypatch.setattr(stall, "STALL_SECONDS", 0.0)
    c, fetched = await after_a_rebalance(21, monkeypatch)
    await fetched.drain(c, handed_out=(21, 22))  # handed on, and then no agent ever got them
    await fetched.drain(c)
    await settle()
    assert c.seeks == [(TP0, 21)]
