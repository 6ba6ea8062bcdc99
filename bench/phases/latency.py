"""Draw-to-send latency: events produced one at a time at a steady rate, joined with the sandbox's
`received_at` of their sends on the `EventId` attribute; new subscribers first, then known ones."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from aiokafka import AIOKafkaProducer

from bench.data import DRAWN_TOPIC, NEW_MEMBER_BASE, Event, known_events, new_member_events
from bench.harness import Harness, log, wait_for


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def steady(bootstrap: str, events: list[Event], rate: float) -> dict[str, float]:
    """Produce `events` at `rate`/s, one at a time; returns event_id -> produce time (epoch s)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    produced: dict[str, float] = {}
    try:
        start = time.monotonic()
        for i, event in enumerate(events):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            produced[event.event_id] = time.time()
            await producer.send(DRAWN_TOPIC, key=event.key, value=event.value)
        await producer.flush()
    finally:
        await producer.stop()
    return produced


async def received_at(h: Harness) -> dict[str, list[float]]:
    """EventId -> the sandbox's `received_at` (epoch s) of each send it accepted for that event."""
    r = await h.http.get("/_sandbox/messages")
    r.raise_for_status()
    received: dict[str, list[float]] = {}
    for m in r.json():
        event_id = (m.get("attributes") or {}).get("EventId")
        if event_id:
            at = dt.datetime.fromisoformat(m["received_at"].replace("Z", "+00:00")).timestamp()
            received.setdefault(event_id, []).append(at)
    return received


async def latency(h: Harness) -> None:
    rate, seconds = h.opts.latency_rate, h.opts.latency_seconds
    n = int(rate * seconds)
    # New members first: the known phase then draws among those very members, now imported.
    groups = {
        "new": new_member_events(f"{h.run_id}-n", n, start=0),
        "known": list(known_events(f"{h.run_id}-k", n, seed=7, first=NEW_MEMBER_BASE, members=2 * n)),
    }
    produced: dict[str, dict[str, float]] = {}
    for name, events in groups.items():
        await h.set_phase(f"latency-{name}")
        base = await h.sent()
        produced[name] = await steady(h.bootstrap, events, rate)
        expected = sum(e.notifications for e in events)

        async def all_sent(base: int = base, expected: int = expected) -> bool:
            return await h.sent() >= base + expected

        await wait_for(f"latency-{name} sends", all_sent, timeout=60)
    received = await received_at(h)
    for name, times in produced.items():
        lat = [(at - t0) * 1000 for eid, t0 in times.items() for at in received.get(eid, [])]
        for q in (50, 95, 99):
            h.figures[f"latency_ms_p{q}_{name}"] = round(percentile(lat, q), 1)
        h.figures[f"latency_sends_{name}"] = len(lat)
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        log(f"latency {name}: {len(lat)} sends, p50 {p50:.0f} ms, p99 {p99:.0f} ms")


async def latency_split(h: Harness) -> None:
    """New-subscriber latency with the senders on a worker of their own (`WORKER_STAGES=senders`)
    beside an `intake,batcher,imports` worker, both in the run's group: the deployment that scales
    the senders apart (issue 17), measured beside the one-worker figure of `latency`."""
    rate, seconds = h.opts.latency_rate, h.opts.latency_seconds
    n = int(rate * seconds)
    events = new_member_events(f"{h.run_id}-s", n, start=10 * n)  # members no phase has seen
    await h.stop_worker()
    await h.set_phase("latency-split")
    workers = [h.stack.start_worker(h.app_id, WORKER_STAGES=s) for s in ("intake,batcher,imports", "senders")]
    try:
        await asyncio.gather(*(asyncio.to_thread(w.wait_ready) for w in workers))
        base = await h.sent()
        produced = await steady(h.bootstrap, events, rate)
        expected = sum(e.notifications for e in events)

        async def all_sent() -> bool:
            return await h.sent() >= base + expected

        await wait_for("latency-split sends", all_sent, timeout=60)
    finally:
        for worker in workers:
            await asyncio.to_thread(worker.stop)
    received = await received_at(h)
    lat = [(at - t0) * 1000 for eid, t0 in produced.items() for at in received.get(eid, [])]
    for q in (50, 95, 99):
        h.figures[f"latency_ms_p{q}_new_split"] = round(percentile(lat, q), 1)
    log(
        f"latency new, senders apart: {len(lat)} sends, p50 {percentile(lat, 50):.0f} ms, "
        f"p99 {percentile(lat, 99):.0f} ms"
    )
