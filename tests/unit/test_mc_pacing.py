"""The client-side pace towards MC (issue 18): the token bucket, MC's shared not-before, the
circuit breaker for the 50200 block; the retry loop that does not spend tries on MC's pace; the
Transactional Messaging calls and the messageKey of a ledger entry."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from stream_app.domain.ledger import ledger_key, message_key
from stream_app.domain.retry import RetriesExhausted, RetryPolicy, call_with_retries
from stream_app.mc import (
    AuthError,
    BlockedMCError,
    DuplicateMessageKeyError,
    PermanentMCError,
    RestClient,
    ThrottledMCError,
    TokenManager,
    TransientMCError,
    may_have_reached_mc,
)
from stream_app.mc.pacing import CLOSED, HALF_OPEN, OPEN, PacedTransport, Pacer, TokenBucket, classify
from stream_app.ops import metrics
from stream_app.ops.alerts import MC_BLOCKED, AlertConfig, Alerter, Snapshot
from stream_app.settings import Settings
from tests.fixtures.fake_rest import SETTINGS, FakeMC


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the token bucket -----------------------------------------------------------------------------


def test_the_bucket_lets_a_seconds_burst_through_then_paces_in_arrival_order() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    assert [bucket.reserve() for _ in range(10)] == [0.0] * 10  # one second's worth at once
    # Then each call waits its turn: 0.1 s apart, in the order they came.
    assert [round(bucket.reserve(), 3) for _ in range(3)] == [0.1, 0.2, 0.3]
    clock.now += 0.3  # the debt is paid back: the next waits 0.1 s again
    assert round(bucket.reserve(), 3) == 0.1
    clock.now += 100  # idle for long: the burst refills, no more
    assert [bucket.reserve() for _ in range(10)] == [0.0] * 10
    assert bucket.reserve() > 0


def test_a_bucket_under_one_call_a_second_bursts_one_and_a_rate_of_0_is_off() -> None:
    clock = Clock()
    slow = TokenBucket(0.5, clock=clock)
    assert slow.reserve() == 0.0 and slow.reserve() == pytest.approx(2.0)
    off = TokenBucket(0, clock=clock)
    assert not off.enabled and all(off.reserve() == 0.0 for _ in range(10_000))


def test_the_bucket_keeps_a_sustained_rate_over_a_minute() -> None:
    """Sixty seconds of callers that come as fast as they may: no more than rate x 60 + burst."""
    clock = Clock(0.0)
    bucket = TokenBucket(1, clock=clock)
    went = 0
    while clock.now < 60:
        clock.now += bucket.reserve()
        if clock.now < 60:
            went += 1
    assert went <= 61


async def test_a_waiter_cancelled_gives_its_token_back() -> None:
    pacer = Pacer(1.0)
    await pacer.gate(object())  # the burst of 1
    waiter = asyncio.create_task(pacer.gate(object()))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pacer.bucket.reserve() < 1.0  # not two tokens behind


# --- MC's answers ---------------------------------------------------------------------------------


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    return httpx.Response(status, content=content, headers=headers)


def test_what_mc_says_about_the_pace() -> None:
    assert classify("rest", response(429, {"errorcode": 50100, "retryAfter": 5})) == "rate_limited"
    assert (
        classify(
            "rest", response(429, {"message": "Your requests are temporarily blocked.", "errorcode": 50200})
        )
        == "blocked"
    )
    assert classify("rest", response(429, b"not json")) == "rate_limited"
    assert classify("rest", response(500, {"errorcode": 50200})) == ""
    assert classify("rest", response(202, {})) == ""
    fault = b"<soap:Envelope><soap:Body><soap:Fault><faultstring>Rate Limited</faultstring></soap:Fault>"
    assert classify("soap", response(500, fault)) == "rate_limited"
    assert classify("soap", response(500, b"<soap:Fault><faultstring>Server error</faultstring>")) == ""


async def test_a_429_holds_back_every_call_of_the_worker_for_its_retry_after() -> None:
    pacer = Pacer(0)
    pacer.answered("rest", response(429, {"errorcode": 50100}, {"Retry-After": "0.3"}), probe=False)
    started = time.monotonic()
    # Two other callers that never met the 429 wait for it too.
    await asyncio.gather(pacer.gate(object()), pacer.gate(object()), pacer.ready())
    assert 0.25 <= time.monotonic() - started < 1.0


async def test_a_soap_rate_fault_without_retry_after_waits_a_second_then_longer() -> None:
    clock = Clock()
    pacer = Pacer(0, clock=clock)
    fault = response(500, b"<faultstring>Rate Limited</faultstring><Code>17</Code>")
    pacer.answered("soap", fault, probe=False)
    assert pacer.not_before == pytest.approx(clock.now + 1)
    pacer.answered("soap", fault, probe=False)
    assert pacer.not_before == pytest.approx(clock.now + 2)
    pacer.answered("soap", response(200, b"<ok/>"), probe=False)  # answered again: back to 1 s
    pacer.answered("soap", fault, probe=False)
    assert pacer.not_before == pytest.approx(clock.now + 2)  # the later of the two


# --- the circuit breaker --------------------------------------------------------------------------

BLOCKED = {"message": "Your requests are temporarily blocked.", "errorcode": 50200}


async def test_the_block_stops_every_call_then_one_probe_reopens_the_way() -> None:
    pacer = Pacer(0, blocked_pause=0.2)
    seen: list[tuple[float | None, str]] = []
    pacer.listener.blocked = lambda since, detail: seen.append((since, detail))
    pacer.answered("rest", response(429, BLOCKED), probe=False)
    assert pacer.state == OPEN and seen[0][0] is not None

    started = time.monotonic()
    calls = [asyncio.create_task(pacer.gate(f"call-{n}")) for n in range(6)]
    done, waiting = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
    assert [task.result() for task in done] == [True]  # the first to come after the pause probes...
    assert time.monotonic() - started >= 0.18 and pacer.state == HALF_OPEN
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting)  # ...while the rest wait for its answer
    pacer.answered("rest", response(202, {"requestId": "r"}), probe=True)
    assert await asyncio.gather(*waiting) == [False] * 5
    assert pacer.state == CLOSED and seen[-1] == (None, "")


async def test_a_probe_met_by_the_block_reopens_for_longer_and_its_waiters_are_not_sent() -> None:
    pacer = Pacer(0, blocked_pause=0.1)
    pacer.answered("rest", response(429, BLOCKED), probe=False)
    assert await pacer.gate("probe") is True
    waiter = asyncio.create_task(pacer.gate("waiter"))
    await asyncio.sleep(0.02)
    pacer.answered("rest", response(429, BLOCKED), probe=True)
    with pytest.raises(BlockedMCError):  # not sent: the caller decides anew after the pause
        await waiter
    assert pacer.state == OPEN and pacer.pause == pytest.approx(0.2)


async def test_blocks_in_flight_do_not_lengthen_the_pause_and_a_probe_without_answer_passes_on() -> None:
    clock = Clock()
    pacer = Pacer(0, blocked_pause=60, clock=clock)
    for _ in range(10):  # every call in flight when MC began blocking meets it
        pacer.answered("rest", response(429, BLOCKED), probe=False)
    assert pacer.pause == 60 and pacer.open_until == clock.now + 60
    clock.now += 61
    assert await pacer.gate("a") is True
    pacer.answered("rest", None, probe=True)  # a timeout: no answer, so nothing learnt
    assert pacer.state == HALF_OPEN
    assert await pacer.gate("b") is True  # the next call probes
    pacer.answered("rest", response(500, {"message": "Internal"}), probe=True)  # not the block
    assert pacer.state == CLOSED
    pacer.answered("rest", response(429, BLOCKED), probe=False)  # blocked again soon after: longer
    assert pacer.pause == 120
    pacer.answered("rest", response(429, BLOCKED), probe=True)
    pacer.answered("rest", response(429, BLOCKED), probe=True)
    assert pacer.pause == 480
    for _ in range(5):
        pacer.answered("rest", response(429, BLOCKED), probe=True)
    assert pacer.pause == 900  # at most 15 min


async def test_the_transport_paces_rest_and_soap_alike_and_not_the_token_route() -> None:
    calls: list[tuple[float, str]] = []

    def mc(request: httpx.Request) -> httpx.Response:
        calls.append((time.monotonic(), request.url.path))
        return httpx.Response(200, json={})

    pacer = Pacer(10)
    pacer.bucket.capacity = pacer.bucket._tokens = 1  # no burst, for a clean measure
    async with httpx.AsyncClient(transport=PacedTransport(httpx.MockTransport(mc), pacer)) as http:
        for _ in range(5):
            await http.post("https://mc.test/v2/token")  # not MC's REST or SOAP budget
        started = time.monotonic()
        for path in ("/messaging/v1/x", "/Service.asmx", "/messaging/v1/y", "/Service.asmx"):
            await http.post(f"https://mc.test{path}")
    paced = [t for t, path in calls if path != "/v2/token"]
    assert paced[-1] - started >= 0.28  # 4 calls at 10/s with no burst: 3 waits of 0.1 s


async def test_rest_client_turns_mcs_pace_answers_into_pacing_errors_and_the_breaker_opens() -> None:
    answers = iter(
        [
            httpx.Response(429, json={"errorcode": 50100, "retryAfter": 2}, headers={"Retry-After": "2"}),
            httpx.Response(429, json=BLOCKED),
        ]
    )
    fake = FakeMC(lambda request: next(answers))
    pacer = Pacer(0, blocked_pause=30)
    http = httpx.AsyncClient(transport=PacedTransport(httpx.MockTransport(fake), pacer))
    rest = RestClient(TokenManager(SETTINGS, http), http)
    with pytest.raises(ThrottledMCError) as throttled:
        await rest.send_email("k", to="a@example.com", subscriber_key="S")
    assert throttled.value.retry_after == 2 and pacer.not_before > time.monotonic() + 1.5
    pacer.not_before = 0.0
    with pytest.raises(BlockedMCError):
        await rest.send_email("k", to="a@example.com", subscriber_key="S")
    assert pacer.state == OPEN
    await http.aclose()


# --- the retry loop -------------------------------------------------------------------------------


async def test_mcs_pace_is_waited_out_and_not_counted_as_a_try() -> None:
    answers: list[BaseException | str] = [
        ThrottledMCError("429", retry_after=0.01),
        BlockedMCError("50200"),
        TransientMCError("500"),
        BlockedMCError("held back"),
        "sent",
    ]
    paced: list[int] = []

    async def call(attempt: int) -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def pace() -> float:
        paced.append(1)
        return 0.0

    policy = RetryPolicy(max_attempts=2, base_seconds=0.01, max_seconds=0.01)
    assert await call_with_retries(call, policy, pace=pace) == ("sent", 2)
    assert len(paced) == 3
    # Without a pacer they are transient failures like any other.
    answers[:] = [ThrottledMCError("429", retry_after=0.0), BlockedMCError("50200")]
    with pytest.raises(RetriesExhausted):
        await call_with_retries(call, policy)


# --- Transactional Messaging ----------------------------------------------------------------------


def test_the_message_key_of_a_ledger_entry() -> None:
    first = message_key(ledger_key("d-1:packet-drawn-giver", None))
    assert first == message_key("d-1:packet-drawn-giver")  # every copy and retry: one message at MC
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)
    resend = message_key(ledger_key("d-1:packet-drawn-giver", (3, 17)))
    assert resend != first and resend != message_key(ledger_key("d-1:packet-drawn-giver", (3, 18)))
    long_id = "e" * 500 + ":packet-drawn-giver"
    assert len(message_key(long_id)) <= 100  # MC takes 100 characters at most


def transactional_client(api: Any) -> tuple[FakeMC, RestClient]:
    fake = FakeMC(api)
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return fake, RestClient(TokenManager(SETTINGS, http), http)


async def test_a_transactional_email_goes_to_its_message_key_with_the_sender_name_as_an_attribute() -> None:
    key = message_key("d-1:packet-drawn-drawer")
    fake, rest = transactional_client(
        lambda r: httpx.Response(
            202, json={"requestId": "req-1", "errorcode": 0, "responses": [{"messageKey": key}]}
        )
    )
    receipt = await rest.send_transactional(
        "email",
        "packet-drawn-drawer",
        key,
        to="ez@example.com",
        contact_key="M1",
        attributes={"FromName": "TABLE via EZTABLE", "NotificationId": "d-1:packet-drawn-drawer"},
    )
    (request,) = fake.api_requests
    assert request.method == "POST" and request.url.path == f"/messaging/v1/email/messages/{key}"
    assert json.loads(request.content) == {
        "definitionKey": "packet-drawn-drawer",
        "recipient": {
            "contactKey": "M1",
            "to": "ez@example.com",
            "attributes": {"FromName": "TABLE via EZTABLE", "NotificationId": "d-1:packet-drawn-drawer"},
        },
    }
    assert (receipt.request_id, receipt.recipient_send_id, receipt.already_sent) == ("req-1", key, False)


async def test_a_transactional_sms_sends_digits_and_its_text() -> None:
    fake, rest = transactional_client(
        lambda r: httpx.Response(
            202, json={"requestId": "req-2", "errorcode": 0, "responses": [{"messageKey": "k"}]}
        )
    )
    await rest.send_transactional(
        "sms", "packet-drawn-welcome", "k", to="+886912345678", contact_key="M1", text="hi"
    )
    body = json.loads(fake.api_requests[0].content)
    assert body["recipient"]["to"] == "886912345678" and body["content"] == {"message": "hi"}
    with pytest.raises(PermanentMCError):
        await rest.send_transactional("sms", "packet-drawn-welcome", "k", to="+886 91", contact_key="M1")


@pytest.mark.parametrize(
    "answer",
    [
        # The sandbox's (and, as far as documented, MC's) answer to a single send refused: 400.
        httpx.Response(
            400,
            json={
                "requestId": "r",
                "errorcode": 109110,
                "message": "MCMS_UTM_Validation_DuplicateMessageKey: Duplicate messageKey",
                "responses": [{"messageKey": "k", "errorcode": 109110, "message": "Duplicate messageKey"}],
            },
        ),
        # A 202 whose one response carries the refusal (the OpenAPI spec's errorCode spelling).
        httpx.Response(
            202,
            json={
                "requestId": "r",
                "errorcode": 109001,
                "responses": [{"messageKey": "k", "errorCode": 109110}],
            },
        ),
    ],
)
async def test_a_message_key_mc_already_has_is_a_duplicate_key_error(answer: httpx.Response) -> None:
    _, rest = transactional_client(lambda r: answer)
    with pytest.raises(DuplicateMessageKeyError):
        await rest.send_transactional("email", "d", "k", to="a@example.com", contact_key="M1")


async def test_other_refusals_stay_permanent_errors_with_mcs_code() -> None:
    _, rest = transactional_client(
        lambda r: httpx.Response(
            400,
            json={
                "requestId": "r",
                "errorcode": 109106,
                "message": "MCMS_UTM_Validation_MissingRequiredField_to",
            },
        )
    )
    with pytest.raises(PermanentMCError) as info:
        await rest.send_transactional("email", "d", "k", to="a@example.com", contact_key="M1")
    assert info.value.code == 109106 and not isinstance(info.value, DuplicateMessageKeyError)


@pytest.mark.parametrize(
    ("answer", "state", "accepted"),
    [
        (
            {"eventCategoryType": "TransactionalSendEvents.EmailSent", "info": {"messageKey": "k"}},
            "Sent",
            True,
        ),
        ({"eventCategoryType": "TransactionalSendEvents.EmailQueued"}, "Queued", True),
        (
            {
                "eventCategoryType": "TransactionalSendEvents.EmailNotSent",
                "info": {"statusCode": 2, "statusMessage": "Held"},
            },
            "NotSent",
            False,
        ),
        ({"eventCategoryType": "TransactionalSendEvents.SMSSent", "info": {}}, "Sent", True),
    ],
)
async def test_the_status_of_a_message(answer: dict[str, Any], state: str, accepted: bool) -> None:
    fake, rest = transactional_client(lambda r: httpx.Response(200, json={"requestId": "q", **answer}))
    found = await rest.transactional_status("email", "k")
    assert found is not None and (found.state, found.accepted) == (state, accepted)
    assert fake.api_requests[0].method == "GET"
    if state == "NotSent":
        assert (found.status_code, found.status_message) == ("2", "Held")


async def test_no_message_with_the_key_is_none() -> None:
    _, rest = transactional_client(
        lambda r: httpx.Response(404, json={"message": "MCMS_UTM_Runtime_ObjectNotFound", "errorcode": 30003})
    )
    assert await rest.transactional_status("email", "k") is None


# --- settings and the alert -----------------------------------------------------------------------


def test_the_api_settings_are_checked() -> None:
    assert Settings().mc_email_api == "triggered" and Settings().mc_sms_api == "mobileconnect"
    assert Settings().mc_max_requests_per_second == 20.0
    base = replace(Settings(), web_host="127.0.0.1")
    assert base.problems() == []
    assert any("MC_EMAIL_API" in p for p in replace(base, mc_email_api="classic").problems())
    # The Transactional Messaging API has no blackoutWindow: not with quiet hours.
    quiet = replace(base, mc_sms_api="transactional", sms_quiet_hours="21:00-09:00").problems()
    assert any("SMS_QUIET_HOURS" in p for p in quiet)
    assert replace(base, mc_sms_api="transactional", sms_quiet_hours="").problems() == []
    assert replace(base, mc_max_requests_per_second=-1).problems()


def test_mc_blocked_alert_fires_while_blocked_and_recovers() -> None:
    alerter = Alerter(AlertConfig())
    assert alerter.evaluate(Snapshot(), now=100) == []
    fired = alerter.evaluate(Snapshot(mc_block={"since": 90, "detail": "paused 60 s"}), now=100)
    assert [(n.rule, n.state) for n in fired] == [(MC_BLOCKED, "firing")]
    assert "50200" in fired[0].text and "10 s ago" in fired[0].text
    recovered = alerter.evaluate(Snapshot(), now=200)
    assert [(n.rule, n.state) for n in recovered] == [(MC_BLOCKED, "recovered")]


def test_the_pacer_reports_to_the_worker_figures() -> None:
    class Clients:
        rest = soap = sftp = object()
        pacer = Pacer(0)

    mc = metrics.instrument_mc(Clients())
    try:
        mc.pacer.answered("rest", response(429, BLOCKED), probe=False)
        assert metrics.MC_BLOCKED._value.get() == 1 and metrics.MC_BLOCK["since"]
        assert metrics.MC_THROTTLED.labels(family="rest", answer="blocked")._value.get() >= 1
        mc.pacer._close()
        assert metrics.MC_BLOCKED._value.get() == 0 and metrics.MC_BLOCK == {}
    finally:
        metrics.reset_for_tests()
        metrics.MC_BLOCKED.set(0)


def _raised_from(
    cause: BaseException | None, cls: type[TransientMCError] = TransientMCError
) -> TransientMCError:
    error = cls("SOAP Create: failed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "carried_out"),
    [
        (_raised_from(httpx.ReadTimeout("read")), True),  # MC may answer after the client gave up
        (_raised_from(httpx.RemoteProtocolError("cut")), True),
        (_raised_from(None), True),  # an error MC answered (a 5xx): it may come after the work
        (_raised_from(httpx.ConnectError("refused")), False),
        (_raised_from(httpx.ConnectTimeout("connect")), False),
        (_raised_from(AuthError("bad secret")), False),
        (_raised_from(None, ThrottledMCError), False),  # 429 / rate fault: a pace, nothing done
        (_raised_from(None, BlockedMCError), False),
    ],
)
def test_a_failed_call_counts_as_maybe_carried_out_unless_it_never_reached_mc(
    error: TransientMCError, carried_out: bool
) -> None:
    """The sender asks MC's send log before making again a classic call MC may have carried out."""
    assert may_have_reached_mc(error) is carried_out
