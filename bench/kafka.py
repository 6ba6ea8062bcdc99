"""Kafka helpers of the bench: topic creation, bulk produce, offsets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

# Partitions of every topic the bench creates, as many as the worker's default TOPIC_PARTITIONS.
PARTITIONS = 4
BULK_BATCH_BYTES = 512 * 1024


async def create_topics(bootstrap: str, counts: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in counts.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


def bulk_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=5,
        max_batch_size=BULK_BATCH_BYTES,
        max_request_size=4 * 2**20,
    )


async def produce_bulk(
    producer: AIOKafkaProducer, topic: str, items: Iterable[tuple[bytes | None, bytes]], partitions: int
) -> int:
    """Produce fast in hand-built batches, spread round-robin over the partitions; returns the count."""
    batches = {p: producer.create_batch() for p in range(partitions)}
    pending: list[asyncio.Future[object]] = []
    count = 0
    for key, value in items:
        p = count % partitions
        count += 1
        batch = batches[p]
        if batch.append(key=key, value=value, timestamp=None) is None:
            pending.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
        if len(pending) > 64:
            await asyncio.gather(*pending)
            pending.clear()
    for p, batch in batches.items():
        if batch.record_count() > 0:
            pending.append(await producer.send_batch(batch, topic, partition=p))
    await asyncio.gather(*pending)
    return count


async def produce_all(
    bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes]], partitions: int = PARTITIONS
) -> int:
    """`produce_bulk` on a bulk producer of its own, stopped when done; returns the count."""
    producer = bulk_producer(bootstrap)
    await producer.start()
    try:
        return await produce_bulk(producer, topic, items, partitions)
    finally:
        await producer.stop()


class Offsets:
    """End offsets of topics and committed offsets of consumer groups."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def start(self) -> None:
        await self.consumer.start()
        await self.admin.start()

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        parts = self.consumer.partitions_for_topic(topic)
        if not parts:
            await self.consumer._client.force_metadata_update()
            parts = self.consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def end(self, topic: str) -> int:
        tps = await self.partitions(topic)
        if not tps:
            return 0
        ends = await self.consumer.end_offsets(tps)
        return int(sum(ends.values()))

    async def committed(self, group: str, topic: str) -> int:
        offsets = await self.admin.list_consumer_group_offsets(group)
        return int(sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0))
