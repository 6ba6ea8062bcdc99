"""Every topic the service reads or writes, where a record belongs on it, and the header names
records carry between stages. Names only: the Faust topic objects live in `runtime.app`."""

from __future__ import annotations

from murmurhash2 import murmurhash2

from stream_app.settings import Settings

INPUT_TOPICS = ("packet.drawn", "packet.redeemed")
READY_TOPIC = "subscriber.ready"
STATUS_TOPIC = "notification.status"
BOUNCED_TOPIC = "email.bounced"
INTENTS_TOPIC = "stream_app.intents"
BATCHES_TOPIC = "stream_app.batches"
TRACE_TOPIC = "stream_app.trace"
# One partition: the feedback stage follows MC once per fleet, on the worker that owns it.
FEEDBACK_TOPIC = "stream_app.feedback"
# The topics whose unprocessable records go to `<topic>.dlq`: every topic a stage reads.
DLQ_SOURCES = (
    *INPUT_TOPICS,
    READY_TOPIC,
    INTENTS_TOPIC,
    BATCHES_TOPIC,
    BOUNCED_TOPIC,
    TRACE_TOPIC,
    FEEDBACK_TOPIC,
)

# A fast-path subscriber.ready record's header: the intake's steps for the event view.
INTAKE_HEADER = "stream_app.intake"
# Where a forwarded subscriber.ready record was first produced ("partition:offset"), see senders.
FORWARDED_HEADER = "stream_app.forwarded-from"
# An operator's deliberate second send (`resend`): the ledger honours it once per resend record.
RESEND_HEADER = "resend"

# Kafka's default partitioner (Java's and aiokafka's): murmur2 with this seed, made positive.
_MURMUR2_SEED = 0x9747B28C


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def seen_log_topic(app_id: str) -> str:
    """The intake's dedupe log (stages/intake/seen.py), kept like a changelog."""
    return f"{app_id}-intake-seen"


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic the app reads or writes, with its partition count (see `create-topics`)."""
    n = settings.topic_partitions
    counts = {name: n for name in (*INPUT_TOPICS, READY_TOPIC, STATUS_TOPIC, INTENTS_TOPIC, BATCHES_TOPIC)}
    counts[TRACE_TOPIC] = n
    counts[BOUNCED_TOPIC] = 1
    counts[FEEDBACK_TOPIC] = 1
    counts.update({dlq_name(t): 1 for t in DLQ_SOURCES})
    return counts


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key`: a record produced here lands where
    the same key produced by Faust, kafka-console-producer or kcat -X partitioner=murmur2 would, which
    keeps every notification with its ledger partition."""
    return (murmurhash2(key, _MURMUR2_SEED) & 0x7FFFFFFF) % partitions
