"""A read-only copy of the batcher's `known-subscribers` table, for the intake's fast path.

The batcher owns the table (keyed by subscriber, partitioned like `stream_app.intents`); an event's
parties can be any subscribers, so the intake follows every partition of the table's changelog
into a dict. It only ever lags: a subscriber it does not know yet goes the batcher's way, and the
batcher, which decides with the table itself, sends a known one straight on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("stream_app.known_subscribers")

TABLE = "known-subscribers"
SEP = "\x1f"


def subscriber_signature(email: str | None, mobile: str | None) -> bytes:
    """What the table keeps of a subscriber MC has: the email and mobile it was imported with."""
    return f"{email or ''}{SEP}{mobile or ''}".encode()


def needs_import(email: str | None, mobile: str | None, known: bytes | None) -> bool:
    """Upload the subscriber unless MC has it with this very email and mobile.

    A notification without an email (an SMS whose party's email was invalid) needs no email
    subscriber: MobileConnect sends to the number.
    """
    if email is None:
        return False
    return known != subscriber_signature(email, mobile)


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-{TABLE}-changelog"


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
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._follow(self._consumer), name="known-subscribers")

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                if not consumer.assignment():
                    await self._assign(consumer)
                    continue
                fetched = await consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker away for a moment: the view waits, the batcher decides
                log.warning("could not read %s", self.topic, exc_info=True)
                await asyncio.sleep(1)
                continue
            for batch in fetched.values():
                for record in batch:
                    if record.key is None:
                        continue
                    key = record.key.decode()
                    if record.value is None:
                        self.rows.pop(key, None)
                    else:
                        self.rows[key] = record.value

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Every partition of the changelog, from its start; until the batcher created it, wait."""
        if self.topic not in await consumer.topics():
            await asyncio.sleep(5)
            return
        parts = [
            TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())
        ]
        if not parts:  # created a moment ago: its partitions are not in the metadata yet
            await asyncio.sleep(1)
            return
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
