"""MC's API call budget per account and API family (reference §6; issue 23).

MC throttles an account's calls per API family over a sliding minute: about 2,500 REST calls (support's
figure) and 2,000 SOAP calls (the older documented one). Over the budget a REST call gets HTTP 429
with ``Retry-After`` and errorcode 50100, a SOAP call HTTP 500 with the ``Rate Limited`` fault, code 17
(no Retry-After: MC gives SOAP callers none). More REST calls in flight at once than MC allows gets
errorcode 50200 "Your requests are temporarily blocked." with no Retry-After; MC documents no such
bound for SOAP, so SOAP has none. MobileConnect routes are REST calls.

Flags: ``--calls-per-minute rest=2500,soap=2000`` (``mc`` for those figures; a family left out is not
limited) and ``--max-concurrent-calls N`` (REST; 0 = no bound), ``--no-call-budget`` to turn both off.
The default is off: the bench drives the sandbox far beyond MC's figures on purpose.

Calls are counted whether or not a budget is set: ``GET /_sandbox/calls`` shows, per family, the
calls of the last sliding minute, the busiest sliding minute seen (``peak_per_minute``: what a suite
would need MC to allow), the throttled and blocked ones, and per calendar minute. ``POST
/_sandbox/calls`` changes the budget of a running sandbox (a test lifting a block, say).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

FAMILIES = ("rest", "soap")
MC_FIGURES = {"rest": 2500, "soap": 2000}
WINDOW = 60.0
MINUTES_KEPT = 120


class BudgetError(ValueError):
    pass


def parse_per_minute(value: str) -> dict[str, int]:
    """``"rest=2500,soap=2000"`` / ``"mc"`` / ``"off"`` -> {family: calls per minute}."""
    text = value.strip().lower()
    if text in ("", "off", "none"):
        return {}
    if text == "mc":
        return dict(MC_FIGURES)
    out: dict[str, int] = {}
    for part in text.split(","):
        family, _, number = part.partition("=")
        family = family.strip()
        if family not in FAMILIES or not number.strip().isdigit() or int(number) < 1:
            raise BudgetError(f"expected rest=N,soap=N (N >= 1) or mc or off, got {value!r}")
        out[family] = int(number)
    return out


@dataclass
class Family:
    limit: int | None  # calls per sliding minute; None = not limited
    admitted: deque[float] = field(default_factory=deque)  # monotonic stamps within the window
    throttled: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    peak: int = 0
    throttled_total: int = 0
    blocked_total: int = 0
    minutes: dict[str, dict[str, int]] = field(default_factory=dict)

    def purge(self, now: float) -> None:
        for stamps in (self.admitted, self.throttled):
            while stamps and now - stamps[0] >= WINDOW:
                stamps.popleft()

    def count(self, what: str) -> None:
        minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
        bucket = self.minutes.get(minute)
        if bucket is None:
            bucket = self.minutes[minute] = {"calls": 0, "throttled": 0, "blocked": 0}
            while len(self.minutes) > MINUTES_KEPT:
                del self.minutes[next(iter(self.minutes))]
        bucket[what] += 1


@dataclass(frozen=True)
class Verdict:
    """``ok``, ``rate`` (over the minute's budget, retry after ``retry_after`` s) or ``concurrency``."""

    outcome: str
    retry_after: int = 0


class CallBudget:
    def __init__(self, per_minute: dict[str, int], max_concurrent: int = 0) -> None:
        self.max_concurrent = max_concurrent
        self.families = {f: Family(per_minute.get(f)) for f in FAMILIES}

    def admit(self, family: str) -> Verdict:
        """Decide one call; an admitted call must be ``release``d when answered."""
        fam = self.families[family]
        now = time.monotonic()
        fam.purge(now)
        if fam.limit is not None and len(fam.admitted) >= fam.limit:
            fam.throttled.append(now)
            fam.throttled_total += 1
            fam.count("throttled")
            return Verdict("rate", max(1, math.ceil(WINDOW - (now - fam.admitted[0]))))
        if family == "rest" and self.max_concurrent and fam.in_flight >= self.max_concurrent:
            fam.blocked_total += 1
            fam.count("blocked")
            return Verdict("concurrency")
        fam.admitted.append(now)
        fam.peak = max(fam.peak, len(fam.admitted))
        fam.in_flight += 1
        fam.count("calls")
        return Verdict("ok")

    def release(self, family: str) -> None:
        self.families[family].in_flight -= 1

    def reset(self) -> None:
        for name, fam in self.families.items():
            self.families[name] = Family(fam.limit, in_flight=fam.in_flight)

    def report(self) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {}
        for name, fam in self.families.items():
            fam.purge(now)
            out[name] = {
                "limit_per_minute": fam.limit,
                "max_concurrent": (self.max_concurrent or None) if name == "rest" else None,
                "last_minute": len(fam.admitted),
                "throttled_last_minute": len(fam.throttled),
                "peak_per_minute": fam.peak,
                "throttled_total": fam.throttled_total,
                "blocked_total": fam.blocked_total,
                "in_flight": fam.in_flight,
                "minutes": [{"minute": m, **counts} for m, counts in fam.minutes.items()],
            }
        return out


BUDGET: web.AppKey[CallBudget] = web.AppKey("call_budget", CallBudget)


async def calls_handler(request: web.Request) -> web.Response:
    """``GET /_sandbox/calls``: per family, the calls counted (see the module's docstring)."""
    return web.json_response(request.app[BUDGET].report())


async def configure_handler(request: web.Request) -> web.Response:
    """``POST /_sandbox/calls``: change the budget of a running sandbox, as MC lifts a block or a
    contract changes: ``{"calls_per_minute": "rest=60" | "mc" | "off", "max_concurrent_calls": N}``
    (either; a field left out stays). Counts are kept."""
    budget = request.app[BUDGET]
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise BudgetError("expected a JSON object")
        if "calls_per_minute" in body:
            per_minute = parse_per_minute(str(body["calls_per_minute"]))
            for name, fam in budget.families.items():
                fam.limit = per_minute.get(name)
        if "max_concurrent_calls" in body:
            budget.max_concurrent = max(0, int(body["max_concurrent_calls"]))
    except (BudgetError, ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(budget.report())
