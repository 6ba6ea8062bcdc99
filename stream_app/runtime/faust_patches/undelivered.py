"""Fix 5, records dropped with nothing after them: checked by `getmany` (fetch.py) between two fetches.

Every jump Faust makes happens between aiokafka handing a record out (its position moves past it)
and the drain loop handing it on to the streams; fix 3 sees such a dropped record only through acked
records above it, so one that was the last on its partition waited for the next record or a
rebalance. Faust does not compare the two; here `getmany` notes per partition the offset after the
last record the drain loop will hand on, and before each fetch (at most every
UNDELIVERED_CHECK_SECONDS) a position beyond that mark, over offsets the log has, is read again
(`rewind.rewind_dropped`); records waiting in a stream's buffer were handed on, so a busy stage is no
false alarm. The same pass runs the stall check (fix 7, `stall.py`). Tests:
`tests/unit/faust_patches/test_undelivered.py` (`test_a_dropped_record_with_nothing_after_it_is_read_again`).
"""

from __future__ import annotations

import time

from faust.types import TP

from stream_app.runtime.faust_patches.gaps import first_present
from stream_app.runtime.faust_patches.rewind import rewind_dropped
from stream_app.runtime.faust_patches.stall import find_stalled
from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import ConsumerLike

# How often, at most, the drain loop compares aiokafka's positions with what it handed on.
UNDELIVERED_CHECK_SECONDS = 1.0


def positions(consumer: ConsumerLike) -> dict[TP, int]:
    """aiokafka's position (the next offset it hands out) of every assigned stream partition."""
    subscription = consumer._thread._ensure_consumer()._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return {}
    found: dict[TP, int] = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position and not tp.topic.endswith("-changelog"):
            found[TP(tp.topic, tp.partition)] = state.position
    return found


def find_undelivered(consumer: ConsumerLike) -> None:
    """Read again records aiokafka handed out that the drain loop never handed on.

    Called between two fetches, when every record of the last one went on or was dropped.
    """
    kept = tracking(consumer)
    if consumer.app.rebalancing or kept.seeking:
        return  # the rebalance's seek reads every partition again from its committed offset
    now = time.monotonic()
    if now < kept.next_check:
        return
    kept.next_check = now + UNDELIVERED_CHECK_SECONDS
    found = positions(consumer)
    for tp, position in found.items():
        start = kept.handed_on_to.get(tp)
        if start is None or position <= start:
            continue
        if tp in kept.sought_back and now < kept.sought_back[tp][1]:
            continue  # a seek back is under way; what it held back comes again
        start = first_present(tp, start, position)
        if start < position:
            rewind_dropped(consumer, tp, start, position)
    find_stalled(consumer, found, now)
