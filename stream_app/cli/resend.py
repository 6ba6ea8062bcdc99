"""`python -m stream_app resend`: an operator's deliberate second send, or a DLQ replay.

  resend --event-id d-000123           re-send that event's notifications (header resend: 1)
  resend --dlq packet.drawn.dlq        replay every DLQ record to its source topic
  resend --dlq subscriber.ready.dlq --since 2026-11-24T08:00:00Z

A replayed DLQ record goes back with its original key, value and headers; the pipeline's own
dedupe (event_id per partition, the send ledger per notification) keeps a replay from sending twice.
A resend carries `resend: 1`, which the ledger honours exactly once per resend record: a replayed
resend also carries where that resend record was first produced (`stream_app.forwarded-from`), so
every replay of it meets the same ledger entry, and replaying it twice sends it once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream_app.contract.topics import FORWARDED_HEADER, READY_TOPIC, RESEND_HEADER
from stream_app.settings import Settings, load

DIAGNOSTIC_HEADERS = ("error.", "source.")


def parse_since(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC) - timedelta(days=7)
    if text.endswith(("h", "m", "d")) and text[:-1].isdigit():
        unit = {"h": "hours", "m": "minutes", "d": "days"}[text[-1]]
        return datetime.now(UTC) - timedelta(**{unit: int(text[:-1])})
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def replay_target(record_headers: list[tuple[str, bytes]], dlq_topic: str) -> str:
    source = dict(record_headers).get("source.topic")
    return source.decode() if source else dlq_topic.removesuffix(".dlq")


def replay_headers(record_headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The original headers, without the diagnosis the DLQ added. A resend (`resend: 1`) keeps its
    identity: the ledger names a resend by where its record was first produced, so without it each
    replay of one failed resend would be a new resend, and replaying it twice would send it twice."""
    kept = [(k, v) for k, v in record_headers if not k.startswith(DIAGNOSTIC_HEADERS)]
    found = dict(record_headers)
    if (
        found.get(RESEND_HEADER, b"").strip() == b"1"
        and FORWARDED_HEADER not in found
        and found.get("source.topic") == READY_TOPIC.encode()
    ):
        partition, offset = found.get("source.partition", b""), found.get("source.offset", b"")
        if partition.isdigit() and offset.isdigit():
            kept.append((FORWARDED_HEADER, partition + b":" + offset))
    return kept


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        (description,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if description.get("error_code"):
        raise SystemExit(f"topic {topic} does not exist")
    return sorted(p["partition"] for p in description["partitions"])


async def read_topic(settings: Settings, topic: str, since: datetime) -> AsyncIterator[ConsumerRecord]:
    """Every record of `topic` from `since` up to the end as it is now, then stop."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
        remaining = {tp for tp in partitions if ends[tp] > 0}
        for tp in partitions:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found else ends[tp])
            if found is None or found.offset >= ends[tp]:
                remaining.discard(tp)
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()


async def replay_dlq(settings: Settings, dlq: str, since: datetime, dry_run: bool) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    count = 0
    try:
        async for record in read_topic(settings, dlq, since):
            headers = list(record.headers or [])
            target = replay_target(headers, dlq)
            reason = dict(headers).get("error.message", b"").decode(errors="replace")[:120]
            verb = "would replay" if dry_run else "replay"
            print(f"{verb} {dlq}@{record.partition}:{record.offset} -> {target} ({reason})")
            if not dry_run:
                await producer.send_and_wait(
                    target, record.value, key=record.key, headers=replay_headers(headers)
                )
            count += 1
    finally:
        await producer.stop()
    return count


async def resend_event(settings: Settings, event_id: str, since: datetime, dry_run: bool) -> int:
    latest: dict[str, ConsumerRecord] = {}
    async for record in read_topic(settings, READY_TOPIC, since):
        try:
            value = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and value.get("event_id") == event_id:
            latest[str(value.get("notification_id"))] = record
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for notification_id, record in sorted(latest.items()):
            print(f"{'would resend' if dry_run else 'resend'} {notification_id}")
            if not dry_run:
                # A new resend is its own ledger entry: not the forwarded origin of the copy read.
                headers = [
                    h for h in (record.headers or []) if h[0] not in (RESEND_HEADER, FORWARDED_HEADER)
                ] + [(RESEND_HEADER, b"1")]
                await producer.send_and_wait(READY_TOPIC, record.value, key=record.key, headers=headers)
    finally:
        await producer.stop()
    return len(latest)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_app resend",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--event-id", help="re-send every notification of this input event")
    target.add_argument("--dlq", metavar="TOPIC", help="replay this DLQ topic to its source topic")
    parser.add_argument("--since", help="RFC 3339 time or 30m/6h/2d ago (default: 7 days)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be sent, send nothing")
    args = parser.parse_args(argv)
    settings = load()
    since = parse_since(args.since)
    if args.dlq:
        count = asyncio.run(replay_dlq(settings, args.dlq, since, args.dry_run))
        print(f"{count} record(s) {'found' if args.dry_run else 'replayed'} from {args.dlq}")
    else:
        count = asyncio.run(resend_event(settings, args.event_id, since, args.dry_run))
        if count == 0:
            print(
                f"no notification of event {args.event_id} on {READY_TOPIC} since {since:%Y-%m-%d %H:%M}Z",
                file=sys.stderr,
            )
            return 1
        print(f"{count} notification(s) of {args.event_id} {'found' if args.dry_run else 'sent for resend'}")
    return 0
