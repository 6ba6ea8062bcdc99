"""A fix to faust-streaming 0.15.3's offset commit, applied when the app module is imported.

Faust commits the end of the first run of consecutive acked offsets. Its guard against a hole at the
head of that run compares with the committed offset as if it were the last offset processed, but
since Faust commits `last + 1` (the next offset to read) the guard lets exactly one unacked record
through: with 16 committed (0-15 done), 16 still in a sender's retry loop and 17-29 acked, it
commits 30. If the worker then dies, record 16 is never read again. The chaos test caught it as a
missing SMS (the record at the committed offset of a `subscriber.ready` partition, held by
429 retries, while the email sender acked the records after it). The guard is also skipped when the
committed offset is 0 or unknown, so a partition's very first record could be passed the same way.

The corrected rule: commit only a run that starts at the committed offset, and when that offset is
unknown, only a run that no record still being processed precedes.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers


def new_offset(consumer: Any, tp: TP) -> int | None:
    """The offset that may be committed for `tp` now, or None (Consumer._new_offset, fixed)."""
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = consumer._gap[tp]
    if gap_for_tp:
        # Offsets the broker never delivered (compaction, transaction markers) count as acked.
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if candidates:
            filled = [offset for entry in candidates for offset in range(entry.begin, entry.end)]
            acked.extend(filled)
            gap_for_tp.chop(0, max(filled[-1], max_offset + 1))
    acked.sort()
    committed = consumer._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        return None  # the record at the committed offset is still being processed
    if committed is None:
        in_flight = [m.offset for m in consumer._unacked_messages if m.tp == tp]
        if in_flight and min(in_flight) < acked[0]:
            return None
    batch = next(consecutive_numbers(acked))
    acked[: len(batch)] = []
    consumer._acked_index[tp].difference_update(batch)
    return int(batch[-1]) + 1


def apply() -> None:
    Consumer._new_offset = new_offset  # type: ignore[method-assign, assignment]
