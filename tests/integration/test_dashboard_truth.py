"""Every figure an operator reads is true: `/dashboard/data.json` and `/metrics` against independent
counts (the sandbox's own records, the Kafka topics read with a client, the groups' offsets).

A broker, a sandbox and a worker of this test's own, so that every figure since the worker started
is this test's traffic: new and known subscribers, an invalid address, a row MC's import rejects
(a one-letter top-level domain, which the service's validator lets through), a non-JSON record, a
bounced address mailed again, an operator's resend, and MC's feedback on them (the bounce, the SMS
deliveries: outcomes after `sent`, counted like the others).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.worker import REPO, WorkerProcess, start_worker
from tests.integration.helpers import (
    FEEDBACK_STATUSES,
    drawn_event,
    end_offsets,
    eventually,
    flow_caught_up,
    messages,
    private_stack,
    produce,
    read_all,
    sample,
    unique,
)

pytestmark = pytest.mark.integration

APP_ID = "truth"


def get(worker: WorkerProcess, path: str) -> httpx.Response:
    return httpx.get(f"{worker.web_url}{path.lstrip('/')}", timeout=10)


async def _count(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, topic)).values())


async def _statuses(bootstrap: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(bootstrap, "notification.status")]


async def _produce_mixed_run(bootstrap: str, sandbox: Any, worker: WorkerProcess) -> dict[str, Any]:
    tag = unique("t")
    first = drawn_event()  # two new subscribers (and the drawer's welcome SMS)
    await produce(bootstrap, "packet.drawn", first, key=first["packet_id"].encode())
    await eventually(lambda: len(messages(sandbox, first)) == 3, timeout=60)
    # The giver again, now known to MC: the fast path.
    known = drawn_event(giver=first["giver"])
    invalid = drawn_event(drawer__email=f"{tag}@@example.com")
    rejected = drawn_event(drawer__email=f"{tag}@example.c", drawer__mobile=None)
    bounced = drawn_event(drawer__email=f"{tag}@bounce.example", drawer__mobile=None)
    for event in (known, invalid, rejected, bounced):
        await produce(bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
    await produce(bootstrap, "packet.drawn", b"{not json", key=b"RP-broken")

    def suppressed() -> bool:
        address = bounced["drawer"]["email"]
        return bool(get(worker, f"/suppressed/{address}/").json()["suppressed"])

    await eventually(suppressed, timeout=60)
    again = drawn_event(drawer=bounced["drawer"])  # the bounced address: suppressed, not mailed
    await produce(bootstrap, "packet.drawn", again, key=again["packet_id"].encode())
    return {"first": first, "again": again}


def _resend(bootstrap: str, event_id: str) -> None:
    env = {**os.environ, "BROKER_URL": f"kafka://{bootstrap}", "APP_ID": APP_ID}
    subprocess.run(
        [sys.executable, "-m", "stream_app", "resend", "--event-id", event_id],
        cwd=REPO,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )


async def _independent(bootstrap: str, sandbox: Any) -> dict[str, Any]:
    """What really happened, counted without the worker."""
    statuses = await _statuses(bootstrap)
    imports = httpx.get(f"{sandbox.http_url}_sandbox/imports", timeout=10).json()
    completed = [job for job in imports if job["status"] == "Completed"]
    trace = [orjson.loads(r.value) for r in await read_all(bootstrap, "stream_app.trace")]
    return {
        "received": {t: await _count(bootstrap, t) for t in ("packet.drawn", "packet.redeemed")},
        "batched": sum(1 for step in trace if step["stage"] == "batched"),
        "rows_imported": sum(job["succeeded"] for job in completed),
        "rows_rejected": sum(len(job["errors"]) for job in completed),
        "outcomes": dict(Counter(s["status"] for s in statuses)),
        "by_channel": dict(Counter((s["channel"], s["status"]) for s in statuses)),
        "messages": len(messages(sandbox)),
    }


async def _mismatches(worker: WorkerProcess, bootstrap: str, sandbox: Any) -> list[str]:
    truth = await _independent(bootstrap, sandbox)
    data = get(worker, "/dashboard/data.json").json()
    text = get(worker, "/metrics").text
    stages = {s["key"]: s["total"] for s in data["stages"]}
    found: list[str] = []

    def check(what: str, shown: Any, real: Any) -> None:
        if shown != real:
            found.append(f"{what}: shown {shown!r}, really {real!r}")

    check("intake events", stages["intake"], sum(truth["received"].values()))
    for topic, n in truth["received"].items():
        check(
            f"/metrics events {topic}",
            sample(text, f'stream_app_events_received_total{{topic="{topic}"}}'),
            n,
        )
    check("batcher rows", stages["batcher"], truth["batched"])
    check("imports rows imported", stages["imports"], truth["rows_imported"])
    check("imports rows rejected", data["imports"]["rows_rejected"], truth["rows_rejected"])
    for result in ("imported", "rejected"):
        shown = sample(text, f'stream_app_import_rows_total{{result="{result}"}}')
        check(f"/metrics import rows {result}", shown, truth[f"rows_{result}"])
    check("senders outcomes", stages["senders"], sum(truth["outcomes"].values()))
    check("outcomes by status", data["outcomes"], truth["outcomes"])
    for (channel, status), n in truth["by_channel"].items():
        series = f'stream_app_notifications_total{{channel="{channel}",status="{status}"}}'
        check(f"/metrics {channel} {status}", sample(text, series), n)
    check("sent = messages MC received", data["outcomes"].get("sent"), truth["messages"])
    for dlq in data["dlq"]:
        size = await _count(bootstrap, dlq["topic"])
        check(f"{dlq['topic']} size", dlq["size"], size)
        check(f"{dlq['topic']} sent by this worker", dlq["sent_by_worker"], size)
        check(
            f"/metrics {dlq['topic']} size",
            sample(text, f'stream_app_dlq_size{{topic="{dlq["topic"]}"}}'),
            size,
        )
    check("lag", data["lag"]["total"], 0)
    return found


async def test_every_dashboard_figure_equals_an_independent_count(tmp_path: Path) -> None:
    with private_stack(tmp_path) as (kafka, sandbox):
        worker = start_worker(kafka, sandbox, tmp_path / "worker", APP_ID=APP_ID)
        try:
            worker.wait_ready()
            run = await _produce_mixed_run(kafka.bootstrap, sandbox, worker)
            _resend(kafka.bootstrap, run["first"]["event_id"])
            # Settled: every stage committed all it read, and every outcome is on notification.status.
            await eventually(lambda: flow_caught_up(kafka.bootstrap, APP_ID), timeout=90)

            async def settled() -> bool:
                statuses = await _statuses(kafka.bootstrap)
                first = [s["status"] for s in statuses if s["event_id"] == run["first"]["event_id"]]
                resent = sum(1 for status in first if status not in FEEDBACK_STATUSES)
                # MC's feedback is in too: the first event's two welcome SMS (its resend's included)
                # delivered, and the bounced address's bounce.
                feedback = Counter(s["status"] for s in statuses if s["status"] in FEEDBACK_STATUSES)
                return (
                    resent == 6
                    and first.count("delivered") == 2
                    and feedback["bounced"] == 1
                    and any(s["event_id"] == run["again"]["event_id"] for s in statuses)
                )

            await eventually(settled, timeout=60)
            truth = await _independent(kafka.bootstrap, sandbox)
            # The run is the mix it claims to be (else the comparison below proves little).
            assert truth["rows_rejected"] == 1 and truth["rows_imported"] >= 5, truth
            assert {"sent", "invalid", "failed", "suppressed", "bounced", "delivered"} <= set(
                truth["outcomes"]
            )
            assert await _count(kafka.bootstrap, "packet.drawn.dlq") == 1

            # Figures are sampled (offsets every 2 s): await agreement, and show what disagrees.
            async def agree() -> bool:
                return not await _mismatches(worker, kafka.bootstrap, sandbox)

            try:
                await eventually(agree, timeout=20)
            except AssertionError:
                raise AssertionError(await _mismatches(worker, kafka.bootstrap, sandbox)) from None
            data = get(worker, "/dashboard/data.json").json()
            assert "this worker's share" in data["worker"]["scope"]
        finally:
            worker.stop()
