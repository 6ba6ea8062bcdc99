"""Seven fixes to faust-streaming 0.15.3 (with aiokafka 0.14), applied when the app module is imported.

1. The offset commit (`new_offset`).

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

2. The seek after a rebalance (`seek_to_committed`). Faust rewinds every stream partition to its
committed offset once a rebalance's recovery is done, and drops the records it fetched before. But
aiokafka's `seek_to_committed` seeks only when the committed offset is above 0, so a partition the
group never committed (or committed at 0) is not rewound: records fetched before the rebalance and
dropped by Faust were never read again. Seen as one notification never sent by a worker that started
with notifications already waiting in a topic its group had not consumed before (about 1 start in 4
under load, tests/integration/test_stages.py). Here such partitions are rewound too: to 0, or to the
log start when nothing was committed (`consumer_auto_offset_reset` "earliest", our setting).
Changelog partitions are left to Faust's recovery, which positions them itself. Records of a fetch
made before that seek are not handed on after it (`getmany` stops there): Faust checks only the
generation and the flow, both unchanged once recovery is over, so such stale records moved the read
offsets the seek had just reset past the records read again from them, and those were dropped as
already read. For the same reason a delivery the seek interrupted does not move the read offset.

3. Records Faust fetched but never handed to an agent (`rewind_dropped`). Even after 2, a stress run
of that test (CPU hogs beside it) lost one record in about 1 of 10: the diagnostic log showed a
record yielded by `Consumer.getmany` right after the post-recovery seek that never reached the agent,
and its re-read after the rewind was dropped by Faust's read-offset filter as already seen. Rather
than chase each path inside Faust, the commit round checks what every such path leaves behind: a
partition whose acked records start above the position it must resume from (the committed offset, or
the lowest offset fetched since the last seek when nothing was committed) with no record below them
in flight. Agents take records of a partition in order from one queue, so that hole is a record that
will never be acked: the partition is sought back to the hole (at most once per 5 s) and the records
read again; the ledger and the dedupe tables absorb the repeats. During a rebalance the commit is only
held: Faust clears the agents' queues on revoke and reads every partition again from its committed
offset afterwards, so a seek (and its warning) would be noise.

4. Holes taken for gaps (`add_gap`). When two records Faust hands on are not consecutive, its drain
loop records the offsets between them as a "gap", and the commit counts a gap as done. That is meant
for offsets the log does not have (transaction markers, compaction), but Faust makes such jumps
itself: records it fetched and dropped (a generation change or flow stop mid-batch) and records
skipped by a seek. The chaos test lost one input record in 2 runs of 17 that way (a `packet.drawn`
partition committed 118 -> 119 -> 121, offset 119 never reached intake), and fix 3 cannot see it
because a gap looks acked. Faust's gap also includes the record being handed on. Here Faust's guess
is not taken; the commit counts as done only offsets aiokafka itself stepped over: each fetched
chunk starts at the partition's position and skips exactly the offsets the log does not have, so
those are noted as they are fetched (`note_fetched`). Any other jump is a hole, held and read again
by fix 3. Only a hole whose records retention deleted before they could be read again is passed,
with an ERROR: the log no longer has them either.

5. Records dropped with nothing after them (`find_undelivered`). Fix 3 sees a dropped record only
through acked records above it, so a dropped record that was the last on its partition waited for
the next record or a rebalance: seen as a batch record a restarted worker never redid (a crash-window
test, about 1 run in 8 under load). Every jump Faust makes happens between aiokafka handing a record
out (its position moves past it) and the drain loop handing it on to the streams, and our `getmany`
sees both ends: it notes per partition the offset after the last record the drain loop will hand on
(the drain loop's own rule), starting from the position a seek left. Between two fetches, a position
beyond that offset, over offsets the log has, is records aiokafka handed out that never went on: they
are read again, as in fix 3. Records waiting in a stream's buffer were handed on, so a busy stage
is no false alarm (the reason a check built on acks and the highwater, tried before, was reverted).

6. Turns of the event loop per record (`drain_messages`, `get_producer`). Faust's drain loop hands
every record to the streams through `wait_first(deliver, suspend_flow.wait())`: four tasks created
and three cancelled per record. And every record Faust sends (each table write's changelog record
too) first awaits `maybe_start_producer`, whose stampede guard sleeps three times. So each record
waits for several turns of a busy loop, and with the senders in the worker that, not the CPU, was the
limit of every Faust stage: at 20 new subscribers/s the worker used 65% of a core, the producer
buffer hit its limit of 100 (which stops the drain loop until it empties), and every hop (intents,
batches, subscriber.ready) lagged 1-3 s behind its topic; a new subscriber's draw-to-send took
5-7 s. Here a record is handed on directly whenever nothing on its way can block (flow not
suspended, producer buffer below its limit, no subscription change under way, room in every target
stream's queue): such a delivery never yields, so a rebalance cannot find it half done. Otherwise it
goes Faust's way, which a rebalance can interrupt. A send goes straight to the producer once it runs.

7. A partition that stopped moving (`find_stalled`). After a rebalance that came while the senders
were busy for seconds (a restarted worker settling a crashed one's sends with MC's send log, MC slow),
about 1 restart in 4 left every `subscriber.ready` partition with records past its committed offset,
aiokafka's position and the drain loop's mark (fix 5) both past them, and nothing in flight: no agent
ever got them, and nothing read them again before the next rebalance. Whatever path drops them, what
it leaves is plain: lag with nothing moving. A partition in that state for STALL_SECONDS is read
again from its committed offset; the ledgers and the dedupe marks absorb anything repeated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.consumer.fetcher import FetchResult
from faust.topics import Topic
from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.utils.functional import consecutive_numbers

from stream_app.ops import metrics

log = logging.getLogger("stream_app.faust_fixes")

# A partition sought back to a hole is not sought again for the same hole before this many seconds.
REWIND_HOLD_SECONDS = 5.0
# How often, at most, the drain loop compares aiokafka's positions with what it handed on (fix 5).
UNDELIVERED_CHECK_SECONDS = 1.0
# How long a partition may have records past its committed offset with none moving (fix 7).
STALL_SECONDS = 10.0
# Per partition, the offset ranges aiokafka stepped over because the log does not have them (fix 4):
# noted as chunks are fetched, forgotten once committed past, and bounded all the same.
ABSENT_KEPT = 10_000
_absent: dict[tuple[str, int], list[tuple[int, int]]] = {}


def new_offset(consumer: Any, tp: TP) -> int | None:
    """The offset that may be committed for `tp` now, or None (Consumer._new_offset, fixed)."""
    acked: list[int] = consumer._acked[tp]
    if not acked:
        return None
    committed = consumer._committed_offset[tp]
    start = committed if committed is not None else _tracking(consumer).fetched_from.get(tp)
    # Offsets the log does not have (transaction markers, compaction) count as done (fix 4).
    index: set[int] = consumer._acked_index[tp]
    for begin, end in absent_between(tp, min(acked) if start is None else start, max(acked)):
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
    forget_absent_below(tp, batch[-1] + 1)
    return int(batch[-1]) + 1


async def rewind_uncommitted(
    consumer: Any, committed: Mapping[Any, int | None], reset: str, changelogs: set[str]
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
        for tp, offset in (await consumer.beginning_offsets(never)).items():
            consumer.seek(tp, offset)


async def seek_to_committed(thread: Any) -> Mapping[Any, int | None]:
    """AIOKafkaConsumerThread.seek_to_committed, rewinding every stream partition."""
    consumer = thread._ensure_consumer()

    async def seek() -> Mapping[Any, int | None]:
        committed = await consumer.seek_to_committed()
        app = thread.consumer.app
        await rewind_uncommitted(
            consumer, committed, app.conf.consumer_auto_offset_reset, set(app.tables.changelog_topics)
        )
        return committed

    result: Mapping[Any, int | None] = await thread.call_thread(seek)
    return result


@dataclass
class _Tracking:
    """What the fixes keep per Faust consumer. The first three start afresh at a rebalance's seek."""

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
    seeks_done: int = 0  # rebalance seeks so far: records fetched before one are stale after it
    next_check: float = 0.0  # of the positions (fix 5)
    # Per partition, since when it has had records past its committed offset and none moving (fix 7).
    idle_since: dict[TP, float] = field(default_factory=dict)


