"""Fix 5 (undelivered.py): records aiokafka handed out that the drain loop never handed on are read
again, even with nothing after them; records waiting in a busy stream are no alarm."""

from __future__ import annotations

import pytest

from stream_app.runtime.faust_patches.gaps import note_fetched

from .fakes import TP0, after_a_rebalance, settle


async def test_a_dropped_record_with_nothing_after_it_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Seen in a crash-window test under load: a restarted worker's batch record, the only record on
    # its partition, never redone. Nothing was acked after it, so fix 3 had nothing to see.
    c, fetched = await after_a_rebalance(None, monkeypatch)
    assert await fetched.drain(c, handed_out=(0,), yielded=()) == []  # Faust dropped it
    assert await fetched.drain(c) == []  # the next fetch finds it missing
    await settle()
    assert c.seeks == [(TP0, 0)]


async def test_records_handed_on_and_waiting_in_a_busy_stream_are_no_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Records handed on wait in a stream's buffer, neither acked nor in flight, while the stage is
    # busy: no reason to read them again. Nor is a transaction's marker, which has no record.
    c, fetched = await after_a_rebalance(10, monkeypatch)
    assert await fetched.drain(c, handed_out=(10, 11, 12)) == [10, 11, 12]
    note_fetched(TP0, 13, [13], 15)
    assert await fetched.drain(c, handed_out=(13,), up_to=15) == [13]
    assert await fetched.drain(c) == []
    await settle()
    assert c.seeks == []


async def test_records_the_drain_loop_drops_as_already_read_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, fetched = await after_a_rebalance(20, monkeypatch)
    c._read_offset[TP0] = 25  # moved past them by a stale record handed on after a seek
    await fetched.drain(c, handed_out=(20, 21))
    await fetched.drain(c)
    await settle()
    assert c.seeks == [(TP0, 20)]


async def test_records_dropped_mid_rebalance_are_left_to_its_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    c, fetched = await after_a_rebalance(None, monkeypatch)
    c.app.rebalancing = True
    await fetched.drain(c, handed_out=(0, 1), yielded=())
    await fetched.drain(c)
    await settle()
    assert c.seeks == []


async def test_offsets_the_log_lacks_are_skipped_in_offset_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # A seek back fetches a lower stretch again, so the ranges noted are not in offset order.
    c, fetched = await after_a_rebalance(10, monkeypatch)
    note_fetched(TP0, 11, [], 12)
    note_fetched(TP0, 10, [], 11)
    await fetched.drain(c, handed_out=(12,), yielded=(), up_to=13)  # markers at 10 and 11, 12 dropped
    await fetched.drain(c)
    await settle()
    assert c.seeks == [(TP0, 12)]
