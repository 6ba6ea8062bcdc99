"""The embedded Apache Kafka: the pinned jars, the KRaft broker, its tools and its command.

| module | what |
|---|---|
| `jars` | Maven resolution of the jars `broker/pom.xml` pins; the `java` and classpath that run them |
| `process` | children that die with their parent, stopped by PID; `free_port`; `run_blocking` |
| `embedded` | `EmbeddedKafka` (one KRaft node) and the readiness checks (`describe_cluster`, ...) |
| `tools` | the `kafka-*` console tools |
| `cli` | `python -m stream_app broker` |
"""

from __future__ import annotations

from stream_app.localkafka.embedded import (
    READY_TIMEOUT,
    ClusterInfo,
    EmbeddedKafka,
    describe_cluster,
    kafka_answers,
    new_cluster_id,
)
from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import classpath, ensure_jars, java_executable, kafka_version
from stream_app.localkafka.process import (
    STOP_TIMEOUT,
    free_port,
    port_accepts,
    run_blocking,
    spawn,
    stop_process,
)
from stream_app.localkafka.tools import TOOLS, run_tool, tool_command

__all__ = [
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "TOOLS",
    "BrokerError",
    "ClusterInfo",
    "EmbeddedKafka",
    "classpath",
    "describe_cluster",
    "ensure_jars",
    "free_port",
    "java_executable",
    "kafka_answers",
    "kafka_version",
    "new_cluster_id",
    "port_accepts",
    "run_blocking",
    "run_tool",
    "spawn",
    "stop_process",
    "tool_command",
]
