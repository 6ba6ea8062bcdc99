"""Replays from the tools on-call engineers use send nothing twice, whatever partition they land on.

kcat and every librdkafka client partition keys with CRC32 by default, Kafka's Java clients and
aiokafka with murmur2, and `-p N` puts every record on one partition: a replayed record rarely lands
where its original did. Each replay below must end in one `duplicate` outcome per notification and
no send at all. Runs on a broker and sandbox of its own, so the counts are this test's alone.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import WorkerProcess, start_worker
from tests.integration.helpers import (
    campaign,
    console_produce,
    eventually,
    flow_caught_up,
    kcat_produce,
    notification_ids,
    private_stack,
    produce,
    read_all,
    sent_notifications,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

APP_ID = "replays"


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, SandboxProcess]]:
    with private_stack(tmp_path) as stack:
        yield stack


async def _duplicates(kafka: EmbeddedKafka) -> Counter[str]:
    return Counter(
        value["notification_id"]
        for value in (orjson.loads(r.value) for r in await read_all(kafka.bootstrap, "notification.status"))
        if value["status"] == "duplicate"
    )


async def test_replays_by_kcat_and_java_tools_send_nothing_twice(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], tmp_path: Path
) -> None:
    if not shutil.which("kcat"):
        pytest.skip("kcat not installed (make test installs it)")
    kafka, sandbox = own_stack
    events = campaign("rp", 40, 12, random.Random(15))
    owed = set().union(*(notification_ids(e) for e in events))
    # Two workers: each holds the ledger partitions of the subscriber.ready partitions it owns, so a
    # record on a wrong partition is most often judged by a worker that never saw its notification.
    workers = [start_worker(kafka, sandbox, tmp_path / name, APP_ID=APP_ID) for name in ("w1", "w2")]
    try:
        for worker in workers:
            worker.wait_ready()
        await eventually(lambda: _both_assigned(workers), timeout=60)
        for event in events:
            await produce(kafka.bootstrap, "packet.drawn", event, key=event["packet_id"].encode())
        await eventually(lambda: set(sent_notifications(sandbox)) >= owed, timeout=120)
        await eventually(lambda: flow_caught_up(kafka.bootstrap, APP_ID), timeout=60)
        assert Counter(sent_notifications(sandbox)) == Counter(owed)  # each once before any replay

        ready = await read_all(kafka.bootstrap, "subscriber.ready")
        assert Counter(orjson.loads(r.value)["notification_id"] for r in ready) == Counter(owed)
        replays: list[tuple[str, Any]] = [
            (
                "kcat, librdkafka's default partitioner",
                lambda: kcat_produce(kafka.bootstrap, "subscriber.ready", ready),
            ),
            ("kcat -p 0", lambda: kcat_produce(kafka.bootstrap, "subscriber.ready", ready, "-p", "0")),
            (
                "kcat -X partitioner=random",
                lambda: kcat_produce(kafka.bootstrap, "subscriber.ready", ready, "-X", "partitioner=random"),
            ),
            (
                "kcat -X partitioner=murmur2_random",
                lambda: kcat_produce(
                    kafka.bootstrap, "subscriber.ready", ready, "-X", "partitioner=murmur2_random"
                ),
            ),
            ("kafka-console-producer", lambda: console_produce(kafka.bootstrap, "subscriber.ready", ready)),
        ]
        for round_, (tool, replay) in enumerate(replays, start=1):
            replay()
            await eventually(lambda: flow_caught_up(kafka.bootstrap, APP_ID), timeout=90)
            sent = Counter(sent_notifications(sandbox))
            print(f"REPLAY by {tool}: {len(ready)} records, {sum(sent.values()) - len(owed)} extra sends")
            assert sent == Counter(owed), f"replay by {tool} sent again"
            duplicates = await _duplicates(kafka)
            assert duplicates == Counter({n: round_ for n in owed}), f"after {tool}: {duplicates}"

        # The input replayed too, by kcat (CRC32): other partitions than the originals for most.
        drawn = await read_all(kafka.bootstrap, "packet.drawn")
        kcat_produce(kafka.bootstrap, "packet.drawn", drawn)
        await eventually(lambda: flow_caught_up(kafka.bootstrap, APP_ID), timeout=90)
        assert Counter(sent_notifications(sandbox)) == Counter(owed), "an input replay sent again"
        assert len(await read_all(kafka.bootstrap, "subscriber.ready.dlq")) == 0
    finally:
        for worker in workers:
            worker.stop()


def _both_assigned(workers: list[WorkerProcess]) -> bool:
    """Each worker owns some subscriber.ready partitions (its /metrics shows their lag)."""
    return all(
        'topic="subscriber.ready"' in httpx.get(f"{w.web_url}metrics", timeout=10).text for w in workers
    )
