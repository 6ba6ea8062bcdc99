"""Many sends per MC call, the way a database does group commit.

A send handed in while fewer than `max_calls` calls are in flight goes out at once, alone: at low
load nothing waits for company. Sends handed in while every call slot is busy wait, and the next
free slot takes up to `max_items` of them in one call. So batches grow exactly as fast as MC is
slow or the load is high, with no timer (the linger is the time a call slot takes to free up).

Each caller gets its own item's result, or the exception of the call that carried it: the caller
keeps its own ledger mark, retries and outcome, so one bad item never decides for the others.

Per channel (README, "Batched sends"):

- `TriggeredEmails`: classic emails, up to 50 TriggeredSend objects per SOAP Create (reference §2.6),
  each object's result its email's own.
- `TransactionalMessages`: Transactional Messaging (email or SMS), one multi-recipient request per
  (channel, definition) with each recipient's own messageKey; each `responses[]` item decides its
  message alone (reference §3.2): accepted, 109110 (MC has the message: the caller looks up its
  status) or refused.
- `MobileConnectSms`: classic SMS, one `Subscribers` request per (message, keyword, blackout window)
  with each subscriber's attributes rendered by the message's stored text (reference §4.1). One
  tokenId per request; its deliveries list each number's tracking (§4.2). MobileConnect refuses
  requests, not subscribers: one bad number fails the whole request with a 400. So numbers not in
  MC's form (country code and digits) are refused here, before any request, which leaves a 400 only
  for reasons all the request's subscribers share; should MC still answer 400 for a batch, its
  subscribers are sent again one by one, so that the 400 falls on the one it is about (a 400 means
  MC queued nothing: sending again sends nothing twice).

A group (definition, message, window) has a coalescer of its own, made on first use, with
`max_calls` call slots: items of different groups never share a request, and a lone item of an idle
group goes at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from stream_app.mc.errors import PermanentMCError, TransientMCError
from stream_app.mc.rest import (
    MAX_SMS_SUBSCRIBERS,
    MAX_TRANSACTIONAL_RECIPIENTS,
    RestClient,
    SendReceipt,
    SmsSubscriber,
    TransactionalRecipient,
    sms_digits,
)
from stream_app.mc.soap import SoapClient, TriggeredEmail

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")


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


class Grouped(Generic[K, T, R]):
    """One Coalescer per group key, made on first use: items of one group share calls, never others'."""

    def __init__(
        self, call: Callable[[K, list[T]], Awaitable[Sequence[R]]], *, max_items: int, max_calls: int
    ) -> None:
        self._call = call
        self.max_items = max_items
        self.max_calls = max_calls
        self.groups: dict[K, Coalescer[T, R]] = {}

    async def submit(self, group: K, item: T) -> R:
        coalescer = self.groups.get(group)
        if coalescer is None:

            async def call(items: list[T]) -> Sequence[R]:
                return await self._call(group, items)

            coalescer = self.groups[group] = Coalescer(
                call, max_items=self.max_items, max_calls=self.max_calls
            )
        return await coalescer.submit(item)


def _own(result: SendReceipt | Exception) -> SendReceipt:
    if isinstance(result, Exception):
        raise result
    return result


class TransactionalMessages:
    """Transactional Messaging sends, up to MC_SEND_BATCH recipients of one definition per request."""

    def __init__(self, rest: RestClient, *, max_items: int = 50, max_calls: int = 4) -> None:
        self._rest = rest
        self._grouped: Grouped[tuple[str, str], TransactionalRecipient, SendReceipt | Exception] = Grouped(
            self._send, max_items=min(max_items, MAX_TRANSACTIONAL_RECIPIENTS), max_calls=max_calls
        )

    async def send(self, channel: str, definition_key: str, recipient: TransactionalRecipient) -> SendReceipt:
        """This message's receipt; DuplicateMessageKeyError (MC has a message with its key) or
        PermanentMCError for this recipient's own refusal; TransientMCError when its request failed."""
        return _own(await self._grouped.submit((channel, definition_key), recipient))

    async def _send(
        self, group: tuple[str, str], recipients: list[TransactionalRecipient]
    ) -> list[SendReceipt | Exception]:
        channel, definition_key = group
        return list(await self._rest.send_transactional_many(channel, definition_key, recipients))


@dataclass(frozen=True)
class SmsGroup:
    """What one MobileConnect request shares: the message, the subscribe keyword, the blackout window."""

    message_id: str
    keyword: str | None = None
    blackout_window: tuple[tuple[str, str], ...] | None = None


class MobileConnectSms:
    """Classic SMS, up to MC_SEND_BATCH `Subscribers` per MobileConnect request (see the module's
    docstring for how one bad number is kept from failing its batch-mates)."""

    def __init__(self, rest: RestClient, *, max_items: int = 50, max_calls: int = 4) -> None:
        self._rest = rest
        self._grouped: Grouped[SmsGroup, SmsSubscriber, SendReceipt | Exception] = Grouped(
            self._send, max_items=min(max_items, MAX_SMS_SUBSCRIBERS), max_calls=max_calls
        )

    async def send(self, group: SmsGroup, subscriber: SmsSubscriber) -> SendReceipt:
        """The request's tokenId for this number; PermanentMCError when its number is not one MC
        takes, or MC refused its request (alone)."""
        digits = sms_digits(subscriber.mobile)
        if digits is None:  # refused before it can share a request, and fail it
            raise PermanentMCError("mobile number is not E.164 digits", code="InvalidPhoneNumber")
        if digits != subscriber.mobile:
            subscriber = SmsSubscriber(digits, subscriber.subscriber_key, subscriber.attributes)
        return _own(await self._grouped.submit(group, subscriber))

    async def _send(self, group: SmsGroup, subscribers: list[SmsSubscriber]) -> list[SendReceipt | Exception]:
        try:
            return [await self._request(group, subscribers)] * len(subscribers)
        except PermanentMCError:
            if len(subscribers) == 1:
                raise
        # A 400 for the batch: one by one, so that it falls on the subscriber it is about alone.
        results: list[SendReceipt | Exception] = []
        for subscriber in subscribers:
            try:
                results.append(await self._request(group, [subscriber]))
            except (PermanentMCError, TransientMCError) as exc:
                results.append(exc)
        return results

    async def _request(self, group: SmsGroup, subscribers: list[SmsSubscriber]) -> SendReceipt:
        return await self._rest.send_sms_subscribers(
            group.message_id,
            subscribers,
            blackout_window=dict(group.blackout_window) if group.blackout_window else None,
            subscribe_keyword=group.keyword,
        )