def _tracking(consumer: Any) -> _Tracking:
    found: _Tracking | None = consumer.__dict__.get("_stream_app_tracking")
    if found is None:
        found = consumer.__dict__["_stream_app_tracking"] = _Tracking()
    return found


def rewind_dropped(consumer: Any, tp: TP, start: int, end: int) -> None:
    """Seek `tp` back to `start`: the records from there up to `end` (exclusive) were dropped."""
    tracking = _tracking(consumer)
    held = tracking.rewound
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
    seek = asyncio.ensure_future(_seek_back(consumer, tp, start))
    tracking.seeks.add(seek)
    seek.add_done_callback(tracking.seeks.discard)


async def _seek_back(consumer: Any, tp: TP, start: int) -> None:
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
        _absent[tp] = [*_absent.get(tp, []), (start, earliest)]
    target = max(start, earliest)
    # Before the seek: records handed on while it is under way would move the read offset too.
    tracking = _tracking(consumer)
    tracking.sought_back[tp] = (target, time.monotonic() + REWIND_HOLD_SECONDS)
    tracking.handed_on_to[tp] = target
    await consumer.seek(tp, target)


def _positions(consumer: Any) -> dict[TP, int]:
    """aiokafka's position (the next offset it hands out) of every assigned stream partition."""
    assignment = consumer._thread._ensure_consumer()._subscription.subscription
    states = assignment.assignment if assignment is not None else None
    if states is None:
        return {}
    found: dict[TP, int] = {}
    for tp in states.tps:
        state = states.state_value(tp)
        if state is not None and state.has_valid_position and not tp.topic.endswith("-changelog"):
            found[TP(tp.topic, tp.partition)] = state.position
    return found


