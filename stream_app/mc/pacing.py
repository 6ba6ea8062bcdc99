"""Never out-run Marketing Cloud: one pace for every MC call a worker makes (reference §6).

Three things, shared by all the REST and SOAP calls of one worker (one `Pacer` per `MarketingCloud`):

- A token bucket, `MC_MAX_REQUESTS_PER_SECOND` (0: off): calls beyond the rate wait for their turn,
  first come first served, with a burst of one second's worth.
- MC's own "not before": a REST 429 with `Retry-After` (errorcode 50100), or a SOAP "Rate Limited"
  fault (code 17, which carries no Retry-After: the pacer waits 1 s, doubling while MC keeps
  answering so, up to 30 s), holds back every call of the worker until then, not only the one that
  met it: the others would only meet the same answer.
- A circuit breaker for MC's account-level block, errorcode 50200 "Your requests are temporarily
  blocked." (no Retry-After; MC says to contact support). Every call then waits: nothing is sent
  and the senders' retries are not spent on it. After `MC_BLOCKED_PAUSE_SECONDS` the breaker
  half-opens: one call goes to MC as a probe while the others wait for its answer. Any answer but
  50200 closes it; 50200 opens it again for twice the pause (at most 15 min, or the pause itself if
  longer); so does a block met again soon after closing. A probe that got no answer at all (a
  timeout) lets the next call probe.

The pacing happens in the HTTP transport under the MC clients (`PacedTransport`), so no call can
go round it. The senders also wait on `ready()` before each try, so that they look at their
partition assignment after a long pause, not before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson

from stream_app.mc.errors import BlockedMCError, parse_retry_after

log = logging.getLogger(__name__)

Clock = Callable[[], float]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BLOCKED_CODE = 50200
MAX_BLOCKED_PAUSE = 900.0
SOAP_PAUSE_FIRST, SOAP_PAUSE_MAX = 1.0, 30.0


class TokenBucket:
    """`rate` calls a second on average, `burst` at once; waiters are served in arrival order.

    A call reserves its token at once, taking the bucket into debt when it is empty, and sleeps
    until the debt it made is paid back: O(1) per call and fair, with no thundering herd."""

    def __init__(self, rate: float, *, burst: float | None = None, clock: Clock = time.monotonic) -> None:
        self.rate = max(0.0, rate)
        self.capacity = max(1.0, burst if burst is not None else self.rate)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def reserve(self) -> float:
        """Take a token; returns how long to wait before using it (0: now)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def refund(self) -> None:
        """Give back a token reserved by a call that did not go out after all."""
        if self.enabled:
            self._tokens = min(self.capacity, self._tokens + 1.0)


@dataclass
class Listener:
    """Hooks for the worker's figures (ops/metrics.py wires them); all optional."""

    blocked: Callable[[float | None, str], None] | None = None  # since (None: unblocked), detail
    throttled: Callable[[str, str], None] | None = None  # family, answer: rate_limited | blocked
    waited: Callable[[str, float], None] | None = None  # reason, seconds


