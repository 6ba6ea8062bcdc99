"""Group commit of MC sends (mc/batching.py): alone when idle, together while MC is busy; per channel,
one request per group (definition, message) and each item its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from stream_app.mc.batching import Coalescer, MobileConnectSms, SmsGroup, TransactionalMessages
from stream_app.mc.errors import DuplicateMessageKeyError, PermanentMCError
from stream_app.mc.rest import RestClient, SendReceipt, SmsSubscriber, TransactionalRecipient


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


# --- Transactional Messaging and MobileConnect: one request per group, each item its own result ---


class FakeRest:
    """The REST client's batch routes: record each request, answer per item as MC would."""

    def __init__(self, *, hold: bool = False) -> None:
        self.requests: list[tuple[Any, list[str]]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.refused_numbers: set[str] = set()  # MC answers a request holding one of these with 400

    async def send_transactional_many(
        self, channel: str, definition_key: str, recipients: Sequence[TransactionalRecipient]
    ) -> list[SendReceipt | PermanentMCError]:
        self.requests.append(((channel, definition_key), [r.message_key for r in recipients]))
        await self.release.wait()
        out: list[SendReceipt | PermanentMCError] = []
        for r in recipients:
            if r.to == "bad":
                out.append(PermanentMCError("MCMS_UTM_Validation_InvalidValue_to", code=109121))
            elif r.message_key == "dup":
                out.append(DuplicateMessageKeyError("MCMS_UTM_Validation_DuplicateMessageKey", code=109110))
            else:
                out.append(SendReceipt("req", recipient_send_id=r.message_key))
        return out

    async def send_sms_subscribers(
        self,
        message_id: str,
        subscribers: Sequence[SmsSubscriber],
        *,
        blackout_window: Any = None,
        subscribe_keyword: str | None = None,
    ) -> SendReceipt:
        self.requests.append((message_id, [s.mobile for s in subscribers]))
        await self.release.wait()
        if any(s.mobile in self.refused_numbers for s in subscribers):
            raise PermanentMCError("HTTP 400 No valid subscribers were provided", code=400)
        return SendReceipt(f"token-{len(self.requests)}")


def recipient(key: str, to: str = "a@example.com") -> TransactionalRecipient:
    return TransactionalRecipient(key, f"M-{key}", to, {"EventId": key})


async def test_a_lone_transactional_message_on_an_idle_sender_goes_at_once() -> None:
    rest = FakeRest()
    messages = TransactionalMessages(cast(RestClient, rest), max_items=50, max_calls=2)
    receipt = await messages.send("email", "packet-drawn-giver", recipient("k1"))
    assert receipt.recipient_send_id == "k1"
    assert rest.requests == [(("email", "packet-drawn-giver"), ["k1"])]


async def test_transactional_messages_share_a_request_per_definition_each_with_its_own_result() -> None:
    rest = FakeRest(hold=True)
    messages = TransactionalMessages(cast(RestClient, rest), max_items=50, max_calls=1)
    first = asyncio.create_task(messages.send("email", "drawer", recipient("k0")))
    await asyncio.sleep(0)
    waiting = {
        key: asyncio.create_task(messages.send("email", definition, recipient(key, to)))
        for key, definition, to in [
            ("k1", "drawer", "a@example.com"),
            ("bad-one", "drawer", "bad"),
            ("dup", "drawer", "a@example.com"),
            ("k2", "drawer", "a@example.com"),
            ("g1", "giver", "a@example.com"),
        ]
    }
    await asyncio.sleep(0)
    rest.release.set()
    assert (await first).recipient_send_id == "k0"
    results = dict(zip(waiting, await asyncio.gather(*waiting.values(), return_exceptions=True), strict=True))
    # One request per definition: the other definition's message went alone, at once.
    assert sorted(rest.requests) == [
        (("email", "drawer"), ["k0"]),
        (("email", "drawer"), ["k1", "bad-one", "dup", "k2"]),
        (("email", "giver"), ["g1"]),
    ]
    assert isinstance(results["k1"], SendReceipt) and isinstance(results["k2"], SendReceipt)
    assert isinstance(results["dup"], DuplicateMessageKeyError)
    bad = results["bad-one"]
    assert isinstance(bad, PermanentMCError) and not isinstance(bad, DuplicateMessageKeyError)
    assert bad.code == 109121


def subscriber(number: str) -> SmsSubscriber:
    return SmsSubscriber(number, f"M{number}", {"GiverName": "TABLE"})


async def test_a_lone_sms_on_an_idle_sender_goes_at_once() -> None:
    rest = FakeRest()
    sms = MobileConnectSms(cast(RestClient, rest), max_items=50, max_calls=2)
    receipt = await sms.send(SmsGroup("welcome", "EZTABLE"), subscriber("+886912345678"))
    assert receipt.request_id == "token-1"
    assert rest.requests == [("welcome", ["886912345678"])]  # MC's form: no "+"


async def test_sms_share_a_request_and_one_bad_number_fails_alone() -> None:
    """A number MC would refuse never joins a request; a 400 for a batch is found out one by one."""
    rest = FakeRest(hold=True)
    rest.refused_numbers = {"886900000003"}
    sms = MobileConnectSms(cast(RestClient, rest), max_items=50, max_calls=1)
    group = SmsGroup("welcome", "EZTABLE")
    first = asyncio.create_task(sms.send(group, subscriber("886900000000")))
    await asyncio.sleep(0)
    numbers = ["886900000001", "+886-9000", "886900000002", "886900000003", "886900000004"]
    waiting = [asyncio.create_task(sms.send(group, subscriber(n))) for n in numbers]
    other_group = asyncio.create_task(sms.send(SmsGroup("welcome-en", "EZTABLE"), subscriber("886900000009")))
    await asyncio.sleep(0)
    rest.release.set()
    assert isinstance(await first, SendReceipt)
    one, malformed, two, refused, four = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(malformed, PermanentMCError) and malformed.code == "InvalidPhoneNumber"
    assert isinstance(refused, PermanentMCError)
    assert all(isinstance(r, SendReceipt) for r in (one, two, four))
    assert isinstance(await other_group, SendReceipt)
    batch = ["886900000001", "886900000002", "886900000003", "886900000004"]
    assert [r for r in rest.requests if r[0] == "welcome"] == [
        ("welcome", ["886900000000"]),
        ("welcome", batch),  # the malformed number never rode along
        *(("welcome", [n]) for n in batch),  # the 400: each alone
    ]
    assert ("welcome-en", ["886900000009"]) in rest.requests
