"""Fix 1, the offset commit: `Consumer._new_offset` (Faust), which also runs the checks of fixes 3 and 4.

Faust commits the end of the first run of consecutive acked offsets; its guard against a hole at the
head of that run compares with the committed offset as if it were the last offset processed, but
the committed offset is the next one to read, so exactly one unacked record is let through (16
committed, 16 still in a sender's retry loop, 17-29 acked: Faust commits 30, and record 16 is lost
if the worker dies); the guard is skipped too when the committed offset is 0 or unknown. Here only a
run that starts at the committed offset is committed (when that is unknown, only a run no record
still being processed precedes); offsets the log lacks count as done (fix 4, `gaps.py`), and a hole
nothing is processing is read again (fix 3, `rewind.py`). Tests: `tests/unit/faust_patches/test_commit.py`
(`test_the_record_at_the_committed_offset_holds_the_commit_until_it_is_acked`, and
`test_faust_s_own_rule_commits_past_the_record_at_the_committed_offset` for Faust's behaviour).
"""

from __future__ import annotations

from faust.types import TP
from faust.utils.functional import consecutive_numbers

from stream_app.runtime.faust_patches import gaps
from stream_app.runtime.faust_patches.rewind import rewind_dropped
from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import ConsumerLike


def new_offset(consumer: ConsumerLike, tp: TP) -> int | None:
    """The offset that may be committed for `tp` now, or None (replaces Consumer._new_offset)."""
    acked = consumer._acked[tp]
    if not acked:
        return None
    committed = consumer._committed_offset[tp]
    start = committed if committed is not None else tracking(consumer).fetched_from.get(tp)
    # Offsets the log does not have (transaction markers, compaction) count as done (fix 4).
    index = consumer._acked_index[tp]
    for begin, end in gaps.absent_between(tp, min(acked) if start is None else start, max(acked)):
        missing = [offset for offset in range(begin, end) if offset not in index]
        acked.extend(missing)
        index.update(missing)
    acked.sort()
    if start is not None and acked[0] > start:
        # The record at `start` is still being processed, or Faust dropped it (fix 3).
        in_flight = any(start <= m.offset < acked[0] for m in consumer._unacked_messages if m.tp == tp)
        # Mid-rebalance (Faust commits on revoke, after clearing the agents' queues) the partition
        # is read again from the committed offset anyway: hold the commit, nothing to seek or warn.
        if not in_flight and not consumer.app.rebalancing:
            rewind_dropped(consumer, tp, start, acked[0])
        return None
    if committed is None:
        pending = [m.offset for m in consumer._unacked_messages if m.tp == tp]
        if pending and min(pending) < acked[0]:
            return None
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    index.difference_update(batch)
    gaps.forget_absent_below(tp, batch[-1] + 1)
    return int(batch[-1]) + 1
