"""The intake's copy of the batcher's known-subscribers table, read from its changelog on a real broker."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.domain.subscribers import subscriber_signature
from stream_app.stages.intake.known_subscribers import KnownSubscribers, changelog_topic
from tests.fixtures.kafka import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_a_started_copy_already_knows_every_subscriber_the_changelog_held(kafka: KafkaBroker) -> None:
    """A worker restarted on a backlog handles its first records with the whole table: a subscriber
    still unread would go the batcher's (slow) way."""
    app_id = f"known-{uuid.uuid4().hex[:8]}"
    topic = changelog_topic(app_id)
    kafka.create_topics({topic: 4})
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20)
    await producer.start()
    try:
        for n in range(20_000):
            signature = subscriber_signature(f"m{n}@example.com", None)
            await producer.send(topic, signature, key=orjson.dumps(f"M{n}"))
        await producer.send(topic, None, key=orjson.dumps("M7"))  # deleted from the table since
        await producer.flush()
    finally:
        await producer.stop()

    known = KnownSubscribers(kafka.bootstrap, app_id)
    await known.start()
    try:
        assert len(known.rows) == 19_999
        assert known.get("M19999") == subscriber_signature("m19999@example.com", None)
        assert known.get("M7") is None
    finally:
        await known.stop()


async def test_a_copy_started_before_the_table_exists_starts_at_once(kafka: KafkaBroker) -> None:
    known = KnownSubscribers(kafka.bootstrap, f"new-{uuid.uuid4().hex[:8]}")
    await known.start()
    try:
        assert known.rows == {}
    finally:
        await known.stop()
