"""Apache Kafka's command-line tools (`kafka-topics`, the console producer, ...) from the pinned jars.

`python -m stream_app kafka-...` and the scripts in ``bin/`` end here.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import BROKER_DIR, TOOL_JVM_OPTS, classpath, ensure_jars, java_executable

TOOLS_LOG4J = BROKER_DIR / "tools-log4j2.xml"

# `kafka-*` command -> main class in Kafka 4.x (the 3.x kafka.tools.* Scala classes are gone).
TOOLS: dict[str, str] = {
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs": "kafka.admin.ConfigCommand",
}


def tool_command(name: str, args: Sequence[str]) -> list[str]:
    """The java command line of one Kafka CLI tool (after ensure_jars)."""
    main_class = TOOLS.get(name)
    if main_class is None:
        raise BrokerError(f"unknown tool {name!r}; known: {', '.join(sorted(TOOLS))}")
    extra = shlex.split(os.environ.get("KAFKA_OPTS", ""))
    return [
        java_executable(),
        *TOOL_JVM_OPTS,
        *extra,
        f"-Dlog4j2.configurationFile={TOOLS_LOG4J}",
        "-cp",
        classpath(),
        main_class,
        *args,
    ]


def run_tool(name: str, args: Sequence[str]) -> int:
    """`python -m stream_app kafka-...`: exec the Kafka tool in place of this process.

    exec rather than a child: stdin, stdout, exit code and Ctrl-C then behave exactly as with Kafka's
    own bin/ scripts. Returns only on error.
    """
    try:
        ensure_jars()
        cmd = tool_command(name, args)
    except BrokerError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 127  # not reached: execv returns only by raising
