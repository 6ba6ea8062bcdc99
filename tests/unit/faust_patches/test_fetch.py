"""fetch.py: the bookkeeping `getmany` does for fixes 3 and 5 (fix 2's part is in test_seek.py)."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.runtime.faust_patches import fetch
from stream_app.runtime.faust_patches.commit import new_offset
from stream_app.runtime.faust_patches.fetch import getmany
from stream_app.runtime.faust_patches.state import tracking

from .fakes import TP0, consumer, fetch_all, record, settle


def faust_yields(*offsets: int) -> Any:
    async def getmany_of_faust(_consumer: Any, _timeout: float) -> Any:
        for offset in offsets:
            yield TP0, record(offset)

    return getmany_of_faust


async def test_after_a_seek_back_the_rest_of_a_batch_fetched_before_it_is_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen in a chaos run: one hole needed three seeks, because records of a batch fetched before the
    # seek were handed on after it and moved Faust's read offset past the hole again.
    c = consumer(committed=40, acked=[43, 44])
    assert new_offset(c, TP0) is None
    await settle()
    monkeypatch.setattr(fetch, "faust_getmany", faust_yields(50, 51, 40, 41, 42, 52))
    assert await fetch_all(getmany(c, 1.0)) == [40, 41, 42, 52]


async def test_the_lowest_offset_fetched_and_the_mark_of_what_went_on_are_noted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = consumer(committed=None, acked=[])
    c._read_offset[TP0] = 7  # the drain loop drops 5 and 6 as already read, hands on 7 and 8
    monkeypatch.setattr(fetch, "faust_getmany", faust_yields(5, 6, 7, 8))
    assert await fetch_all(getmany(c, 1.0)) == [5, 6, 7, 8]
    kept = tracking(c)
    assert kept.fetched_from == {TP0: 5}  # fix 3: where to resume, nothing being committed
    assert kept.handed_on_to == {TP0: 9}  # fix 5: the offset after the last record handed on
