"""Fix 1 (commit.py): a record still being processed is never committed past."""

from __future__ import annotations

from faust.transport.consumer import Consumer

from stream_app.runtime.faust_patches.commit import new_offset

from .fakes import TP0, ack, consumer, original


def test_the_record_at_the_committed_offset_holds_the_commit_until_it_is_acked() -> None:
    c = consumer(committed=16, acked=list(range(17, 30)), in_flight=(16,))
    assert new_offset(c, TP0) is None
    ack(c, 16)
    assert new_offset(c, TP0) == 30


def test_faust_s_own_rule_commits_past_the_record_at_the_committed_offset() -> None:
    # What the patch changes (and the upstream reproducer): 16 is still in a sender's retry loop, yet
    # Faust commits 30; a worker killed now never reads 16 again. Fails once Faust fixes its rule.
    c = consumer(committed=16, acked=list(range(17, 30)), in_flight=(16,))
    assert original(Consumer, "_new_offset")(c, TP0) == 30


def test_a_run_that_starts_at_the_committed_offset_is_committed() -> None:
    c = consumer(committed=16, acked=[16, 17, 18, 20])
    assert new_offset(c, TP0) == 19
    assert c._acked[TP0] == [20]


def test_with_no_committed_offset_a_record_in_flight_before_the_run_holds_it() -> None:
    c = consumer(committed=None, acked=[1, 2, 3], in_flight=(0,))
    assert new_offset(c, TP0) is None
    assert new_offset(consumer(committed=0, acked=[1, 2], in_flight=(0,)), TP0) is None
    assert new_offset(consumer(committed=None, acked=[5, 6], in_flight=(9,)), TP0) == 7


def test_nothing_acked_nothing_to_commit() -> None:
    assert new_offset(consumer(committed=16, acked=[]), TP0) is None
