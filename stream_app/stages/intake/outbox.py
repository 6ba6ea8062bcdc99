"""Records for Kafka gathered per partition into producer batches, sent together, awaited together.

The batch intake produces several records per event; handing each to `AIOKafkaProducer.send()`
costs more than the event's validation (a future, a partition look-up and a lock per record).
Here records are appended to one aiokafka `BatchBuilder` per topic partition and sent once per
batch, and `flush()` returns only when Kafka has every one of them: the intake commits its input
offsets only after that.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from stream_app.contract.topics import partition_for

Headers = list[tuple[str, bytes]]  # aiokafka takes only a list


class Outbox:
    def __init__(self, producer: AIOKafkaProducer, partitions: dict[str, int]) -> None:
        self._producer = producer
        self._partitions = partitions  # partition count of every topic this outbox writes
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._full: list[tuple[str, int, BatchBuilder]] = []

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        if partition is None:
            partition = 0 if key is None else partition_for(key, self._partitions[topic])
        headers = headers or []
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            self._full.append((topic, partition, batch))
            batch = self._open[slot] = self._producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"record of {len(value)} bytes is larger than a producer batch")

    def discard(self) -> None:
        self._full, self._open = [], {}

    async def flush(self) -> None:
        """Send every batch and wait until Kafka acknowledged all of them."""
        pending = self._full + [(topic, p, batch) for (topic, p), batch in self._open.items()]
        self.discard()
        delivered = [
            await self._producer.send_batch(batch, topic, partition=p) for topic, p, batch in pending
        ]
        await asyncio.gather(*delivered)
