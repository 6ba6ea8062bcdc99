"""Fix 6, turns of the event loop per record: `Consumer._drain_messages` and `Topic._get_producer` (Faust).

Faust's drain loop hands every record to the streams through `wait_first(deliver, suspend_flow.wait())`
(four tasks created and three cancelled per record), and every record Faust sends (each table write's
changelog record too) first awaits `maybe_start_producer`, whose stampede guard sleeps three times;
on a busy loop each record waited for several turns, which, not the CPU, limited every Faust stage.
Here `drain_messages` (a copy of Faust's loop, otherwise the same: read-offset rule, gaps, commits
every `commit_every` acks, a yield every 100 records) hands a record straight on whenever nothing on
its way can block (`can_hand_on`), so such a delivery never yields and a rebalance cannot find it half
done, and goes Faust's way otherwise; a delivery a rebalance's seek interrupted leaves the seek's
read offset standing (fix 2). `get_producer` returns the running producer directly. Tests:
`tests/unit/faust_patches/test_delivery.py` (`test_a_record_costs_no_turn_of_the_event_loop`,
`test_a_send_costs_no_turn_of_the_event_loop`; each fails with Faust's own method).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from faust.topics import Topic
from faust.transport.consumer import CONSUMER_FETCHING

from stream_app.runtime.faust_patches.state import tracking
from stream_app.runtime.faust_patches.surface import (
    ConsumerLike,
    MessageLike,
    ProducerLike,
    ServiceLike,
    TopicLike,
)

log = logging.getLogger("stream_app.faust_patches")

# Faust's own, called by `get_producer` when the producer is not running (or in a transaction).
# (cast: Faust types it for its Topic, which is what `topic` is at run time.)
faust_get_producer = cast(Callable[[TopicLike], Awaitable[ProducerLike]], Topic._get_producer)

# Faust's drain loop yields to the event loop after this many records.
YIELD_EVERY = 100


async def get_producer(topic: TopicLike) -> ProducerLike:
    """Topic._get_producer, straight to the running producer: Faust's path goes through mode's
    stampede guard, three `sleep(0)` for every record sent."""
    app = topic.app
    if not app.in_transaction and app.producer.started:
        return app.producer
    return await faust_get_producer(topic)


def can_hand_on(consumer: ConsumerLike, message: MessageLike) -> bool:
    """Would handing `message` to its streams now run to the end without waiting?"""
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


async def drain_messages(consumer: ConsumerLike, fetcher: ServiceLike) -> None:
    """Consumer._drain_messages, handing a record straight on when nothing can hold it.

    Otherwise as Faust's: the same read-offset rule (which `fetch.getmany` mirrors), gaps, commits
    every `commit_every` acks, and a yield to the loop every 100 records."""
    callback = consumer.callback
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    set_flag, unset_flag = consumer.diag.set_flag, consumer.diag.unset_flag
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    kept = tracking(consumer)
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
                if since_yield > YIELD_EVERY:
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
                    seeks = kept.seeks_done
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                    if kept.seeks_done == seeks:  # else the seek's read offset stands (fix 2)
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
