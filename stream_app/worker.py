"""`python -m stream_app worker`: one Faust worker with every stage of the flow."""

from __future__ import annotations

import asyncio
import logging
import sys

from stream_app import batcher, imports, intake, senders, suppression, tracking, web  # noqa: F401  (agents)
from stream_app.app import app, settings, topic_partitions
from stream_app.topics import ensure_topics


def main(argv: list[str]) -> int:
    logging.basicConfig(level=settings.log_level)
    (settings.state_dir / f"worker-{settings.web_port}").mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings, topic_partitions()))
    # Faust's loggers write DEBUG internally even at -l warn; keep the hot path quiet.
    for name in ("faust", "aiokafka", "mode"):
        logging.getLogger(name).setLevel(logging.WARNING)
    level = {"WARNING": "warn", "CRITICAL": "crit"}.get(settings.log_level.upper(), settings.log_level.lower())
    sys.argv = ["stream_app", "worker", "--loglevel", level, *argv]
    app.main()
    return 0
