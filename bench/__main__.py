"""`python -m bench` (`make bench`): throughput, latency, memory and upload figures of one worker.

One run starts its own Apache Kafka broker and MC sandbox on free ports, measures, prints a table and,
as the last line, one JSON object; it appends the figures to bench/results.csv. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import avro_decode, report
from bench.data import DRAWN_TOPIC, known_events
from bench.harness import Harness, log
from bench.kafka import PARTITIONS, create_topics
from bench.phases import backlog, baseline, intake, latency, mc_budget, sends, uploads
from bench.procs import Stack


async def measure(h: Harness) -> None:
    """The phases, in this order (bench/README.md says why); figures and notes go to `h`."""
    topics = (DRAWN_TOPIC, baseline.BASE_IN, baseline.BASE_OUT)
    await create_topics(h.bootstrap, dict.fromkeys(topics, PARTITIONS))
    await h.start()
    try:
        # Per-event decode cost of an Avro input record beside its JSON twin (in this process).
        h.figures.update(await asyncio.to_thread(avro_decode.measure))
        events = list(known_events(f"{h.run_id}-i", h.opts.events, seed=3))
        h.figures["events"] = len(events)
        await baseline.raw_loop(h, events)
        await baseline.faust_agent(h, events)
        h.figures["faust_ratio"] = round(
            h.figures["faust_agent_msgs_per_s"] / h.figures["baseline_msgs_per_s"], 4
        )
        await h.start_worker()
        if h.sampler is not None:
            h.figures["rss_mb_ready"] = round(h.sampler.peak_mb("worker-start"), 1)
        await latency.latency(h)
        await latency.latency_split(h)
        # Without the senders from here to the sends phase: the warm-up's 20,000 sends would
        # slow its imports, and the intake is measured on its own (its sends join the sends phase).
        await h.start_worker(intake.INTAKE_STAGES)
        await intake.warmup(h)
        await intake.intake(h, events)
        h.figures["ratio"] = round(h.figures["intake_events_per_s"] / h.figures["baseline_msgs_per_s"], 4)
        await h.start_worker()
        await sends.sends(h)
        if h.opts.backlog:
            await backlog.backlog_rss(h)
        await uploads.uploads(h)
        if h.opts.mc_budget:
            await mc_budget.mc_budget(h)
    finally:
        await h.close()


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
    p.add_argument(
        "--no-mc-budget", dest="mc_budget", action="store_false", help="skip the MC call-budget phase"
    )
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
        holder: list[Harness] = []

        async def go() -> None:
            holder.append(Harness(stack, opts))
            await measure(holder[0])

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
            shutil.rmtree(tmp, ignore_errors=True)
    figures["total_s"] = round(time.monotonic() - started, 1)
    report.print_table(figures)
    for note in notes:
        print(f"note: {note}")
    if rc == 0 and opts.profile is None:  # a profiled worker is slower: not a result
        report.append_csv(figures)
    print(report.json_line(figures, notes))
    return rc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
