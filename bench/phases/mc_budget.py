"""Sends inside Marketing Cloud's call budget: a sandbox that keeps MC's published figures (2,500 REST
and 2,000 SOAP calls a minute), once with the senders batching emails (up to 50 per SOAP Create) and
once with one REST call per email, on a broker and sandbox of this phase's own (the run's topics hold
its other phases' backlogs, and the budget must count this phase's calls alone).

Email-only events (drawers without a mobile): an SMS is one MobileConnect call whatever the senders
do (each carries its own text), so SMS would measure MobileConnect, not the batching.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.data import DRAWN_TOPIC, Event, drawn, records
from bench.harness import Harness, log, wait_for
from bench.kafka import produce_all
from bench.procs import Stack

MEMBERS = 1_000  # imported once, then drawn among (each gets ~20 emails in the batched run)
SINGLE_SECONDS = 60.0  # how long the one-call-per-email rate is measured (it is ~40 emails/s)


def email_only_events(prefix: str, count: int, *, first_member: int, members: int) -> list[Event]:
    """Odd drawers (no mobile, so no SMS) and even givers: two emails per event."""
    out = []
    for n in range(count):
        drawer = first_member + 2 * ((n * 7919) % (members // 2)) + 1
        giver = first_member + 2 * ((n * 104_729 + 1) % (members // 2))
        out.append(drawn(f"{prefix}-{n:07d}", drawer, giver, 100 + n % 900))
    return out


async def _calls(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.get("/_sandbox/calls")
    r.raise_for_status()
    return dict(r.json())


def _total(report: dict[str, Any], key: str = "calls") -> int:
    return sum(m[key] for family in report.values() for m in family["minutes"])


async def _sent(http: httpx.AsyncClient) -> int:
    r = await http.get("/_sandbox/stats")
    r.raise_for_status()
    return int(r.json().get("messages", 0))


async def _measure(
    h: Harness,
    stack: Stack,
    http: httpx.AsyncClient,
    mode: str,
    env: dict[str, str],
    emails: int,
    bound: float,
) -> None:
    """Start a worker of its own group in `mode`, import the members, then send `emails` (or for
    `bound` seconds) and record the figures with the suffix `_<mode>`."""
    assert stack.kafka is not None
    worker = stack.start_worker(f"{h.app_id}-{mode}", None, **env)
    await asyncio.to_thread(worker.wait_ready)
    try:
        base = await _sent(http)
        # Every member once (a drawer and a giver per event): imported, then their first emails.
        warm = [drawn(f"{h.run_id}-{mode}-w{k:05d}", 2 * k + 1, 2 * k, 100) for k in range(MEMBERS // 2)]
        await produce_all(stack.kafka.bootstrap, DRAWN_TOPIC, records(warm))

        async def warmed() -> bool:
            return await _sent(http) >= base + 2 * len(warm)

        await wait_for(f"{mode}: members imported", warmed, timeout=h.opts.phase_timeout)
        events = email_only_events(f"{h.run_id}-{mode}", emails // 2, first_member=0, members=MEMBERS)
        calls0, sent0 = _total(await _calls(http)), await _sent(http)
        throttled0 = _total(await _calls(http), "throttled")
        started = time.monotonic()
        await produce_all(stack.kafka.bootstrap, DRAWN_TOPIC, records(events))

        async def done() -> bool:
            return await _sent(http) >= sent0 + len(events) * 2 or time.monotonic() - started > bound

        await wait_for(f"{mode}: sends", done, timeout=bound + h.opts.phase_timeout)
        elapsed = time.monotonic() - started
        report = await _calls(http)
        sent = await _sent(http) - sent0
        calls = _total(report) - calls0
        rate = sent / elapsed
        peak = max(family["peak_per_minute"] for family in report.values())
        h.figures[f"notifications_per_mc_call_{mode}"] = round(sent / max(calls, 1), 2)
        h.figures[f"mc_calls_per_min_peak_{mode}"] = peak
        h.figures[f"mc_throttled_calls_{mode}"] = _total(report, "throttled") - throttled0
        h.figures[f"notifications_per_hour_{mode}"] = round(rate * 3600)
        h.figures[f"mc_budget_sent_{mode}"] = sent
        log(f"{mode}: {sent} emails in {elapsed:.1f} s over {calls} MC calls; peak {peak} calls/min")
    finally:
        await asyncio.to_thread(worker.stop)


async def mc_budget(h: Harness) -> None:
    await h.set_phase("mc-budget")
    stack = Stack(h.stack.root / "mc-budget")
    try:
        stack.start_broker()
        sandbox = stack.start_sandbox(
            import_delay=1.0, message_cap=5_000_000, extra=("--calls-per-minute", "mc")
        )
        async with httpx.AsyncClient(base_url=sandbox.http_url, timeout=60) as http:
            # Each worker paced under the budget it spends (SOAP 2,000/min batched, REST 2,500/min single).
            batched = {"MC_SEND_BATCH": "50", "MC_MAX_REQUESTS_PER_SECOND": "30"}
            single = {"MC_SEND_BATCH": "1", "MC_MAX_REQUESTS_PER_SECOND": "40"}
            await _measure(h, stack, http, "batched", batched, 20_000, h.opts.phase_timeout)
            await _measure(h, stack, http, "single", single, 20_000, SINGLE_SECONDS)
            limits = {f: v["limit_per_minute"] for f, v in (await _calls(http)).items()}
        h.notes.append(f"mc budget phase: the sandbox held MC's call budget per minute {limits}")
    finally:
        stack.close()
