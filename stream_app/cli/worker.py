"""`python -m stream_app worker`: one Faust worker with the stages of the flow in `WORKER_STAGES`."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import logging.config
import sys
from collections.abc import Callable

from stream_app.cli.topics import ensure_topics
from stream_app.contract.topics import topic_partitions
from stream_app.ops.logs import logging_config
from stream_app.runtime.app import Runtime, build
from stream_app.settings import SettingsError, load


def main(argv: list[str], *, prepare: Callable[[Runtime], None] | None = None) -> int:
    """`prepare`: a last step on the built runtime before it runs (the bench's profiler)."""
    settings = load()
    try:
        settings.check()
    except SettingsError as exc:
        print(f"stream_app worker: {exc}", file=sys.stderr)
        return 2
    runtime = build(settings, settings.stages)
    if prepare is not None:
        prepare(runtime)
    # Faust's worker applies `logging_config` at start instead of its colour handler: masked JSON lines.
    runtime.app.conf.logging_config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    runtime.worker_dir.mkdir(parents=True, exist_ok=True)
    # Changelogs too: Faust creates them at start, racing its own assignor, which then ignores them.
    asyncio.run(
        ensure_topics(
            settings,
            topic_partitions(settings),
            compacted=runtime.changelog_partitions(),
            configs=runtime.changelog_configs(),
        )
    )
    upper = settings.log_level.upper()
    level = {"WARNING": "warn", "CRITICAL": "crit"}.get(upper, settings.log_level.lower())
    # uvloop: a faster event loop for the whole worker (measured by `make bench`, see bench/README.md).
    loop = ["--loop", "uvloop"] if importlib.util.find_spec("uvloop") else []
    sys.argv = ["stream_app", *loop, "worker", "--loglevel", level, *argv]
    runtime.app.main()
    return 0
