"""Topic creation: Faust does not create source topics, so the worker and operators do it here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream_app.contract.topics import topic_partitions
from stream_app.runtime.app import build
from stream_app.settings import STAGES, Settings, load

log = logging.getLogger("stream_app.topics")


COMPACTED = {"cleanup.policy": "compact"}


async def ensure_topics(
    settings: Settings,
    counts: dict[str, int],
    replication: int = 1,
    compacted: dict[str, int] | None = None,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that are missing (`compacted`: changelogs, with their `configs` when given,
    else compaction); returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[tuple[str, int, dict[str, str] | None]] = [(name, n, None) for name, n in counts.items()]
        wanted += [(name, n, (configs or {}).get(name, COMPACTED)) for name, n in (compacted or {}).items()]
        missing = [
            NewTopic(name, n, replication, topic_configs=config)
            for name, n, config in wanted
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_app create-topics")
    parser.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args(argv)
    settings = load()
    runtime = build(settings, STAGES)  # every stage's tables, whichever stages the workers will run
    changelogs = runtime.changelog_partitions()
    counts = topic_partitions(settings)
    created = asyncio.run(
        ensure_topics(settings, counts, args.replication_factor, changelogs, runtime.changelog_configs())
    )
    for name, count in sorted({**counts, **changelogs}.items()):
        print(f"{'created' if name in created else 'exists '} {name} ({count} partitions)")
    return 0
