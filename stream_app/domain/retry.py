"""Retry policy for Marketing Cloud calls: exponential backoff with full jitter, a bounded budget."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from stream_app.mc import PACING_ERRORS, TransientMCError
from stream_app.settings import Settings

T = TypeVar("T")
# The least a call held back for MC's pace waits before it is made again.
PACING_FLOOR_SECONDS = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 900.0
    # x3 per try: quick second chances for a blip, yet 8 tries span ~30 min of a real outage.
    factor: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_max_attempts, settings.retry_base_seconds, settings.retry_max_seconds)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Full jitter spreads the retries of many workers after a shared outage; MC's Retry-After is
        a floor, never shortened by the jitter.
        """
        cap = min(self.max_seconds, self.base_seconds * self.factor ** (attempt - 1))
        jittered = (rng or random).uniform(cap / 2, cap)
        return max(jittered, retry_after or 0.0)


class RetriesExhausted(Exception):
    def __init__(self, attempts: int, last: TransientMCError) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


async def call_with_retries(
    call: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    on_retry: Callable[[int, TransientMCError, float], Awaitable[None]] | None = None,
    *,
    pace: Callable[[], Awaitable[object]] | None = None,
) -> tuple[T, int]:
    """Run `call(attempt)` until it succeeds; permanent errors pass through at once.

    With `pace` (the MC client's `Pacer.ready`), MC's answers about the pace rather than the
    request (a 429 or SOAP rate fault, the 50200 block, a call the circuit breaker held back) are
    not counted as attempts: the call waits for MC's pace and is made again, however long MC
    blocks (the mc_blocked alert says so). Without it they count like any transient failure.

    Returns the result and the number of attempts it took.
    """
    attempt = 1
    while True:
        try:
            return await call(attempt), attempt
        except TransientMCError as exc:
            if pace is not None and isinstance(exc, PACING_ERRORS):
                # MC's Retry-After is also the pacer's not-before; the floor keeps a client
                # without a paced transport from spinning.
                await asyncio.sleep(max(exc.retry_after or 0.0, PACING_FLOOR_SECONDS))
                await pace()
                continue
            if attempt >= policy.max_attempts:
                raise RetriesExhausted(attempt, exc) from exc
            wait = policy.delay(attempt, exc.retry_after)
            if on_retry is not None:
                await on_retry(attempt, exc, wait)
            await asyncio.sleep(wait)
            attempt += 1
