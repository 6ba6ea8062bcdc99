"""Fix 6 (delivery.py): a record is handed on, and a record sent, without a turn of the event loop
whenever nothing on its way can block; otherwise Faust's way, which a rebalance can interrupt.

These run Faust's real consumer, conductor, producer and topic (an App never started), through the
class methods: with the patches installed (`patched`), and, to show the fault, with Faust's own
(`unpatched`). Each `..._costs_no_turn_...` test fails with the patch off.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.topics import Topic
from faust.transport.consumer import Consumer
from faust.types import TP

from stream_app.runtime.faust_patches import delivery
from stream_app.runtime.faust_patches.delivery import can_hand_on
from stream_app.runtime.faust_patches.state import tracking

from .fakes import faust_app, queue_of, record, turns_of_the_loop

TP_BATCHES = TP("stream_app.batches", 0)


class Drain:
    """Faust's consumer of a fresh App, fed one fetch of `offsets` by a stand-in for `getmany`."""

    def __init__(self, offsets: range) -> None:
        self.app = faust_app()
        self.consumer: Any = self.app.consumer
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.offsets = offsets
        self.delivered: list[int] = []
        self.consumer.getmany = self.getmany
        self.consumer.callback = self.deliver

    async def getmany(self, timeout: float) -> Any:
        for offset in self.offsets:
            yield TP_BATCHES, record(offset, TP_BATCHES)

    async def deliver(self, message: Any) -> None:
        self.delivered.append(message.offset)
        if message.offset == self.offsets[-1]:
            self.fetcher._stopped.set()  # the drain loop ends after this fetch

    async def turns(self) -> int:
        """The turns of the event loop the drain loop (the class's) took for the whole fetch."""
        return await turns_of_the_loop(Consumer._drain_messages(self.consumer, self.fetcher))


async def turns_per_record() -> float:
    """The extra turns of the loop 60 records cost over 10: the cost of a record, in turns."""
    few, many = Drain(range(10)), Drain(range(60))
    turns = await few.turns(), await many.turns()
    assert few.delivered == list(range(10)) and many.delivered == list(range(60))
    assert many.consumer._read_offset[TP_BATCHES] == 59
    return (turns[1] - turns[0]) / 50


@pytest.mark.usefixtures("patched")
async def test_a_record_costs_no_turn_of_the_event_loop() -> None:
    assert await turns_per_record() == 0


@pytest.mark.usefixtures("unpatched")
async def test_faust_s_own_drain_loop_takes_turns_for_every_record() -> None:
    # What the patch changes (and the upstream reproducer): `wait_first` per record.
    assert await turns_per_record() >= 2


async def test_a_send_costs_no_turn_of_the_event_loop(patched: None) -> None:
    app = faust_app()
    app.producer._started.set()  # running (started without a broker)
    assert await turns_of_the_loop(Topic._get_producer(app.topic("stream_app.intents"))) == 0
    assert await Topic._get_producer(app.topic("stream_app.intents")) is app.producer


async def test_faust_s_own_send_path_sleeps_three_times(unpatched: None) -> None:
    # What the patch changes (and the upstream reproducer): mode's stampede guard.
    app = faust_app()
    app.producer._started.set()
    assert await turns_of_the_loop(Topic._get_producer(app.topic("stream_app.intents"))) == 3


async def test_a_producer_not_running_yet_is_started_faust_s_way(monkeypatch: pytest.MonkeyPatch) -> None:
    app = faust_app()
    topic = app.topic("stream_app.intents")
    asked: list[Any] = []

    async def faust_get_producer(t: Any) -> Any:
        asked.append(t)
        return app.producer

    monkeypatch.setattr(delivery, "faust_get_producer", faust_get_producer)
    assert await delivery.get_producer(topic) is app.producer
    assert asked == [topic]


@pytest.mark.parametrize(
    "hold",
    [
        "nothing",
        "flow suspended",
        "flow control inactive",
        "producer buffer over its limit",
        "a subscription change under way",
        "a target stream's queue full",
    ],
)
async def test_a_record_goes_faust_s_way_when_anything_on_its_way_can_block(hold: str) -> None:
    app = faust_app()
    consumer: Any = app.consumer
    message = record(5, TP_BATCHES)
    if hold == "flow suspended":
        consumer.suspend_flow.set()
    elif hold == "flow control inactive":
        app.flow_control.suspend()
    elif hold == "producer buffer over its limit":
        app.producer.buffer.max_messages = -1
    elif hold == "a subscription change under way":
        await app.topics._tp_to_callback_lock.acquire()
    elif hold == "a target stream's queue full":
        app.topics._topic_name_index[TP_BATCHES.topic] = [queue_of(3, maxsize=3)]
    assert can_hand_on(consumer, message) is (hold == "nothing")


async def test_a_delivery_a_rebalance_seek_interrupted_leaves_the_seek_s_read_offset(patched: None) -> None:
    # Faust's way (here: a target stream's queue full) can be interrupted by a rebalance, whose seek
    # resets the read offsets to the committed ones (fix 2); Faust would then set the read offset to
    # the interrupted record's, past records the seek reads again, dropped then as already read.
    drain = Drain(range(20, 21))
    consumer = drain.consumer
    drain.app.topics._topic_name_index[TP_BATCHES.topic] = [queue_of(3, maxsize=3)]
    stuck = asyncio.Event()

    async def deliver(message: Any) -> None:
        await stuck.wait()  # the full queue: never returns here

    consumer.callback = deliver

    async def rebalance() -> None:
        await asyncio.sleep(0.01)
        tracking(consumer).seeks_done += 1  # the seek (perform_seek) came
        consumer._read_offset[TP_BATCHES] = 12  # back to the committed offset
        drain.fetcher._stopped.set()
        consumer.suspend_flow.set()  # Faust suspends the flow for the rebalance

    await asyncio.gather(Consumer._drain_messages(consumer, drain.fetcher), rebalance())
    assert consumer._read_offset[TP_BATCHES] == 12