def find_undelivered(consumer: Any) -> None:
    """Read again records aiokafka handed out that the drain loop never handed on (fix 5).

    Called between two fetches, when every record of the last one went on or was dropped.
    """
    tracking = _tracking(consumer)
    if consumer.app.rebalancing or tracking.seeking:
        return  # the rebalance's seek reads every partition again from its committed offset
    now = time.monotonic()
    if now < tracking.next_check:
        return
    tracking.next_check = now + UNDELIVERED_CHECK_SECONDS
    positions = _positions(consumer)
    for tp, position in positions.items():
        start = tracking.handed_on_to.get(tp)
        if start is None or position <= start:
            continue
        if tp in tracking.sought_back and now < tracking.sought_back[tp][1]:
            continue  # a seek back is under way; what it held back comes again
        start = _first_present(tp, start, position)
        if start < position:
            rewind_dropped(consumer, tp, start, position)
    find_stalled(consumer, positions, now)


def _first_present(tp: TP, start: int, position: int) -> int:
    """The first offset in [start, position) the log has, or `position`."""
    # In offset order: ranges are noted as fetched, and a seek back fetches lower ones again.
    for begin, end in sorted(absent_between(tp, start, position)):
        if begin <= start:
            start = max(start, end)
    return start


def find_stalled(consumer: Any, positions: Mapping[TP, int], now: float) -> None:
    """Read again from the committed offset a partition that stopped moving (fix 7).

    Records between the committed offset and aiokafka's position, none of them in flight in an
    agent, acked, or waiting in a stream's queue, for STALL_SECONDS: they went on to no agent. Seen
    after a rebalance that came while senders were busy for seconds (MC slow, a crashed worker's
    sends being settled): the position and the drain loop's mark both stood past records no agent
    ever got, so fixes 3 and 5 saw nothing, and the partition waited for the next rebalance.
    """
    idle = _tracking(consumer).idle_since
    waiting = _topics_waiting(consumer)
    busy = {m.tp for m in consumer._unacked_messages if not getattr(m, "acked", False)}
    for tp, position in positions.items():
        committed = consumer._committed_offset.get(tp)
        stalled = (
            committed is not None
            and _first_present(tp, committed, position) < position
            and tp not in busy
            and not consumer._acked.get(tp)
            and tp.topic not in waiting
        )
        if not stalled:
            idle.pop(tp, None)
        elif now - idle.setdefault(tp, now) >= STALL_SECONDS:
            del idle[tp]
            rewind_dropped(consumer, tp, _first_present(tp, committed, position), position)


def _topics_waiting(consumer: Any) -> set[str]:
    """Topics with records handed on and still waiting in a stream's queue."""
    index = consumer.app.topics._topic_name_index
    return {topic for topic, channels in index.items() if any(chan.queue.qsize() for chan in channels)}


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
    _absent[tp] = (_absent.get(tp, []) + found)[-ABSENT_KEPT:]


def absent_between(tp: tuple[str, int], begin: int, end: int) -> list[tuple[int, int]]:
    """The parts of [begin, end) the log does not have, as far as this worker fetched it."""
    return [(max(b, begin), min(e, end)) for b, e in _absent.get(tp, ()) if b < end and e > begin]


def forget_absent_below(tp: tuple[str, int], offset: int) -> None:
    kept = _absent.get(tp)
    if kept and kept[0][1] <= offset:
        _absent[tp] = [(b, e) for b, e in kept if e > offset]


def getall(result: FetchResult, max_records: int | None = None) -> list[Any]:
    """FetchResult.getall, noting what the chunk stepped over (fix 4)."""
    tp = result._topic_partition
    state = result._assignment.state_value(tp)
    before = state.position if state is not None and state.has_valid_position else None
    records: list[Any] = _getall(result, max_records)
    # Changelogs are compacted (full of stepped-over offsets) and never committed by Faust.
    if before is not None and state.has_valid_position and not tp.topic.endswith("-changelog"):
        # The position after the chunk also moved past what the log lacks at its end (for example
        # the marker that ends a transaction).
        after = state.position
        if after > before:
            note_fetched(tp, before, [r.offset for r in records], after)
    return records


