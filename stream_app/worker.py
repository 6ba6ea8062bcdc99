"""`python -m stream_app worker`: one Faust worker with the stages of the flow in `WORKER_STAGES`."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import logging.config
import sys

from stream_app import (  # noqa: F401  (every worker: /metrics, /dashboard/, alerts, bounces, traces)
    dashboard,
    suppression,
    tracking,
    web,
)
from stream_app.app import (
    app,
    changelog_configs,
    changelog_partitions,
    load_stages,
    settings,
    topic_partitions,
)
from stream_app.logs import logging_config
from stream_app.topics import ensure_topics


def main(argv: list[str]) -> int:
    load_stages(settings.stages)
    # Faust's worker applies `logging_config` at start instead of its colour handler: masked JSON lines.
    app.conf.logging_config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    (settings.state_dir / f"worker-{settings.web_port}").mkdir(parents=True, exist_ok=True)
    # Changelogs too: Faust creates them at start, racing its own assignor, which then ignores them.
    asyncio.run(
        ensure_topics(
            settings, topic_partitions(), compacted=changelog_partitions(), configs=changelog_configs()
        )
    )
    upper = settings.log_level.upper()
    level = {"WARNING": "warn", "CRITICAL": "crit"}.get(upper, settings.log_level.lower())
    # uvloop: a faster event loop for the whole worker (measured by `make bench`, see bench/README.md).
    loop = ["--loop", "uvloop"] if importlib.util.find_spec("uvloop") else []
    sys.argv = ["stream_app", *loop, "worker", "--loglevel", level, *argv]
    app.main()
    return 0
