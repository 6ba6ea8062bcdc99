"""A read-only copy of the batcher's `known-subscribers` table, for the intake's fast path.

The batcher owns the table (keyed by subscriber, partitioned like `stream_app.intents`); an event's
parties can be any subscribers, so the intake follows every partition of the table's changelog
into a dict. It only ever lags: a subscriber it does not know yet goes the batcher's way, and the
batcher, which decides with the table itself, sends a known one straight on. At start it reads the
changelog up to its end before the intake takes its first record: a worker restarted on a backlog
would otherwise send its first batches of known subscribers the batcher's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from stream_app.domain.subscribers import KNOWN_SUBSCRIBERS_TABLE

log = logging.getLogger("stream_app.known_subscribers")


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-{KNOWN_SUBSCRIBERS_TABLE}-changelog"


def table_key(raw: bytes) -> str:
    """A key as Faust writes str keys to a changelog: JSON (`"M1001"`)."""
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode()
    return key if isinstance(key, str) else raw.decode()


class KnownSubscribers:
    def __init__(self, bootstrap_servers: str, app_id: str) -> None:
        self.topic = changelog_topic(app_id)
        self.bootstrap_servers = bootstrap_servers
        self.rows: dict[str, bytes] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def get(self, subscriber_key: str) -> bytes | None:
        return self.rows.get(subscriber_key)

    async def start(self) -> None:
        # No group: aiokafka then assigns every partition of the topic, from the start (no offsets
        # are committed), and takes up the topic once the batcher's worker created it.
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=5000,
        )
        await self._consumer.start()
        await self._catch_up(self._consumer)
        self._task = asyncio.create_task(self._follow(self._consumer), name="known-subscribers")

    async def _catch_up(self, consumer: AIOKafkaConsumer, within: float = 30.0) -> None:
        """Read the rows the changelog holds now (for at most `within` seconds), then let the
        follower take over."""
        found = consumer.partitions_for_topic(self.topic)
        if not found:
            return  # no such topic yet: nothing to know
        ends = await consumer.end_offsets([TopicPartition(self.topic, p) for p in found])
        behind = {tp: end for tp, end in ends.items() if end}
        deadline = time.monotonic() + within
        try:
            while behind:
                if time.monotonic() > deadline:
                    log.warning("known subscribers not read to the end within %.0f s; going on", within)
                    return
                self._take(await consumer.getmany(timeout_ms=200))
                assigned = consumer.assignment()
                behind = {
                    tp: end
                    for tp, end in behind.items()
                    if tp not in assigned or await consumer.position(tp) < end
                }
        except Exception:  # the broker away for a moment: the follower goes on from here
            log.warning("could not read %s to its end at start", self.topic, exc_info=True)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker away for a moment: the view waits, the batcher decides
                log.warning("could not read %s", self.topic, exc_info=True)
                await asyncio.sleep(1)
                continue
            self._take(fetched)

    def _take(self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for batch in fetched.values():
            for record in batch:
                if record.key is None:
                    continue
                key = table_key(record.key)
                if record.value is None:
                    self.rows.pop(key, None)
                else:
                    self.rows[key] = record.value

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
