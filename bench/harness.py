"""What every phase of one bench run shares: the figures and notes it reports, the sandbox's counters,
Kafka offsets, the phase clock (CPU steal, RSS labels) and the run's one worker at a time."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from bench import steal
from bench.data import Event, records
from bench.kafka import Offsets, produce_all
from bench.procs import Stack
from bench.rss import RssSampler
from stream_app.cli.launch import WorkerProcess


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.25
) -> float:
    """Await `check()` until true; returns the monotonic time it became true. Raises on the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        await asyncio.sleep(interval)


class Harness:
    def __init__(self, stack: Stack, opts: argparse.Namespace) -> None:
        assert stack.kafka is not None and stack.sandbox is not None
        self.stack = stack
        self.opts = opts
        self.bootstrap = stack.kafka.bootstrap
        self.run_id = uuid.uuid4().hex[:6]
        self.app_id = f"bench-{self.run_id}"  # every worker of the run: tables carry over
        self.http = httpx.AsyncClient(base_url=stack.sandbox.http_url, timeout=60)
        self.offsets = Offsets(self.bootstrap)
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.worker: WorkerProcess | None = None
        self.sampler: RssSampler | None = None
        self.samplers: list[RssSampler] = []
        self.steal = steal.StealMeter()

    async def start(self) -> None:
        await self.offsets.start()

    async def close(self) -> None:
        """The whole run's figures (CPU steal, peak RSS over every worker); then the clients closed."""
        self.steal.switch(None)
        steal_figures = self.steal.figures()
        self.figures.update(steal_figures)
        self.notes.extend(steal.notes(steal_figures))
        for sampler in self.samplers:
            sampler.stop()
        if self.samplers:
            peak = max(sampler.peak_mb() for sampler in self.samplers)
            self.figures["worker_peak_rss_mb"] = round(peak, 1)
        await self.offsets.close()
        await self.http.aclose()

    # -- the sandbox

    async def stats(self) -> dict[str, int]:
        r = await self.http.get("/_sandbox/stats")
        r.raise_for_status()
        return dict(r.json())

    async def sent(self) -> int:
        s = await self.stats()
        return int(s.get("messages", 0))

    # -- Kafka

    async def produce(self, topic: str, events: Iterable[Event]) -> int:
        """The events to `topic` in bulk, spread over its partitions; returns the count."""
        return await produce_all(self.bootstrap, topic, records(events))

    # -- phases and workers

    async def set_phase(self, phase: str) -> None:
        if self.sampler is not None:
            self.sampler.phase = phase
        self.steal.switch(phase)
        log(phase)

    async def start_worker(self, stages: str = "", profile: Path | None = None) -> WorkerProcess:
        """A worker of the run's consumer group (its tables carry over), after the previous one stopped.

        `stages`: `WORKER_STAGES` (all when empty). The intake phase runs without senders: in one
        worker they share the Faust consumer loop, so intake would be measured at MC's send pace.
        """
        await self.stop_worker()
        await self.set_phase("worker-start")
        env = {"WORKER_STAGES": stages} if stages else {}
        worker = self.stack.start_worker(self.app_id, profile=profile, **env)
        self.sampler = RssSampler(worker.pid, phase="worker-start")
        self.sampler.start()
        self.samplers.append(self.sampler)
        await asyncio.to_thread(worker.wait_ready)
        self.worker = worker
        return worker

    async def stop_worker(self) -> None:
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)
            self.worker = None
            if self.sampler is not None:
                self.sampler.stop()
                self.sampler = None