class Pacer:
    def __init__(
        self,
        rate: float,
        *,
        blocked_pause: float = 60.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.bucket = TokenBucket(rate, clock=clock)
        self.blocked_pause = max(0.1, blocked_pause)
        self.listener = Listener()
        self._clock = clock
        self._wall = wall
        self.not_before = 0.0  # monotonic; MC's Retry-After (or our pause after a SOAP rate fault)
        self._soap_pause = SOAP_PAUSE_FIRST
        self.state = CLOSED
        self.open_until = 0.0
        self.pause = self.blocked_pause
        self.blocked_since: float | None = None  # wall clock, while not closed
        self._closed_at = -1e18
        self._probe: object | None = None  # the call probing MC while half-open
        self._changed = asyncio.Event()

    # --- state --------------------------------------------------------------------------------

    @property
    def blocked(self) -> bool:
        return self.state != CLOSED

    def describe(self) -> str:
        if self.state == CLOSED:
            return "closed"
        left = max(0.0, self.open_until - self._clock())
        if self.state == OPEN:
            return f"open, MC probed again in {left:.0f} s"
        return "half-open, one call probing MC"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float | None) -> None:
        event = self._changed
        if timeout is not None and timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _refresh(self) -> None:
        if self.state == OPEN and self._clock() >= self.open_until:
            self.state = HALF_OPEN
            self._probe = None
            log.info("MC circuit breaker half-open: probing MC with one call")
            self._notify()

    def trip(self, detail: str, *, probe: bool = False) -> None:
        """MC answered 50200: stop every call for the pause (longer when it keeps happening)."""
        now = self._clock()
        if self.state == OPEN and not probe:
            return  # calls in flight when the block began meet it too; the pause stands
        again = probe or now - self._closed_at < 2 * self.pause
        longest = max(MAX_BLOCKED_PAUSE, self.blocked_pause)
        self.pause = min(longest, self.pause * 2) if again else self.blocked_pause
        self.state, self.open_until, self._probe = OPEN, now + self.pause, None
        if self.blocked_since is None:
            self.blocked_since = self._wall()
        log.error(
            "MC blocked this account's calls (errorcode 50200, %s): all MC calls paused for %.1f s",
            detail,
            self.pause,
        )
        if self.listener.blocked:
            self.listener.blocked(self.blocked_since, f"{detail}; paused {self.pause:.0f} s, then one probe")
        self._notify()

    def _close(self) -> None:
        lasted = self._wall() - (self.blocked_since or self._wall())
        self.state, self._probe, self.blocked_since = CLOSED, None, None
        self._closed_at = self._clock()
        log.warning("MC answered the probe: circuit breaker closed after %.0f s, calls resume", lasted)
        if self.listener.blocked:
            self.listener.blocked(None, "")
        self._notify()

    def retry_after(self, seconds: float, family: str) -> None:
        """MC asked this worker to wait (429 Retry-After, or a SOAP rate fault): every call waits."""
        until = self._clock() + max(0.0, seconds)
        if until > self.not_before:
            self.not_before = until
            log.warning("MC rate-limited a %s call: all MC calls wait %.1f s", family, seconds)
        if self.listener.throttled:
            self.listener.throttled(family, "rate_limited")

    # --- waiting ------------------------------------------------------------------------------

    async def ready(self) -> float:
        """Until a call may be tried: not while the breaker is open, nor before MC's not-before.
        (Half-open counts as ready: the gate lets one call probe and holds the rest.) Returns the
        seconds waited (0: none)."""
        started = self._clock()
        reason = ""
        while True:
            self._refresh()
            now = self._clock()
            if self.state == OPEN:
                reason = "blocked"
                await self._wait_change(self.open_until - now)
                continue
            if now < self.not_before:
                reason = reason or "retry_after"
                await asyncio.sleep(self.not_before - now)
                continue
            break
        waited = self._clock() - started if reason else 0.0
        if reason and self.listener.waited:
            self.listener.waited(reason, waited)
        return waited

    async def gate(self, token: object) -> bool:
        """Before one call goes out. Returns True when this call is the half-open breaker's probe.
        Raises BlockedMCError, not sent, when the probe this call waited for met the block again:
        the caller waits (`ready`) and decides anew whether the call is still wanted."""
        while True:
            await self.ready()
            if self.state == HALF_OPEN:
                if self._probe is None:
                    self._probe = token
                    return True
                started = self._clock()
                while self.state == HALF_OPEN and self._probe is not None:
                    await self._wait_change(None)
                if self.listener.waited:
                    self.listener.waited("blocked", self._clock() - started)
                if self.state == OPEN:
                    raise BlockedMCError("MC is blocking this account's calls (50200): not sent")
                continue
            delay = self.bucket.reserve()
            if delay > 0:
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    self.bucket.refund()
                    raise
                if self.listener.waited:
                    self.listener.waited("rate_limit", delay)
            if self._clock() >= self.not_before and self.state == CLOSED:
                return False
            # MC asked to wait (or blocked) while this call waited for its token: wait again.

    def answered(self, family: str, response: httpx.Response | None, *, probe: bool) -> None:
        """After one call: read MC's answer for what it says about the pace (None: no answer)."""
        if response is None:
            if probe and self.state == HALF_OPEN and self._probe is not None:
                self._probe = None  # no answer: the next call probes
                self._notify()
            return
        kind = classify(family, response)
        if kind == "blocked":
            if self.listener.throttled:
                self.listener.throttled(family, "blocked")
            self.trip(f"{family} HTTP {response.status_code}", probe=probe)
            return
        if kind == "rate_limited":
            seconds = retry_after_of(response)
            if seconds is None:  # SOAP's fault gives none: back off by ourselves, doubling
                seconds, self._soap_pause = self._soap_pause, min(SOAP_PAUSE_MAX, self._soap_pause * 2)
            self.retry_after(seconds, family)
        elif response.status_code < 400:
            self._soap_pause = SOAP_PAUSE_FIRST
        if probe and self.state == HALF_OPEN:
            self._close()  # MC answered the probe with anything but the block


def classify(family: str, response: httpx.Response) -> str:
    """`blocked` (50200), `rate_limited` (REST 429 / SOAP fault 17) or `` for any other answer."""
    status = response.status_code
    if family == "soap":
        if status in (429, 500) and b"Rate Limited" in response.content[:8192]:
            return "rate_limited"
        return "rate_limited" if status == 429 else ""
    if status != 429:
        return ""
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = {}
    code = body.get("errorcode", body.get("errorCode")) if isinstance(body, dict) else None
    if str(code) == str(BLOCKED_CODE):
        return "blocked"
    return "rate_limited"


def retry_after_of(response: httpx.Response) -> float | None:
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    if seconds is not None:
        return seconds
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and isinstance(body.get("retryAfter"), int | float):
        return max(0.0, float(body["retryAfter"]))
    return None


def family_of(url: httpx.URL) -> str | None:
    """Which of MC's budgets a request spends: `soap`, `rest`, or None (the token endpoint and the
    WSDL, which MC counts in neither)."""
    path = url.path.lower()
    if path.endswith("/v2/token") or path.endswith("/v1/requesttoken"):
        return None
    if path.endswith(".wsdl") or path.endswith(".xsd"):
        return None
    return "soap" if path.endswith("/service.asmx") else "rest"


class PacedTransport(httpx.AsyncBaseTransport):
    """The MC clients' transport with the pacer in front: every REST and SOAP request passes the
    gate before it leaves and tells the pacer what MC answered."""

    def __init__(self, inner: httpx.AsyncBaseTransport, pacer: Pacer) -> None:
        self.inner = inner
        self.pacer = pacer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        family = family_of(request.url)
        if family is None:
            return await self.inner.handle_async_request(request)
        probe = await self.pacer.gate(object())  # BlockedMCError reaches the client's caller as it is
        response: httpx.Response | None = None
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()  # MC's answers are small; the pacer reads the error bodies
            return response
        finally:
            self.pacer.answered(family, response, probe=probe)

    async def aclose(self) -> None:
        await self.inner.aclose()
