"""Fix 2, the seek after a rebalance: `AIOKafkaConsumerThread.seek_to_committed` and `Consumer.perform_seek`.

Once a rebalance's recovery is done Faust rewinds every stream partition to its committed offset and
drops the records it fetched before; but aiokafka's `seek_to_committed` seeks only when the committed
offset is above 0, so a partition the group never committed (or committed at 0) is not rewound, and
the records fetched before the rebalance and dropped are never read again. Here such stream partitions
are rewound too (to 0, or to the log start when nothing was committed and the reset policy is
"earliest"; changelogs are left to Faust's recovery), and `perform_seek` starts the patches' own
records of what was fetched and handed on afresh and counts the seek, so that `getmany` (fetch.py)
and the drain loop (delivery.py) hand on nothing fetched before it. Tests:
`tests/unit/faust_patches/test_seek.py` (`test_partitions_aiokafka_does_not_rewind_are_rewound`,
`test_records_fetched_before_a_rebalance_seek_are_not_handed_on_after_it`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from faust.transport.consumer import Consumer
from faust.types import TP

from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import ConsumerLike, ConsumerThreadLike, KafkaConsumerLike
from stream_app.runtime.faust_patches.undelivered import positions

# Faust's own, called by `perform_seek`.
# (cast: Faust types it for its Consumer, which is what `consumer` is at run time.)
faust_perform_seek = cast(Callable[[ConsumerLike], Awaitable[None]], Consumer.perform_seek)


async def rewind_uncommitted(
    consumer: KafkaConsumerLike, committed: Mapping[TP, int | None], reset: str, changelogs: set[str]
) -> None:
    """Seek the stream partitions aiokafka's `seek_to_committed` left where they were.

    Positions come from a ListOffsets request and a plain `seek`: `seek_to_beginning` would wait for
    the fetcher to apply the reset, and the fetcher is held while Faust recovers its tables.
    """
    stream = {tp: offset for tp, offset in committed.items() if tp.topic not in changelogs}
    for tp, offset in stream.items():
        if offset == 0:
            consumer.seek(tp, 0)
    never = [tp for tp, offset in stream.items() if offset is None]
    # With "latest", a never-committed partition starts at the end anyway: nothing to rewind.
    if never and reset == "earliest":
        for tp, start in (await consumer.beginning_offsets(never)).items():
            consumer.seek(tp, start)


async def seek_to_committed(thread: ConsumerThreadLike) -> Mapping[TP, int | None]:
    """AIOKafkaConsumerThread.seek_to_committed, rewinding every stream partition."""
    consumer = thread._ensure_consumer()

    async def seek() -> Mapping[TP, int | None]:
        committed = await consumer.seek_to_committed()
        app = thread.consumer.app
        await rewind_uncommitted(
            consumer, committed, app.conf.consumer_auto_offset_reset, set(app.tables.changelog_topics)
        )
        return committed

    return await thread.call_thread(seek)


async def perform_seek(consumer: ConsumerLike) -> None:
    """Consumer.perform_seek, starting the records of what was fetched and handed on afresh."""
    kept = tracking(consumer)
    kept.fetched_from.clear()
    kept.handed_on_to.clear()
    kept.sought_back.clear()
    kept.seeking = True
    try:
        await faust_perform_seek(consumer)
        kept.handed_on_to.update(positions(consumer))
    finally:
        kept.seeking = False
        kept.seeks_done += 1
