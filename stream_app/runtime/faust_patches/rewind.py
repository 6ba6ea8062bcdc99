"""Fix 3, records Faust fetched but never handed to an agent: the seek back the checks share.

Faust can fetch a record and never hand it to an agent (around the seek after a rebalance, at a
generation change or flow stop mid-batch); its read-offset filter then drops the record's re-read as
already seen, and nothing reads it again. Faust has no such seek back; here the three checks that
find such records (the commit's in `commit.py`, fix 3; the drain loop's in `undelivered.py`, fix 5;
the stall's in `stall.py`, fix 7) call `rewind_dropped`, which seeks the partition back to the first
record dropped (at most once per REWIND_HOLD_SECONDS for the same hole) and counts the records in
`stream_app_records_read_again_total`; records retention deleted meanwhile are passed with an ERROR
(`stream_app_records_given_up_total`). Tests: `tests/unit/faust_patches/test_rewind.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from faust.types import TP

from stream_app.ops import metrics
from stream_app.runtime.faust_patches import gaps
from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import ConsumerLike

log = logging.getLogger("stream_app.faust_patches")

# A partition sought back to a hole is not sought again for the same hole before this many seconds.
REWIND_HOLD_SECONDS = 5.0


def rewind_dropped(consumer: ConsumerLike, tp: TP, start: int, end: int) -> None:
    """Seek `tp` back to `start`: the records from there up to `end` (exclusive) were dropped."""
    kept = tracking(consumer)
    held = kept.rewound
    now = time.monotonic()
    last = held.get(tp)
    if last is not None and last[0] == start and now - last[1] < REWIND_HOLD_SECONDS:
        return
    held[tp] = (start, now)
    log.warning(
        "records %s..%s of %s:%s were fetched but never processed; reading them again",
        start,
        end - 1,
        tp.topic,
        tp.partition,
    )
    metrics.RECORDS_READ_AGAIN.labels(topic=tp.topic).inc(end - start)
    seek = asyncio.ensure_future(seek_back(consumer, tp, start))
    kept.seeks.add(seek)
    seek.add_done_callback(kept.seeks.discard)


async def seek_back(consumer: ConsumerLike, tp: TP, start: int) -> None:
    """Seek `tp` to `start`, or to the log's start if retention deleted the records meanwhile.

    Deleted records can never be read again: they are noted as absent, so the commit passes them,
    with an ERROR. Records that still exist are sought as often as it takes, never given up.
    """
    try:
        earliest = (await consumer.earliest_offsets(tp)).get(tp, 0)
    except Exception as exc:  # asked again once the hold (REWIND_HOLD_SECONDS) is over
        log.warning("could not look up the log start of %s:%s: %r", tp.topic, tp.partition, exc)
        return
    if earliest > start:
        log.error(
            "records %s..%s of %s:%s were deleted before they could be read again; skipping them",
            start,
            earliest - 1,
            tp.topic,
            tp.partition,
        )
        metrics.RECORDS_GIVEN_UP.labels(topic=tp.topic).inc(earliest - start)
        gaps.note_deleted(tp, start, earliest)
    target = max(start, earliest)
    # Before the seek: records handed on while it is under way would move the read offset too.
    kept = tracking(consumer)
    kept.sought_back[tp] = (target, time.monotonic() + REWIND_HOLD_SECONDS)
    kept.handed_on_to[tp] = target
    await consumer.seek(tp, target)
