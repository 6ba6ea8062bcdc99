"""The offset-commit fix: a record still being processed is never committed past."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree

from stream_app.faust_fixes import new_offset

TP0 = TP("subscriber.ready", 1)


def consumer(committed: int | None, acked: list[int], in_flight: tuple[int, ...] = ()) -> Any:
    return SimpleNamespace(
        _acked=defaultdict(list, {TP0: list(acked)}),
        _acked_index=defaultdict(set, {TP0: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
        _unacked_messages=[SimpleNamespace(tp=TP0, offset=o) for o in in_flight],
    )


def ack(c: Any, offset: int) -> None:
    c._acked[TP0].append(offset)
    c._acked_index[TP0].add(offset)


def test_the_record_at_the_committed_offset_holds_the_commit_until_it_is_acked() -> None:
    c = consumer(committed=16, acked=list(range(17, 30)), in_flight=(16,))
    assert new_offset(c, TP0) is None  # Faust 0.15.3 answers 30 here and loses record 16
    ack(c, 16)
    assert new_offset(c, TP0) == 30


def test_a_run_that_starts_at_the_committed_offset_is_committed() -> None:
    c = consumer(committed=16, acked=[16, 17, 18, 20])
    assert new_offset(c, TP0) == 19
    assert c._acked[TP0] == [20]


def test_with_no_committed_offset_a_record_in_flight_before_the_run_holds_it() -> None:
    c = consumer(committed=None, acked=[1, 2, 3], in_flight=(0,))
    assert new_offset(c, TP0) is None
    assert new_offset(consumer(committed=0, acked=[1, 2], in_flight=(0,)), TP0) is None
    assert new_offset(consumer(committed=None, acked=[5, 6], in_flight=(9,)), TP0) == 7


def test_offsets_the_broker_skipped_count_as_acked() -> None:
    c = consumer(committed=10, acked=[10, 11, 14])
    c._gap[TP0].addi(12, 14)  # 12 and 13 never arrived (e.g. transaction markers)
    assert new_offset(c, TP0) == 15


def test_the_app_runs_with_the_fix() -> None:
    from faust.transport.drivers.aiokafka import Consumer

    import stream_app.app  # noqa: F401  (importing the app applies the fix)

    assert Consumer._new_offset is new_offset
