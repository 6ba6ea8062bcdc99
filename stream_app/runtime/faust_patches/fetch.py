"""The fetch, `Consumer.getmany` (Faust): the bookkeeping of fixes 2, 3 and 5 around each record.

Faust's `getmany` yields the records of a fetch and checks only the consumer generation and the flow
between them; it keeps no record of what it fetched or handed on. Here, around Faust's own
`getmany`: before fetching it runs the checks of fixes 5 and 7 (`undelivered.py`, `stall.py`); it
notes per partition the lowest offset fetched (fix 3: where to resume when nothing was committed)
and the offset after the last record the drain loop will hand on (fix 5); after a seek back (fix 3)
it holds back the rest of a batch fetched before that seek, and after a rebalance's seek (fix 2) it
stops handing on the batch it was in, since either would move Faust's read offset past records read
again. Tests: `tests/unit/faust_patches/test_fetch.py`
(`test_after_a_seek_back_the_rest_of_a_batch_fetched_before_it_is_held_back`) and `test_seek.py`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import cast

from faust.transport.consumer import Consumer
from faust.types import TP

from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import ConsumerLike, MessageLike
from stream_app.runtime.faust_patches.undelivered import find_undelivered

# Faust's own, called by `getmany`.
# (cast: Faust types it for its Consumer, which is what `consumer` is at run time.)
faust_getmany = cast(Callable[[ConsumerLike, float], AsyncIterator[tuple[TP, MessageLike]]], Consumer.getmany)


async def getmany(consumer: ConsumerLike, timeout: float) -> AsyncIterator[tuple[TP, MessageLike]]:
    """Consumer.getmany, noting per partition the lowest offset fetched (fix 3) and the offset after
    the last record the drain loop hands on (fix 5), which it compares with aiokafka's position
    before fetching again.

    After a seek back (fix 3) it also holds back the rest of a batch fetched before the seek: handed
    on, those records would move Faust's read offset past the hole again, and the records read from
    the hole would then be dropped as already read. They come again after the hole.
    """
    find_undelivered(consumer)
    kept = tracking(consumer)
    fetched_from, handed_on_to = kept.fetched_from, kept.handed_on_to
    sought_back, read_offset = kept.sought_back, consumer._read_offset
    fetched_in: int | None = None  # the seek epoch these records were fetched in
    async for tp, message in faust_getmany(consumer, timeout):
        if fetched_in is None:
            fetched_in = kept.seeks_done
        elif kept.seeks_done != fetched_in:
            # A rebalance's seek came while the drain loop handed these on: it reset the read offsets
            # to the committed ones, and a stale record handed on now would move them past records
            # read again from there, which were then dropped as already read. Nothing is lost by
            # stopping: the seek reads them all again.
            break
        offset = message.offset
        if sought_back and tp in sought_back:
            target, until = sought_back[tp]
            if offset > target and time.monotonic() < until:
                continue
            del sought_back[tp]
        if offset < fetched_from.get(tp, offset + 1):
            fetched_from[tp] = offset
        # The drain loop's own rule: it hands on a record at or after its read offset, drops others.
        read = read_offset.get(tp)
        if read is None or offset >= read:
            handed_on_to[tp] = offset + 1
        yield tp, message
