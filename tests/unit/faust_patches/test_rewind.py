"""Fix 3 (rewind.py, and its check in commit.py): a record Faust fetched but never handed to an agent
is read again, as often as it takes; only records retention deleted are passed."""

from __future__ import annotations

import pytest
from faust.types import TP

from stream_app.ops import metrics
from stream_app.runtime.faust_patches import rewind
from stream_app.runtime.faust_patches.commit import new_offset
from stream_app.runtime.faust_patches.state import tracking

from .fakes import TP0, ack, consumer, settle


async def test_a_hole_nothing_is_processing_is_read_again_not_committed_past() -> None:
    read_again = metrics.RECORDS_READ_AGAIN.labels(topic=TP0.topic)
    before = read_again._value.get()
    c = consumer(committed=16, acked=list(range(17, 30)))  # 16 fetched, never reached an agent
    assert new_offset(c, TP0) is None
    assert new_offset(c, TP0) is None  # the next commit round, before the re-read: no second seek
    await settle()
    assert c.seeks == [(TP0, 16)]
    assert read_again._value.get() == before + 1  # /metrics: stream_app_records_read_again_total


async def test_during_a_rebalance_a_hole_only_holds_the_commit() -> None:
    # Faust commits on revoke after clearing the agents' queues; the partition is read again from
    # its committed offset once the rebalance is over, so no seek and no warning now.
    c = consumer(committed=31, acked=list(range(119, 130)))
    c.app.rebalancing = True
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == []
    c.app.rebalancing = False
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == [(TP0, 31)]


async def test_with_no_committed_offset_the_hole_is_measured_from_the_first_fetched() -> None:
    c = consumer(committed=None, acked=[5, 6])
    tracking(c).fetched_from[TP0] = 3  # 3 and 4 were fetched and dropped
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == [(TP0, 3)]
    c = consumer(committed=None, acked=[5, 6], in_flight=(4,))
    tracking(c).fetched_from[TP0] = 4
    assert new_offset(c, TP0) is None  # 4 is being processed: wait for it
    await settle()
    assert c.seeks == []


async def test_a_hole_is_read_again_as_often_as_it_takes_and_passed_only_once_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rewind, "REWIND_HOLD_SECONDS", 0.0)
    c = consumer(committed=40, acked=[43, 44])  # a seek can be undone by a fetch under way
    for _ in range(8):
        assert new_offset(c, TP0) is None
        await settle()
    assert c.seeks == [(TP0, 40)] * 8  # never given up while the log has the records

    given_up = metrics.RECORDS_GIVEN_UP.labels(topic=TP0.topic)
    before = given_up._value.get()
    c = consumer(committed=40, acked=[43, 44], log_start=42)  # retention deleted 40 and 41 meanwhile
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == [(TP0, 42)]
    assert given_up._value.get() == before + 2  # /metrics: stream_app_records_given_up_total
    ack(c, 42)  # read again from the log's start
    assert new_offset(c, TP0) == 45


async def test_a_failed_look_up_of_the_log_start_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rewind, "REWIND_HOLD_SECONDS", 0.0)
    c = consumer(committed=40, acked=[43, 44])
    answer = c.earliest_offsets

    async def broker_away(*tps: TP) -> dict[TP, int]:
        raise ConnectionError("broker away")

    c.earliest_offsets = broker_away
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == []  # no seek on a guess
    c.earliest_offsets = answer
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == [(TP0, 40)]


async def test_a_seek_back_marks_the_partition_for_the_fetch_and_the_drain_check() -> None:
    c = consumer(committed=40, acked=[43, 44])
    rewind.rewind_dropped(c, TP0, 40, 43)
    await settle()
    kept = tracking(c)
    assert kept.sought_back[TP0][0] == 40  # getmany holds back stale records above it (test_fetch.py)
    assert kept.handed_on_to[TP0] == 40  # the drain check (fix 5) starts from the seek
    assert not kept.seeks  # done, and no longer referenced
