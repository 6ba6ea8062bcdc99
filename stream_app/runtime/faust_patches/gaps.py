"""Fix 4, holes taken for gaps: `Consumer._add_gap` (Faust) and `FetchResult.getall` (aiokafka).

Faust's drain loop takes any jump between two records it hands on for a "gap" (`_add_gap`) and its
commit counts a gap as done; meant for offsets the log does not have (transaction markers,
compaction), it also covers the jumps Faust makes itself (records fetched and dropped at a generation
change or flow stop, records skipped by a seek), so those records are committed past unread. Here
`_add_gap` records nothing; instead `getall` notes, per fetched chunk, exactly the offsets aiokafka
stepped over (a chunk starts at the partition's position and skips only what the log lacks), and the
commit (`commit.new_offset`) counts only those as done; any other jump is a hole, read again by fix 3.
Tests: `tests/unit/faust_patches/test_gaps.py` (`test_a_jump_faust_makes_itself_is_not_a_gap...`,
and `test_faust_s_own_gap_commits_past_a_record_no_agent_saw` for Faust's behaviour).
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.consumer.fetcher import FetchResult
from faust.types import TP

from stream_app.runtime.faust_patches.surface import ConsumerLike, FetchResultLike, MessageLike

# Per partition, the offset ranges aiokafka stepped over because the log does not have them: noted as
# chunks are fetched, forgotten once committed past, and bounded all the same.
ABSENT_KEPT = 10_000
ABSENT: dict[tuple[str, int], list[tuple[int, int]]] = {}

# aiokafka's own, called by `getall`.
aiokafka_getall: Callable[[FetchResultLike, int | None], list[MessageLike]] = FetchResult.getall


def note_fetched(tp: tuple[str, int], position: int, offsets: list[int], after: int) -> None:
    """Note what a chunk fetched from `position` up to `after` stepped over: the log lacks it."""
    if len(offsets) == after - position:
        return  # nothing stepped over: the usual case on our topics
    found: list[tuple[int, int]] = []
    expected = position
    for offset in [*offsets, after]:
        if offset > expected:
            found.append((expected, offset))
        expected = offset + 1
    ABSENT[tp] = (ABSENT.get(tp, []) + found)[-ABSENT_KEPT:]


def note_deleted(tp: tuple[str, int], begin: int, end: int) -> None:
    """Note [begin, end) as absent: retention deleted it before it could be read again (fix 3)."""
    ABSENT[tp] = [*ABSENT.get(tp, []), (begin, end)]


def absent_between(tp: tuple[str, int], begin: int, end: int) -> list[tuple[int, int]]:
    """The parts of [begin, end) the log does not have, as far as this worker fetched it."""
    return [(max(b, begin), min(e, end)) for b, e in ABSENT.get(tp, ()) if b < end and e > begin]


def forget_absent_below(tp: tuple[str, int], offset: int) -> None:
    kept = ABSENT.get(tp)
    if kept and kept[0][1] <= offset:
        ABSENT[tp] = [(b, e) for b, e in kept if e > offset]


def first_present(tp: TP, start: int, position: int) -> int:
    """The first offset in [start, position) the log has, or `position`."""
    # In offset order: ranges are noted as fetched, and a seek back fetches lower ones again.
    for begin, end in sorted(absent_between(tp, start, position)):
        if begin <= start:
            start = max(start, end)
    return start


def getall(result: FetchResultLike, max_records: int | None = None) -> list[MessageLike]:
    """FetchResult.getall, noting what the chunk stepped over (replaces aiokafka's)."""
    tp = result._topic_partition
    state = result._assignment.state_value(tp)
    before = state.position if state is not None and state.has_valid_position else None
    records = aiokafka_getall(result, max_records)
    # Changelogs are compacted (full of stepped-over offsets) and never committed by Faust.
    if (
        before is not None
        and state is not None
        and state.has_valid_position
        and not tp.topic.endswith("-changelog")
    ):
        # The position after the chunk also moved past what the log lacks at its end (for example
        # the marker that ends a transaction).
        after = state.position
        if after > before:
            note_fetched(tp, before, [r.offset for r in records], after)
    return records


async def add_gap(consumer: ConsumerLike, tp: TP, offset_from: int, offset_to: int) -> None:
    """Consumer._add_gap: Faust's guess of a gap is not taken; `commit.new_offset` asks the log."""
