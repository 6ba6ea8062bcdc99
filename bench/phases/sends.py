"""MC sends/s: the sandbox's message counter over a measuring interval, once sends flow."""

from __future__ import annotations

import asyncio
import time

from bench.harness import Harness, log, wait_for


async def sends(h: Harness) -> None:
    """MC sends/s over the backlog of ready notifications the intake phase left."""
    await h.set_phase("sends")
    base = await h.sent()

    async def flowing() -> bool:
        return await h.sent() > base + 100

    first = await wait_for("sends to flow", flowing, timeout=60)
    n0 = await h.sent()
    await asyncio.sleep(h.opts.send_seconds)  # a measuring interval, not a wait for a condition
    n1 = await h.sent()
    elapsed = time.monotonic() - first
    h.figures["sends_per_s"] = round((n1 - n0) / elapsed, 1)
    log(f"sends: {n1 - n0} sends in {elapsed:.1f} s = {(n1 - n0) / elapsed:,.0f}/s")
