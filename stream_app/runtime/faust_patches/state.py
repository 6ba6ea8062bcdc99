"""What the patches keep per Faust consumer, beside Faust's own bookkeeping.

Faust keeps, per partition, the records acked, in flight and read; it does not keep what was fetched
or handed on since a seek, which is what the checks of fixes 3, 5 and 7 compare against (see
docs/faust-patches.md). That is kept here, on the consumer object itself, so each consumer (tests
build many) has its own and it goes with the consumer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from faust.types import TP

from stream_app.runtime.faust_patches.surface import ConsumerLike

_KEY = "_stream_app_tracking"


@dataclass
class Tracking:
    """What the patches keep per Faust consumer. The first three start afresh at a rebalance's seek."""

    # The lowest offset fetched per partition (fix 3): where to resume when nothing was committed.
    fetched_from: dict[TP, int] = field(default_factory=dict)
    # The offset after the last record the drain loop handed on to the streams (fix 5).
    handed_on_to: dict[TP, int] = field(default_factory=dict)
    # Partitions sought back: the offset sought, and until when stale records are held back (fix 3).
    sought_back: dict[TP, tuple[int, float]] = field(default_factory=dict)
    # The last seek back per partition: its offset and when, for REWIND_HOLD_SECONDS.
    rewound: dict[TP, tuple[int, float]] = field(default_factory=dict)
    # Seeks back under way, referenced until done.
    seeks: set[asyncio.Future[None]] = field(default_factory=set)
    seeking: bool = False  # a rebalance's seek to the committed offsets is under way
    seeks_done: int = 0  # rebalance seeks so far: records fetched before one are stale after it (fix 2)
    next_check: float = 0.0  # of the positions (fix 5)
    # Per partition, since when it has had records past its committed offset and none moving (fix 7).
    idle_since: dict[TP, float] = field(default_factory=dict)


def tracking(consumer: ConsumerLike) -> Tracking:
    """The consumer's Tracking, made on first use."""
    attributes = vars(consumer)
    found = attributes.get(_KEY)
    if not isinstance(found, Tracking):
        found = attributes[_KEY] = Tracking()
    return found
