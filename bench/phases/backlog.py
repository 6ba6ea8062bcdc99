"""Worker RSS with a big backlog waiting in packet.drawn: it must not grow with the backlog."""

from __future__ import annotations

import asyncio
import time

from bench.data import DRAWN_TOPIC, known_events
from bench.harness import Harness, log
from bench.phases.intake import intake_group


async def backlog_rss(h: Harness) -> None:
    """RSS with a backlog of `--backlog` small events waiting in packet.drawn, then held."""
    assert h.sampler is not None
    rss_before = h.sampler.peak_mb("sends")
    await h.set_phase("backlog-produce")
    group = intake_group(h.app_id)
    committed_before = await h.offsets.committed(group, DRAWN_TOPIC)
    started = time.monotonic()
    count = await h.produce(DRAWN_TOPIC, known_events(f"{h.run_id}-m", h.opts.backlog, seed=11, small=True))
    took = time.monotonic() - started
    await h.set_phase("backlog-hold")
    await asyncio.sleep(h.opts.hold_backlog_seconds)  # observing RSS while the backlog waits
    processed = await h.offsets.committed(group, DRAWN_TOPIC) - committed_before
    waiting = await h.offsets.end(DRAWN_TOPIC) - await h.offsets.committed(group, DRAWN_TOPIC)
    h.figures["backlog_events"] = count
    h.figures["backlog_produce_s"] = round(took, 1)
    h.figures["rss_mb_before_backlog"] = round(rss_before, 1)
    h.figures["rss_mb_peak_with_backlog"] = round(h.sampler.peak_mb("backlog-produce", "backlog-hold"), 1)
    h.figures["backlog_processed_meanwhile"] = processed
    h.figures["backlog_still_waiting"] = waiting
    log(f"backlog: {count} events produced in {took:.1f} s; {waiting} still waiting after the hold")
