"""Fix 4 (gaps.py): only offsets the log does not have count as gaps; a jump Faust makes itself is a
hole, read again by fix 3."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from stream_app.runtime.faust_patches import gaps
from stream_app.runtime.faust_patches.commit import new_offset
from stream_app.runtime.faust_patches.gaps import add_gap, getall, note_fetched

from .fakes import TP0, ack, consumer, original, settle


def test_offsets_the_log_does_not_have_count_as_acked() -> None:
    c = consumer(committed=10, acked=[10, 11, 14])
    note_fetched(TP0, 10, [10, 11, 14], 15)  # 12 and 13 were stepped over (e.g. transaction markers)
    assert new_offset(c, TP0) == 15
    assert gaps.ABSENT[TP0] == []  # forgotten once committed past


async def test_a_jump_faust_makes_itself_is_not_a_gap_but_a_hole_read_again() -> None:
    # The chaos test's loss: 119 was fetched but Faust's drain loop handed on 118 and then 120; its
    # gap guess (119..120) made the commit skip 119, which no agent ever saw.
    c = consumer(committed=118, acked=[118])
    note_fetched(TP0, 118, [118, 119, 120], 121)
    await add_gap(c, TP0, 119, 120)
    ack(c, 120)
    assert new_offset(c, TP0) == 119
    c._committed_offset[TP0] = 119
    assert new_offset(c, TP0) is None
    await settle()
    assert c.seeks == [(TP0, 119)]


async def test_faust_s_own_gap_commits_past_a_record_no_agent_saw() -> None:
    # What the patch changes (and the upstream reproducer): the same jump, with Faust's own
    # `_add_gap` and `_new_offset`: 119 counts as done and the commit passes it.
    c = consumer(committed=118, acked=[118])
    await original(Consumer, "_add_gap")(c, TP0, 119, 120)
    ack(c, 120)
    assert original(Consumer, "_new_offset")(c, TP0) == 121


def test_a_fetched_chunk_notes_what_it_stepped_over(monkeypatch: pytest.MonkeyPatch) -> None:
    tp = TP("packet.drawn", 7)
    state = SimpleNamespace(position=50, has_valid_position=True)
    assignment = SimpleNamespace(state_value=lambda _tp: state)
    records = [SimpleNamespace(offset=o) for o in (52, 53, 55)]
    result = SimpleNamespace(_topic_partition=tp, _assignment=assignment)

    def fetch(_result: Any, _max: int | None = None) -> list[Any]:
        state.position = 57  # 56: the marker that ended the producer's transaction
        return records

    monkeypatch.setattr(gaps, "aiokafka_getall", fetch)
    assert getall(result) == records
    assert gaps.absent_between(tp, 0, 100) == [(50, 52), (54, 55), (56, 57)]
    assert gaps.absent_between(tp, 51, 55) == [(51, 52), (54, 55)]
    note_fetched(tp, 57, [57, 58], 59)  # a chunk with nothing stepped over adds nothing
    assert len(gaps.ABSENT[tp]) == 3


def test_a_changelog_chunk_notes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Changelogs are compacted (full of stepped-over offsets) and never committed by Faust.
    tp = TP("app-ledger-email-changelog", 0)
    state = SimpleNamespace(position=0, has_valid_position=True)
    result = SimpleNamespace(_topic_partition=tp, _assignment=SimpleNamespace(state_value=lambda _tp: state))

    def fetch(_result: Any, _max: int | None = None) -> list[Any]:
        state.position = 100
        return [SimpleNamespace(offset=99)]

    monkeypatch.setattr(gaps, "aiokafka_getall", fetch)
    getall(result)
    assert tp not in gaps.ABSENT
