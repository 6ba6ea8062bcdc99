"""Group commit of MC sends (mc/batching.py): alone when idle, together while MC is busy."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.mc.batching import Coalescer


class SlowMC:
    """An MC call that returns when the test says so, recording the batches it got."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def call(self, items: list[int]) -> list[str]:
        self.batches.append(items)
        await self.release.wait()
        return [f"ok {i}" if i >= 0 else "refused" for i in items]


async def test_a_send_alone_on_an_idle_sender_goes_at_once() -> None:
    mc = SlowMC()
    mc.release.set()
    coalescer = Coalescer(mc.call, max_items=50, max_calls=2)
    assert await coalescer.submit(1) == "ok 1"
    assert mc.batches == [[1]]


async def test_sends_waiting_for_a_busy_mc_go_together_in_the_next_free_call() -> None:
    mc = SlowMC()
    coalescer = Coalescer(mc.call, max_items=3, max_calls=1)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(coalescer.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert mc.batches == [[0]]  # the others wait for the one call slot
    mc.release.set()
    results = await asyncio.gather(first, *waiting)
    assert results == [f"ok {i}" for i in range(6)]
    assert mc.batches == [[0], [1, 2, 3], [4, 5]]  # at most max_items per call, in order


async def test_each_caller_gets_its_own_result_and_a_failed_call_fails_only_its_items() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ConnectionError("MC down")
        return [str(i) for i in items]

    coalescer = Coalescer(flaky, max_items=10, max_calls=1)
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.submit(2))
    with pytest.raises(ConnectionError):
        await first
    assert await second == "2"


async def test_a_caller_that_stopped_waiting_is_not_sent() -> None:
    mc = SlowMC()
    coalescer = Coalescer(mc.call, max_items=10, max_calls=1)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    gone = asyncio.create_task(coalescer.submit(1))
    kept = asyncio.create_task(coalescer.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    mc.release.set()
    assert await first == "ok 0" and await kept == "ok 2"
    assert mc.batches == [[0], [2]]
