"""SFTP uploads against the windows the workers closed: at most one upload per window slot."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer

from bench.harness import Harness
from stream_app.contract.topics import BATCHES_TOPIC


async def closed_windows(h: Harness) -> tuple[set[str], set[str]]:
    """The window ids on the batches topic, and their aligned time slots."""
    consumer = AIOKafkaConsumer(BATCHES_TOPIC, bootstrap_servers=h.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    windows: set[str] = set()
    slots: set[str] = set()
    try:
        end = await h.offsets.end(BATCHES_TOPIC)
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
    return windows, slots


async def uploads(h: Harness) -> None:
    stats = await h.stats()
    h.figures["sftp_uploads"] = int(stats.get("sftp_uploads", 0))
    windows, slots = await closed_windows(h)
    h.figures["windows_closed"] = len(windows)
    h.figures["window_slots"] = len(slots)
    ok = h.figures["sftp_uploads"] <= len(slots)
    h.figures["uploads_at_most_one_per_window"] = ok
    if not ok:
        h.notes.append("more SFTP uploads than window slots")
