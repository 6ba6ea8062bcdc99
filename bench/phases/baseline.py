"""The ceilings: a plain aiokafka loop, and the least a Faust agent does per event, on the same records."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.data import Event
from bench.harness import Harness, log, wait_for
from bench.kafka import PARTITIONS, create_topics

BASE_IN, BASE_OUT = "bench.baseline.in", "bench.baseline.out"
FAUST_OUT = "bench.faust.out"


async def raw_loop(h: Harness, backlog: list[Event]) -> None:
    """Plain aiokafka consume -> orjson decode -> produce over the same records: the ceiling."""
    await h.set_phase("baseline")
    await h.produce(BASE_IN, backlog)
    consumer = AIOKafkaConsumer(
        BASE_IN,
        bootstrap_servers=h.bootstrap,
        group_id=f"bench-baseline-{h.run_id}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 2**20,
    )
    out = AIOKafkaProducer(bootstrap_servers=h.bootstrap, linger_ms=5, max_batch_size=256 * 1024)
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
    h.figures["baseline_msgs_per_s"] = round(n / elapsed, 1)
    log(f"baseline: {n} records in {elapsed:.2f} s = {n / elapsed:,.0f}/s")


async def faust_agent(h: Harness, backlog: list[Event]) -> None:
    """The baseline's records through `bench.faust_agent`: the per-event Faust ceiling."""
    await h.set_phase("faust-agent")
    app_id = f"bench-faust-{h.run_id}"
    await create_topics(h.bootstrap, {FAUST_OUT: PARTITIONS, f"{app_id}-seen-changelog": PARTITIONS})
    agent = h.stack.start_faust_agent(app_id, BASE_IN, FAUST_OUT)
    try:

        async def out_at_least(n: int) -> bool:
            if agent.proc.poll() is not None:
                raise RuntimeError(f"faust agent exited:\n{agent.log_tail()}")
            return await h.offsets.end(FAUST_OUT) >= n

        # Measured from its first output on: start-up and the rebalance are not its pace.
        await wait_for("faust agent: first output", lambda: out_at_least(1), timeout=120, interval=0.05)
        first, started = await h.offsets.end(FAUST_OUT), time.monotonic()

        async def all_out() -> bool:
            return await out_at_least(len(backlog))

        try:
            done = await wait_for("faust agent", all_out, timeout=h.opts.faust_seconds, interval=0.1)
        except TimeoutError:  # bounded, like the intake: its rate over the interval is the figure
            done = time.monotonic()
        count = await h.offsets.end(FAUST_OUT) - first
    finally:
        await asyncio.to_thread(agent.stop)
    rate = count / (done - started)
    h.figures["faust_agent_msgs_per_s"] = round(rate, 1)
    log(f"faust agent: {count} records in {done - started:.2f} s = {rate:,.0f}/s")
