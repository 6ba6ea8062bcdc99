"""Fix 7, a partition that stopped moving: checked by `getmany` (fetch.py) between two fetches.

After a rebalance that came while the senders were busy for seconds, Faust left a partition with
records past its committed offset, aiokafka's position and the drain loop's mark (fix 5) both past
them, and no agent holding, acking or waiting for any of them: nothing read them again before the
next rebalance, and fixes 3 and 5 saw nothing, since no record was acked above them and none was
handed out without going on. Faust has no such check; here a partition in that state (lag, nothing
in flight, acked or queued) for STALL_SECONDS is read again from its committed offset
(`rewind.rewind_dropped`). Tests: `tests/unit/faust_patches/test_stall.py`
(`test_a_partition_with_lag_and_nothing_moving_is_read_again_from_its_committed_offset`).
"""

from __future__ import annotations

from collections.abc import Mapping

from faust.types import TP

from stream_app.runtime.faust_patches.gaps import first_present
from stream_app.runtime.faust_patches.rewind import rewind_dropped
from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import ConsumerLike

# How long a partition may have records past its committed offset with none moving.
STALL_SECONDS = 10.0


def find_stalled(consumer: ConsumerLike, positions: Mapping[TP, int], now: float) -> None:
    """Read again from the committed offset a partition that stopped moving.

    Records between the committed offset and aiokafka's position, none of them in flight in an
    agent, acked, or waiting in a stream's queue, for STALL_SECONDS: they went on to no agent. Seen
    after a rebalance that came while senders were busy for seconds (MC slow, a crashed worker's
    sends being settled): the position and the drain loop's mark both stood past records no agent
    ever got, so fixes 3 and 5 saw nothing, and the partition waited for the next rebalance.
    """
    idle = tracking(consumer).idle_since
    waiting = topics_waiting(consumer)
    busy = {m.tp for m in consumer._unacked_messages if not getattr(m, "acked", False)}
    for tp, position in positions.items():
        committed = consumer._committed_offset.get(tp)
        stalled = (
            committed is not None
            and first_present(tp, committed, position) < position
            and tp not in busy
            and not consumer._acked.get(tp)
            and tp.topic not in waiting
        )
        if committed is None or not stalled:
            idle.pop(tp, None)
        elif now - idle.setdefault(tp, now) >= STALL_SECONDS:
            del idle[tp]
            rewind_dropped(consumer, tp, first_present(tp, committed, position), position)


def topics_waiting(consumer: ConsumerLike) -> set[str]:
    """Topics with records handed on and still waiting in a stream's queue."""
    index = consumer.app.topics._topic_name_index
    return {topic for topic, channels in index.items() if any(chan.queue.qsize() for chan in channels)}