async def add_gap(consumer: Any, tp: TP, offset_from: int, offset_to: int) -> None:
    """Consumer._add_gap: Faust's guess of a gap is not taken (fix 4); `new_offset` asks the log."""


_getmany = Consumer.getmany
_perform_seek = Consumer.perform_seek
_getall = FetchResult.getall
_get_producer = Topic._get_producer


async def getmany(consumer: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
    """Consumer.getmany, noting per partition the lowest offset fetched (fix 3) and the offset after
    the last record the drain loop hands on (fix 5), which it compares with aiokafka's position
    before fetching again.

    After a seek back (fix 3) it also holds back the rest of a batch fetched before the seek: handed
    on, those records would move Faust's read offset past the hole again, and the records read from
    the hole would then be dropped as already read. They come again after the hole.
    """
    find_undelivered(consumer)
    tracking = _tracking(consumer)
    fetched_from, handed_on_to = tracking.fetched_from, tracking.handed_on_to
    sought_back, read_offset = tracking.sought_back, consumer._read_offset
    fetched_in: int | None = None  # the seek epoch these records were fetched in
    async for tp, message in _getmany(consumer, timeout):
        if fetched_in is None:
            fetched_in = tracking.seeks_done
        elif tracking.seeks_done != fetched_in:
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


async def perform_seek(consumer: Any) -> None:
    """Consumer.perform_seek, starting the records of what was fetched and handed on afresh."""
    tracking = _tracking(consumer)
    tracking.fetched_from.clear()
    tracking.handed_on_to.clear()
    tracking.sought_back.clear()
    tracking.seeking = True
    try:
        await _perform_seek(consumer)
        tracking.handed_on_to.update(_positions(consumer))
    finally:
        tracking.seeking = False
        tracking.seeks_done += 1


async def get_producer(topic: Any) -> Any:
    """Topic._get_producer, straight to the running producer (fix 6): Faust's path goes through
    mode's stampede guard, three `sleep(0)` for every record sent."""
    app = topic.app
    if not app.in_transaction and app.producer.started:
        return app.producer
    return await _get_producer(topic)


def can_hand_on(consumer: Any, message: Any) -> bool:
    """Would handing `message` to its streams now run to the end without waiting (fix 6)?"""
    app = consumer.app
    conductor = app.topics
    buffer = app.producer.buffer
    return (
        not consumer.suspend_flow.is_set()
        and app.flow_control.is_active()
        and buffer.size <= buffer.max_messages
        and not conductor._tp_to_callback_lock.locked()
        and not any(chan.queue.full() for chan in conductor._topic_name_index.get(message.topic, ()))
    )


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """Consumer._drain_messages, handing a record straight on when nothing can hold it (fix 6).

    Otherwise as Faust's: the same read-offset rule (which `getmany` mirrors), gaps, commits every
    `commit_every` acks, and a yield to the loop every 100 records."""
    callback = consumer.callback
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    tracking = _tracking(consumer)
    since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            records = consumer.getmany(timeout=1.0)
            await consumer.sleep(0)  # getmany may return at once, again and again
            if consumer.should_stop:
                break
            async for tp, message in records:
                since_yield += 1
                if since_yield > 100:
                    await asyncio.sleep(0)
                    since_yield = 0
                offset = message.offset
                read = read_offset.get(tp)
                if read is not None and offset < read:
                    continue  # already handed on: Faust's own rule
                if offset - (read or 0) > 1 and read and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, read + 1, offset)
                if consumer._commit_every is not None and consumer._n_acked >= consumer._commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if can_hand_on(consumer, message):
                    await callback(message)
                    read_offset[tp] = offset
                else:
                    seeks = tracking.seeks_done
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    if tracking.seeks_done == seeks:  # else the seek's read offset stands
                        read_offset[tp] = offset
            unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def apply() -> None:
    Consumer._new_offset = new_offset  # type: ignore[method-assign, assignment]
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign, assignment]
    Consumer.getmany = getmany  # type: ignore[method-assign, assignment]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign, assignment]
    Consumer._add_gap = add_gap  # type: ignore[method-assign, assignment]
    FetchResult.getall = getall
    Consumer._drain_messages = drain_messages  # type: ignore[method-assign, assignment]
    Topic._get_producer = get_producer  # type: ignore[method-assign, assignment]
