"""`python -m bench` (`make bench`): throughput, latency, memory and upload figures of one worker.

One run starts its own Apache Kafka broker and MC sandbox on free ports, measures, prints a table and,
as the last line, one JSON object; it appends the figures to bench/results.csv. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.data import MEMBERS, NEW_MEMBER_BASE, Event, known_events, new_member_events, warmup_events
from bench.kafka import Offsets, bulk_producer, create_topics, produce_bulk
from bench.procs import RssSampler, Stack, Worker

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.csv"
PARTITIONS = 4
DRAWN = "packet.drawn"
READY = "subscriber.ready"
# The intake phase's worker: everything up to subscriber.ready, no senders.
INTAKE_STAGES = "intake,batcher,imports"
BASE_IN, BASE_OUT = "bench.baseline.in", "bench.baseline.out"
FAUST_OUT = "bench.faust.out"


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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# CPU steal above this share of a phase's CPU time makes its figures incomparable with other runs'.
STEAL_NOTED_PCT = 20.0


class StealMeter:
    """The hypervisor's share of this machine's CPU time (`steal`) per phase.

    On this shared 2-core VM it swung from ~5% to 62% within minutes: the 400-event latency
    experiment gave a new-subscriber p99 of 2.5 s and 9.8 s on the same code, and the raw loop
    ran at 20k-42k msgs/s on one day. A figure means little without it.
    """

    FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

    def __init__(self) -> None:
        self.phase: str | None = None
        self.last = self._read()
        self.by_phase: dict[str, tuple[float, float]] = {}  # phase -> steal, all CPU time

    def _read(self) -> tuple[float, float]:
        times = psutil.cpu_times()
        steal = getattr(times, "steal", 0.0)  # Linux only; elsewhere none is reported
        return steal, sum(getattr(times, name, 0.0) for name in self.FIELDS)

    def switch(self, phase: str | None) -> None:
        now = self._read()
        if self.phase is not None:
            steal, total = self.by_phase.get(self.phase, (0.0, 0.0))
            self.by_phase[self.phase] = (steal + now[0] - self.last[0], total + now[1] - self.last[1])
        self.phase, self.last = phase, now

    def pct(self, *phases: str) -> float:
        picked = [v for k, v in self.by_phase.items() if not phases or k in phases]
        total = sum(t for _, t in picked)
        return round(100 * sum(s for s, _ in picked) / total, 1) if total else 0.0


class Run:
    def __init__(self, stack: Stack, opts: argparse.Namespace) -> None:
        self.stack = stack
        self.opts = opts
        assert stack.kafka is not None and stack.sandbox is not None
        self.bootstrap = stack.kafka.bootstrap
        self.sandbox_url = stack.sandbox.http_url
        self.run_id = uuid.uuid4().hex[:6]
        self.http = httpx.AsyncClient(base_url=self.sandbox_url, timeout=60)
        self.offsets = Offsets(self.bootstrap)
        self.figures: dict[str, Any] = {}
        self.notes: list[str] = []
        self.worker_app_id = f"bench-{self.run_id}"  # every worker of the run: tables carry over
        self.worker: Worker | None = None
        self.sampler: RssSampler | None = None
        self.samplers: list[RssSampler] = []
        self.steal = StealMeter()

    # -- sandbox

    async def stats(self) -> dict[str, int]:
        r = await self.http.get("/_sandbox/stats")
        r.raise_for_status()
        return dict(r.json())

    async def sent(self) -> int:
        s = await self.stats()
        return int(s.get("messages", 0))

    async def set_phase(self, phase: str) -> None:
        if self.sampler is not None:
            self.sampler.phase = phase
        self.steal.switch(phase)
        log(phase)

    # -- phases

    async def baseline(self, backlog: list[Event]) -> None:
        """Plain aiokafka consume -> orjson decode -> produce over the same records: the ceiling."""
        await self.set_phase("baseline")
        producer = bulk_producer(self.bootstrap)
        await producer.start()
        try:
            await produce_bulk(producer, BASE_IN, ((e.key, e.value) for e in backlog), PARTITIONS)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            BASE_IN,
            bootstrap_servers=self.bootstrap,
            group_id=f"bench-baseline-{self.run_id}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 2**20,
        )
        out = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_batch_size=256 * 1024)
        await consumer.start()
        await out.start()
        try:
            n, started = 0, 0.0
            while n < len(backlog):
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                if batches and not started:
                    started = time.monotonic()
                for records in batches.values():
                    for record in records:
                        value = orjson.loads(record.value)
                        await out.send(BASE_OUT, key=record.key, value=orjson.dumps(value))
                        n += 1
            await out.flush()
            await consumer.commit()
            elapsed = time.monotonic() - started
        finally:
            await consumer.stop()
            await out.stop()
        self.figures["baseline_msgs_per_s"] = round(n / elapsed, 1)
        log(f"baseline: {n} records in {elapsed:.2f} s = {n / elapsed:,.0f}/s")

    async def faust_agent(self, backlog: list[Event]) -> None:
        """The baseline's records through `bench.faust_agent`: the per-event Faust ceiling."""
        await self.set_phase("faust-agent")
        app_id = f"bench-faust-{self.run_id}"
        await create_topics(self.bootstrap, {FAUST_OUT: PARTITIONS, f"{app_id}-seen-changelog": PARTITIONS})
        agent = self.stack.start_faust_agent(app_id, BASE_IN, FAUST_OUT)
        try:

            async def out_at_least(n: int) -> bool:
                if agent.proc.poll() is not None:
                    raise RuntimeError(f"faust agent exited:\n{agent.log_tail()}")
                return await self.offsets.end(FAUST_OUT) >= n

            # Measured from its first output on: start-up and the rebalance are not its pace.
            await wait_for("faust agent: first output", lambda: out_at_least(1), timeout=120, interval=0.05)
            first, started = await self.offsets.end(FAUST_OUT), time.monotonic()

            async def all_out() -> bool:
                return await out_at_least(len(backlog))

            try:
                done = await wait_for("faust agent", all_out, timeout=self.opts.faust_seconds, interval=0.1)
            except TimeoutError:  # bounded, like the intake: its rate over the interval is the figure
                done = time.monotonic()
            count = await self.offsets.end(FAUST_OUT) - first
        finally:
            await asyncio.to_thread(agent.stop)
        rate = count / (done - started)
        self.figures["faust_agent_msgs_per_s"] = round(rate, 1)
        log(f"faust agent: {count} records in {done - started:.2f} s = {rate:,.0f}/s")

    async def start_worker(self, stages: str = "", profile: Path | None = None) -> Worker:
        """A worker of the run's consumer group (its tables carry over), after the previous one stopped.

        `stages`: `WORKER_STAGES` (all when empty). The intake phase runs without senders: in one
        worker they share the Faust consumer loop, so intake would be measured at MC's send pace.
        """
        await self.stop_worker()
        await self.set_phase("worker-start")
        env = {"WORKER_STAGES": stages} if stages else {}
        worker = self.stack.start_worker(self.worker_app_id, profile=profile, **env)
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

    async def warmup(self) -> None:
        """All MEMBERS members through windows and imports, so they are known to MC and the worker.

        Done once the worker's known-subscribers changelog has a row for each: its sends are left
        for the sends phase (at MC's pace they would take most of the run's ten minutes here)."""
        await self.set_phase("warmup")
        assert self.worker is not None
        events = warmup_events(f"{self.run_id}-w")
        changelog = f"{self.worker.app_id}-known-subscribers-changelog"
        base = await self.offsets.end(changelog)
        started = time.monotonic()
        producer = bulk_producer(self.bootstrap)
        await producer.start()
        try:
            await produce_bulk(producer, DRAWN, ((e.key, e.value) for e in events), PARTITIONS)
        finally:
            await producer.stop()

        async def all_known() -> bool:
            return await self.offsets.end(changelog) >= base + MEMBERS

        done = await wait_for("warm-up imports", all_known, timeout=self.opts.phase_timeout)
        elapsed = done - started
        self.figures["warmup_events"] = len(events)
        self.figures["warmup_imports_per_s"] = round(MEMBERS / elapsed, 1)
        log(f"warm-up: {len(events)} events, {MEMBERS} new subscribers imported and known in {elapsed:.1f} s")

    async def steady(self, events: list[Event], rate: float) -> dict[str, float]:
        """Produce `events` at `rate`/s, one at a time; returns event_id -> produce time (epoch s)."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await producer.start()
        produced: dict[str, float] = {}
        try:
            start = time.monotonic()
            for i, event in enumerate(events):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                produced[event.event_id] = time.time()
                await producer.send(DRAWN, key=event.key, value=event.value)
            await producer.flush()
        finally:
            await producer.stop()
        return produced

    async def latency(self) -> None:
        rate, seconds = self.opts.latency_rate, self.opts.latency_seconds
        n = int(rate * seconds)
        # New members first: the known phase then draws among those very members, now imported.
        groups = {
            "new": new_member_events(f"{self.run_id}-n", n, start=0),
            "known": list(known_events(f"{self.run_id}-k", n, seed=7, first=NEW_MEMBER_BASE, members=2 * n)),
        }
        produced: dict[str, dict[str, float]] = {}
        for name, events in groups.items():
            await self.set_phase(f"latency-{name}")
            base = await self.sent()
            produced[name] = await self.steady(events, rate)
            expected = sum(e.notifications for e in events)

            async def all_sent(base: int = base, expected: int = expected) -> bool:
                return await self.sent() >= base + expected

            await wait_for(f"latency-{name} sends", all_sent, timeout=60)
        r = await self.http.get("/_sandbox/messages")
        r.raise_for_status()
        received: dict[str, list[float]] = {}
        for m in r.json():
            event_id = (m.get("attributes") or {}).get("EventId")
            if event_id:
                at = dt.datetime.fromisoformat(m["received_at"].replace("Z", "+00:00")).timestamp()
                received.setdefault(event_id, []).append(at)
        for name, times in produced.items():
            lat = [(at - t0) * 1000 for eid, t0 in times.items() for at in received.get(eid, [])]
            for q in (50, 95, 99):
                self.figures[f"latency_ms_p{q}_{name}"] = round(percentile(lat, q), 1)
            self.figures[f"latency_sends_{name}"] = len(lat)
            log(
                f"latency {name}: {len(lat)} sends, "
                f"p50 {percentile(lat, 50):.0f} ms, p99 {percentile(lat, 99):.0f} ms"
            )

    async def intake(self, backlog: list[Event]) -> None:
        """The backlog through validation, dedupe and batching to subscriber.ready (no senders).

        Measured as the baseline is: on a backlog already waiting, from the first output to the
        last. The backlog is produced while no worker runs (produced with the worker running, it
        took 0.4-3 s of the ~10 s measured, on the CPU and broker the intake needs), then a worker
        starts on it, and the rate counts the notifications made ready after the first ones seen.
        """
        await self.stop_worker()
        await self.set_phase("intake-backlog")
        expected = sum(e.notifications for e in backlog)
        per_event = expected / len(backlog)
        ready_base = await self.offsets.end(READY)
        group = f"{self.worker_app_id}-intake"  # the intake's own consumer group (stream_app/intake.py)
        committed_base = await self.offsets.committed(group, DRAWN)
        producer = bulk_producer(self.bootstrap)
        await producer.start()
        try:
            await produce_bulk(producer, DRAWN, ((e.key, e.value) for e in backlog), PARTITIONS)
        finally:
            await producer.stop()
        trigger = (
            self.opts.profile.with_name(self.opts.profile.name + ".start") if self.opts.profile else None
        )
        if trigger is not None:
            trigger.unlink(missing_ok=True)
        await self.start_worker(INTAKE_STAGES, profile=self.opts.profile)
        await self.set_phase("intake")  # start_worker switched to "worker-start"
        if trigger is not None:
            trigger.touch()
        first = 0  # notifications already made ready when the first were seen

        async def flowing() -> bool:
            nonlocal first
            first = await self.offsets.end(READY) - ready_base
            return first > 0

        # Polled often: the intake takes ~10 s, and a 0.25 s poll would add up to 2.5% to it.
        started = await wait_for("intake output", flowing, timeout=self.opts.phase_timeout, interval=0.05)
        consumed_first = await self.offsets.committed(group, DRAWN) - committed_base

        async def all_ready() -> bool:
            return await self.offsets.end(READY) >= ready_base + expected

        try:
            done = await wait_for(
                "intake to subscriber.ready", all_ready, timeout=self.opts.intake_seconds, interval=0.05
            )
        except TimeoutError:
            # Bounded: the rate over the measuring interval, and how long the whole backlog would take.
            done = time.monotonic()
        got = await self.offsets.end(READY) - ready_base
        consumed = await self.offsets.committed(group, DRAWN) - committed_base
        elapsed = done - started
        events = (got - first) / per_event
        if got < expected:
            self.notes.append(
                f"intake: {got / per_event:,.0f} of {len(backlog):,} events ({got:,} notifications) reached "
                f"{READY} in the {self.opts.intake_seconds:.0f} s interval; the whole backlog would take "
                f"~{len(backlog) / max(events / elapsed, 1e-9):,.0f} s"
            )
        self.figures["intake_events_per_s"] = round(events / elapsed, 1)
        self.figures["intake_notifications_per_s"] = round((got - first) / elapsed, 1)
        self.figures["intake_consumed_events_per_s"] = round((consumed - consumed_first) / elapsed, 1)
        log(
            f"intake: {events:,.0f} events ({got - first} notifications, after the first {first}) "
            f"to {READY} in {elapsed:.1f} s = {events / elapsed:,.0f} events/s"
        )

    async def sends(self) -> None:
        """MC sends/s over the backlog of ready notifications the intake phase left."""
        await self.set_phase("sends")
        base = await self.sent()

        async def flowing() -> bool:
            return await self.sent() > base + 100

        first = await wait_for("sends to flow", flowing, timeout=60)
        n0 = await self.sent()
        await asyncio.sleep(self.opts.send_seconds)  # a measuring interval, not a wait for a condition
        n1 = await self.sent()
        elapsed = time.monotonic() - first
        self.figures["sends_per_s"] = round((n1 - n0) / elapsed, 1)
        log(f"sends: {n1 - n0} sends in {elapsed:.1f} s = {(n1 - n0) / elapsed:,.0f}/s")

    async def backlog_rss(self) -> None:
        """RSS with a backlog of `--backlog` events waiting in packet.drawn: it must not grow with it."""
        assert self.sampler is not None and self.worker is not None
        rss_before = self.sampler.peak_mb("sends")
        await self.set_phase("backlog-produce")
        group = f"{self.worker.app_id}-intake"
        committed_before = await self.offsets.committed(group, DRAWN)
        started = time.monotonic()
        producer = bulk_producer(self.bootstrap)
        await producer.start()
        try:
            count = await produce_bulk(producer, DRAWN, self.small_events(self.opts.backlog), PARTITIONS)
        finally:
            await producer.stop()
        took = time.monotonic() - started
        await self.set_phase("backlog-hold")
        await asyncio.sleep(self.opts.hold_backlog_seconds)  # observing RSS while the backlog waits
        processed = await self.offsets.committed(group, DRAWN) - committed_before
        waiting = await self.offsets.end(DRAWN) - await self.offsets.committed(group, DRAWN)
        self.figures["backlog_events"] = count
        self.figures["backlog_produce_s"] = round(took, 1)
        self.figures["rss_mb_before_backlog"] = round(rss_before, 1)
        self.figures["rss_mb_peak_with_backlog"] = round(
            self.sampler.peak_mb("backlog-produce", "backlog-hold"), 1
        )
        self.figures["backlog_processed_meanwhile"] = processed
        self.figures["backlog_still_waiting"] = waiting
        log(f"backlog: {count} events produced in {took:.1f} s; {waiting} still waiting after the hold")

    def small_events(self, count: int) -> Iterable[tuple[bytes | None, bytes]]:
        for e in known_events(f"{self.run_id}-m", count, seed=11, small=True):
            yield e.key, e.value

    async def uploads(self) -> None:
        stats = await self.stats()
        self.figures["sftp_uploads"] = int(stats.get("sftp_uploads", 0))
        consumer = AIOKafkaConsumer(
            "stream_app.batches", bootstrap_servers=self.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            end = await self.offsets.end("stream_app.batches")
            windows: set[str] = set()
            slots: set[str] = set()
            n = 0
            while n < end:
                batches = await consumer.getmany(timeout_ms=1000)
                if not batches:
                    break
                for records in batches.values():
                    for record in records:
                        n += 1
                        window_id = str(orjson.loads(record.value).get("window_id", ""))
                        windows.add(window_id)
                        slots.add(window_id.split("-")[1] if "-" in window_id else window_id)
        finally:
            await consumer.stop()
        self.figures["windows_closed"] = len(windows)
        self.figures["window_slots"] = len(slots)
        ok = self.figures["sftp_uploads"] <= len(slots)
        self.figures["uploads_at_most_one_per_window"] = ok
        if not ok:
            self.notes.append("more SFTP uploads than window slots")

    async def run(self) -> None:
        await create_topics(self.bootstrap, {DRAWN: PARTITIONS, BASE_IN: PARTITIONS, BASE_OUT: PARTITIONS})
        await self.offsets.start()
        try:
            backlog = list(known_events(f"{self.run_id}-i", self.opts.events, seed=3))
            self.figures["events"] = len(backlog)
            await self.baseline(backlog)
            await self.faust_agent(backlog)
            self.figures["faust_ratio"] = round(
                self.figures["faust_agent_msgs_per_s"] / self.figures["baseline_msgs_per_s"], 4
            )
            await self.start_worker()
            if self.sampler is not None:
                self.figures["rss_mb_ready"] = round(self.sampler.peak_mb("worker-start"), 1)
            await self.latency()
            # Without the senders from here to the sends phase: the warm-up's 20,000 sends would
            # slow its imports, and the intake is measured on its own (its sends join the sends phase).
            await self.start_worker(INTAKE_STAGES)
            await self.warmup()
            await self.intake(backlog)
            self.figures["ratio"] = round(
                self.figures["intake_events_per_s"] / self.figures["baseline_msgs_per_s"], 4
            )
            await self.start_worker()
            await self.sends()
            if self.opts.backlog:
                await self.backlog_rss()
            await self.uploads()
        finally:
            self.steal.switch(None)
            steal = {
                "cpu_steal_pct": self.steal.pct(),
                "cpu_steal_pct_baseline": self.steal.pct("baseline"),
                "cpu_steal_pct_latency": self.steal.pct("latency-new", "latency-known"),
                "cpu_steal_pct_intake": self.steal.pct("intake"),
            }
            self.figures.update(steal)
            for key, pct in steal.items():
                if pct > STEAL_NOTED_PCT:
                    self.notes.append(f"{key} {pct}%: the hypervisor took that share of the CPU")
            for sampler in self.samplers:
                sampler.stop()
            if self.samplers:
                peak = max(sampler.peak_mb() for sampler in self.samplers)
                self.figures["worker_peak_rss_mb"] = round(peak, 1)
            await self.offsets.close()
            await self.http.aclose()


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


ROWS = [
    ("events", "input events (backlog)", ""),
    ("baseline_msgs_per_s", "baseline aiokafka consume-decode-produce", "msgs/s"),
    ("faust_agent_msgs_per_s", "Faust agent: decode, table write, produce", "msgs/s"),
    ("faust_ratio", "Faust agent / baseline (per-event ceiling)", ""),
    ("intake_events_per_s", "intake: packet.drawn -> subscriber.ready", "events/s"),
    ("intake_notifications_per_s", "intake: notifications made ready", "notif/s"),
    ("intake_consumed_events_per_s", "intake: packet.drawn offsets committed", "events/s"),
    ("ratio", "intake / baseline", ""),
    ("sends_per_s", "MC sends (ready backlog)", "sends/s"),
    ("warmup_imports_per_s", "warm-up: new subscribers imported (window, CSV, SFTP, MC)", "subs/s"),
    ("latency_ms_p50_known", "draw-to-send p50, known subscriber", "ms"),
    ("latency_ms_p95_known", "draw-to-send p95, known subscriber", "ms"),
    ("latency_ms_p99_known", "draw-to-send p99, known subscriber", "ms"),
    ("latency_ms_p50_new", "draw-to-send p50, new subscriber", "ms"),
    ("latency_ms_p95_new", "draw-to-send p95, new subscriber", "ms"),
    ("latency_ms_p99_new", "draw-to-send p99, new subscriber", "ms"),
    ("rss_mb_ready", "worker RSS when ready (idle)", "MB"),
    ("worker_peak_rss_mb", "worker peak RSS (whole run)", "MB"),
    ("rss_mb_before_backlog", "worker RSS before the big backlog", "MB"),
    ("rss_mb_peak_with_backlog", "worker peak RSS with the big backlog", "MB"),
    ("backlog_events", "big backlog produced", "events"),
    ("backlog_produce_s", "big backlog produce time", "s"),
    ("backlog_still_waiting", "big backlog still waiting at the end", "events"),
    ("sftp_uploads", "SFTP uploads", ""),
    ("window_slots", "window slots (aligned windows)", ""),
    ("windows_closed", "windows closed (per partition)", ""),
    ("cpu_steal_pct_baseline", "CPU steal (hypervisor) in the baseline", "%"),
    ("cpu_steal_pct_intake", "CPU steal in the intake phase", "%"),
    ("cpu_steal_pct_latency", "CPU steal in the latency phases", "%"),
    ("cpu_steal_pct", "CPU steal over the run", "%"),
    ("total_s", "bench wall time", "s"),
]


def print_table(figures: dict[str, Any]) -> None:
    print()
    print(f"{'figure':<46} {'value':>14}  unit")
    print("-" * 70)
    for key, label, unit in ROWS:
        if key in figures:
            value = figures[key]
            if key in ("ratio", "faust_ratio"):
                value = f"{value:.4f}"
            text = (
                f"{value:,.1f}"
                if isinstance(value, float)
                else f"{value:,}"
                if isinstance(value, int)
                else str(value)
            )
            print(f"{label:<46} {text:>14}  {unit}")
    print()


def append_csv(figures: dict[str, Any]) -> None:
    """Append a row; when the columns changed, rewrite the file under the new header (old rows kept)."""
    fields = ["date", "commit", *[key for key, _, _ in ROWS]]
    row = {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_head()}
    row.update({k: figures.get(k, "") for k, _, _ in ROWS})
    rows: list[dict[str, Any]] = []
    if RESULTS.exists():
        with RESULTS.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != fields:
                rows = list(reader)
    if rows or not RESULTS.exists():
        with RESULTS.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
    with RESULTS.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields).writerow(row)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--events", type=int, default=100_000, help="backlog of packet.drawn events (>= 100000)")
    p.add_argument(
        "--backlog", type=int, default=1_000_000, help="events waiting for the RSS check (0: skip)"
    )
    p.add_argument("--latency-rate", type=float, default=20.0, help="events/s in the latency phases")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--send-seconds", type=float, default=20.0, help="how long sends/s is measured")
    p.add_argument("--hold-backlog-seconds", type=float, default=20.0)
    p.add_argument("--phase-timeout", type=float, default=240.0)
    p.add_argument("--intake-seconds", type=float, default=90.0, help="bound of the intake interval")
    p.add_argument("--faust-seconds", type=float, default=30.0, help="bound of the Faust agent interval")
    p.add_argument("--profile", type=Path, help="run the worker under pyinstrument, text report here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    opts = parse(argv)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="stream_app_bench_"))
    stack = Stack(tmp)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    figures: dict[str, Any] = {}
    notes: list[str] = []
    rc = 0
    try:
        log(f"state in {tmp}")
        kafka = stack.start_broker()
        log(f"broker {kafka.bootstrap} (pid {kafka.pid})")
        sandbox = stack.start_sandbox(import_delay=1.0, message_cap=5_000_000)
        log(f"sandbox {sandbox.http_url} sftp {sandbox.sftp_port} (pid {sandbox.pid})")
        holder: list[Run] = []

        async def go() -> None:
            holder.append(Run(stack, opts))
            await holder[0].run()

        try:
            asyncio.run(go())
        finally:
            if holder:
                figures, notes = holder[0].figures, holder[0].notes
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        for worker in stack.workers:
            print(worker.log_tail(), file=sys.stderr)
        notes.append(f"failed: {type(exc).__name__}: {exc}")
        rc = 1
    finally:
        stack.close()
        if not opts.keep and rc == 0:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    figures["total_s"] = round(time.monotonic() - started, 1)
    print_table(figures)
    for note in notes:
        print(f"note: {note}")
    if rc == 0 and opts.profile is None:  # a profiled worker is slower: not a result
        append_csv(figures)
    keys = [
        "baseline_msgs_per_s",
        "intake_events_per_s",
        "ratio",
        "sends_per_s",
        "latency_ms_p50_known",
        "latency_ms_p99_known",
        "latency_ms_p99_new",
        "worker_peak_rss_mb",
        "sftp_uploads",
        "events",
    ]
    out = {k: figures.get(k) for k in keys}
    out.update({k: v for k, v in figures.items() if k not in out})
    if notes:
        out["notes"] = notes
    print(orjson.dumps(out).decode())
    return rc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
