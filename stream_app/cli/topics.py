"""Topic creation: Faust does not create source topics, so the worker and operators do it here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.contract.registry import RegistryError, SchemaRegistry, topic_schemas
from stream_app.contract.topics import topic_partitions
from stream_app.runtime.app import build
from stream_app.settings import STAGES, Settings, load

log = logging.getLogger("stream_app.topics")


COMPACTED = {"cleanup.policy": "compact"}


class ReplicationError(RuntimeError):
    """The cluster cannot hold the replication the settings ask for."""


def replication_problems(factor: int, brokers: int, existing: dict[str, int]) -> tuple[list[str], list[str]]:
    """(errors, warnings) for topics of `existing` (name -> replication factor) against `factor`
    on a cluster of `brokers`: a factor above the broker count cannot be created or kept in sync,
    and a topic created with less than the setting asks for loses data with one broker."""
    errors = []
    if factor > brokers:
        errors.append(
            f"TOPIC_REPLICATION_FACTOR={factor} but the cluster has {brokers} broker(s): "
            "no topic can have more replicas than brokers"
        )
    errors += [
        f"topic {name} has replication factor {n}, above the {brokers} broker(s) of the cluster"
        for name, n in sorted(existing.items())
        if n > brokers
    ]
    warnings = [
        f"topic {name} has replication factor {n}, below TOPIC_REPLICATION_FACTOR={factor}: raise it "
        "with kafka-reassign-partitions (README, Runbook: raising a topic's replication)"
        for name, n in sorted(existing.items())
        if n < factor
    ]
    return errors, warnings


def cluster_brokers(live: set[int], replicas: set[int]) -> tuple[int, list[int]]:
    """(the cluster's broker count, the ids of those down) from the brokers the metadata lists (`live`:
    KRaft lists only brokers up and unfenced) and the node ids holding replicas of existing topics. A
    broker that is down (a crash, a restart, maintenance) is still one of the cluster's: counting only
    the live ones would stop every worker (re)started meanwhile, a rolling deploy included, with
    "factor above the broker count" while the cluster still takes writes (min ISR 2 of 3)."""
    return len(live | replicas), sorted(replicas - live)


async def ensure_topics(
    settings: Settings,
    counts: dict[str, int],
    compacted: dict[str, int] | None = None,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that are missing, with `TOPIC_REPLICATION_FACTOR` replicas and its
    `min.insync.replicas` (`compacted`: changelogs, with their `configs` when given, else
    compaction); check the existing ones against the setting. Returns the names created."""
    factor = settings.topic_replication_factor
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[tuple[str, int, dict[str, str]]] = [(name, n, {}) for name, n in counts.items()]
        wanted += [(name, n, (configs or {}).get(name, COMPACTED)) for name, n in (compacted or {}).items()]
        ours = sorted(name for name, _, _ in wanted if name in existing)
        described = await admin.describe_topics(ours) if ours else []
        factors = {d["topic"]: len(d["partitions"][0]["replicas"]) for d in described if d["partitions"]}
        live = {int(b["node_id"]) for b in (await admin.describe_cluster())["brokers"]}
        replicas = {int(r) for d in described for p in d["partitions"] for r in p["replicas"]}
        brokers, down = cluster_brokers(live, replicas)
        if down:
            log.warning(
                "broker(s) %s hold replicas but are not up: their partitions are under-replicated "
                "until they return",
                ", ".join(map(str, down)),
            )
        errors, warnings = replication_problems(factor, brokers, factors)
        for warning in warnings:
            log.warning(warning)
        if errors:
            raise ReplicationError("; ".join(errors))
        isr = {"min.insync.replicas": str(settings.min_insync_replicas)}
        missing = [
            NewTopic(name, n, factor, topic_configs={**config, **isr})
            for name, n, config in wanted
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def register_schemas(url: str, topics: list[str]) -> dict[str, int]:
    """Register `schemas/<topic>.avsc` under `<topic>-value` at the registry at `url`, for every topic
    of `topics` that has one (idempotent: a schema registered before keeps its id). Returns the ids."""
    registry = SchemaRegistry(url)
    try:
        return {
            subject: await registry.register(subject, schema)
            for subject, schema in topic_schemas(topics).items()
        }
    finally:
        await registry.aclose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_app create-topics")
    parser.add_argument(
        "--replication-factor", type=int, help="replicas per topic (default: TOPIC_REPLICATION_FACTOR)"
    )
    args = parser.parse_args(argv)
    settings = load()
    if args.replication_factor is not None:
        settings = dataclasses.replace(settings, topic_replication_factor=args.replication_factor)
    runtime = build(settings, STAGES)  # every stage's tables, whichever stages the workers will run
    changelogs = runtime.changelog_partitions()
    counts = topic_partitions(settings)
    created = asyncio.run(ensure_topics(settings, counts, changelogs, runtime.changelog_configs()))
    for name, count in sorted({**counts, **changelogs}.items()):
        print(f"{'created' if name in created else 'exists '} {name} ({count} partitions)")
    if settings.schema_registry_url:
        try:
            ids = asyncio.run(register_schemas(settings.schema_registry_url, sorted(counts)))
        except RegistryError as exc:
            print(f"create-topics: schemas not registered: {exc}", file=sys.stderr)
            return 1
        for subject, schema_id in ids.items():
            print(f"registered {subject} (schema id {schema_id}) at {settings.schema_registry_url}")
    return 0
