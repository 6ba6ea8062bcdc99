"""Many sends per MC call, the way a database does group commit.

A send handed in while fewer than `max_calls` calls are in flight goes out at once, alone: at low
load nothing waits for company. Sends handed in while every call slot is busy wait, and the next
free slot takes up to `max_items` of them in one call. So batches grow exactly as fast as MC is
slow or the load is high, with no timer (the linger is the time a call slot takes to free up).

Each caller gets its own item's result, or the exception of the call that carried it: the caller
keeps its own ledger mark, retries and outcome, so one bad item never decides for the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from stream_app.mc.rest import SendReceipt
from stream_app.mc.soap import SoapClient, TriggeredEmail

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(
        self, call: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_items: int, max_calls: int
    ) -> None:
        self._call = call
        self.max_items = max_items
        self.max_calls = max_calls
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_calls()
        return await future

    def _start_calls(self) -> None:
        while self._waiting and self._in_flight < self.max_calls:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            while self._waiting and len(batch) < self.max_items:
                item, future = self._waiting.popleft()
                if not future.cancelled():  # its caller stopped waiting (a worker stop): not sent
                    batch.append((item, future))
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._call([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._start_calls()


class TriggeredEmails:
    """Classic triggered-send emails, up to 50 per SOAP Create (MC's synchronous batch)."""

    def __init__(self, soap: SoapClient, *, max_items: int = 50, max_calls: int = 4) -> None:
        self._soap = soap
        self._coalescer: Coalescer[TriggeredEmail, SendReceipt | Exception] = Coalescer(
            self._send, max_items=min(max_items, 50), max_calls=max_calls
        )

    async def send(self, email: TriggeredEmail) -> SendReceipt:
        """This email's receipt; PermanentMCError with MC's reason when MC refused this one."""
        result = await self._coalescer.submit(email)
        if isinstance(result, Exception):
            raise result
        return result

    async def _send(self, emails: list[TriggeredEmail]) -> list[SendReceipt | Exception]:
        results = await self._soap.send_triggered(emails)
        return [SendReceipt(r.request_id) if r.ok else r.error() for r in results]
