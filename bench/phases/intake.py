"""The intake worker's phases (no senders): the warm-up that makes every member known, then intake
throughput from packet.drawn to subscriber.ready on a backlog already waiting."""

from __future__ import annotations

import time

from bench.data import DRAWN_TOPIC, MEMBERS, Event, warmup_events
from bench.harness import Harness, log, wait_for
from stream_app.contract.topics import READY_TOPIC

# The intake phase's worker: everything up to subscriber.ready, no senders.
INTAKE_STAGES = "intake,batcher,imports"


def intake_group(app_id: str) -> str:
    """The intake's own consumer group (stream_app/stages/intake/service.py)."""
    return f"{app_id}-intake"


async def warmup(h: Harness) -> None:
    """All MEMBERS members through windows and imports, so they are known to MC and the worker.

    Done once the worker's known-subscribers changelog has a row for each: its sends are left
    for the sends phase (at MC's pace they would take most of the run's ten minutes here)."""
    await h.set_phase("warmup")
    events = warmup_events(f"{h.run_id}-w")
    changelog = f"{h.app_id}-known-subscribers-changelog"
    base = await h.offsets.end(changelog)
    started = time.monotonic()
    await h.produce(DRAWN_TOPIC, events)

    async def all_known() -> bool:
        return await h.offsets.end(changelog) >= base + MEMBERS

    done = await wait_for("warm-up imports", all_known, timeout=h.opts.phase_timeout)
    elapsed = done - started
    h.figures["warmup_events"] = len(events)
    h.figures["warmup_imports_per_s"] = round(MEMBERS / elapsed, 1)
    log(f"warm-up: {len(events)} events, {MEMBERS} new subscribers imported and known in {elapsed:.1f} s")


async def intake(h: Harness, backlog: list[Event]) -> None:
    """The backlog through validation, dedupe and batching to subscriber.ready (no senders).

    Measured as the baseline is: on a backlog already waiting, from the first output to the
    last. The backlog is produced while no worker runs (produced with the worker running, it
    took 0.4-3 s of the ~10 s measured, on the CPU and broker the intake needs), then a worker
    starts on it, and the rate counts the notifications made ready after the first ones seen.
    """
    await h.stop_worker()
    await h.set_phase("intake-backlog")
    expected = sum(e.notifications for e in backlog)
    per_event = expected / len(backlog)
    ready_base = await h.offsets.end(READY_TOPIC)
    group = intake_group(h.app_id)
    committed_base = await h.offsets.committed(group, DRAWN_TOPIC)
    await h.produce(DRAWN_TOPIC, backlog)
    profile = h.opts.profile
    trigger = profile.with_name(profile.name + ".start") if profile else None
    if trigger is not None:
        trigger.unlink(missing_ok=True)
    await h.start_worker(INTAKE_STAGES, profile=profile)
    await h.set_phase("intake")  # start_worker switched to "worker-start"
    if trigger is not None:
        trigger.touch()
    first = 0  # notifications already made ready when the first were seen

    async def flowing() -> bool:
        nonlocal first
        first = await h.offsets.end(READY_TOPIC) - ready_base
        return first > 0

    # Polled often: the intake takes ~10 s, and a 0.25 s poll would add up to 2.5% to it.
    started = await wait_for("intake output", flowing, timeout=h.opts.phase_timeout, interval=0.05)
    consumed_first = await h.offsets.committed(group, DRAWN_TOPIC) - committed_base

    async def all_ready() -> bool:
        return await h.offsets.end(READY_TOPIC) >= ready_base + expected

    try:
        done = await wait_for(
            "intake to subscriber.ready", all_ready, timeout=h.opts.intake_seconds, interval=0.05
        )
    except TimeoutError:
        # Bounded: the rate over the measuring interval, and how long the whole backlog would take.
        done = time.monotonic()
    got = await h.offsets.end(READY_TOPIC) - ready_base
    consumed = await h.offsets.committed(group, DRAWN_TOPIC) - committed_base
    elapsed = done - started
    events = (got - first) / per_event
    if got < expected:
        h.notes.append(
            f"intake: {got / per_event:,.0f} of {len(backlog):,} events ({got:,} notifications) reached "
            f"{READY_TOPIC} in the {h.opts.intake_seconds:.0f} s interval; the whole backlog would take "
            f"~{len(backlog) / max(events / elapsed, 1e-9):,.0f} s"
        )
    h.figures["intake_events_per_s"] = round(events / elapsed, 1)
    h.figures["intake_notifications_per_s"] = round((got - first) / elapsed, 1)
    h.figures["intake_consumed_events_per_s"] = round((consumed - consumed_first) / elapsed, 1)
    log(
        f"intake: {events:,.0f} events ({got - first} notifications, after the first {first}) "
        f"to {READY_TOPIC} in {elapsed:.1f} s = {events / elapsed:,.0f} events/s"
    )
