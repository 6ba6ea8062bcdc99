"""The embedded Apache Kafka: the pinned jars, a KRaft node or a cluster of them, its tools, its command;
beside it the schema registry, a JVM run the same way.

| module | what |
|---|---|
| `jars` | Maven builds from a pom, once (`maven_once`, `pom_property`); the broker's jars; `java` |
| `process` | children that die with their parent, stopped (or killed) by PID; `free_port`; `run_blocking` |
| `jvm` | `JvmChild`: a JVM started, awaited until ready, stopped by PID (a Kafka node, the registry) |
| `config` | the broker settings that depend on the node count (replication), for every node and compose |
| `embedded` | `EmbeddedKafka` (one node), `KafkaCluster` (N nodes, one quorum), the readiness checks |
| `tools` | the `kafka-*` console tools |
| `foreground` | the run loop of both commands: start, supervise until a signal or a child's exit, stop |
| `cli` | `python -m stream_app broker [--nodes N]` |
| `registry`, `registry_cli` | Apicurio schema registry (`LocalRegistry`); `python -m stream_app registry` |
| `errors` | `BrokerError` |
"""

from __future__ import annotations

from stream_app.localkafka.config import (
    CLUSTER_MIN_NODES,
    CLUSTER_REPLICATION,
    SINGLE_NODE_REPLICATION,
    docker_env,
    replication_settings,
)
from stream_app.localkafka.embedded import (
    CLUSTER_READY_TIMEOUT,
    READY_TIMEOUT,
    ClusterInfo,
    EmbeddedKafka,
    KafkaCluster,
    PartitionState,
    describe_cluster,
    kafka_answers,
    new_cluster_id,
)
from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import classpath, ensure_jars, java_executable, kafka_version
from stream_app.localkafka.process import (
    STOP_TIMEOUT,
    free_port,
    kill_process,
    port_accepts,
    run_blocking,
    spawn,
    stop_process,
)
from stream_app.localkafka.tools import TOOLS, run_tool, tool_command

__all__ = [
    "CLUSTER_MIN_NODES",
    "CLUSTER_READY_TIMEOUT",
    "CLUSTER_REPLICATION",
    "READY_TIMEOUT",
    "SINGLE_NODE_REPLICATION",
    "STOP_TIMEOUT",
    "TOOLS",
    "BrokerError",
    "ClusterInfo",
    "EmbeddedKafka",
    "KafkaCluster",
    "PartitionState",
    "classpath",
    "describe_cluster",
    "docker_env",
    "ensure_jars",
    "free_port",
    "java_executable",
    "kafka_answers",
    "kafka_version",
    "kill_process",
    "new_cluster_id",
    "port_accepts",
    "replication_settings",
    "run_blocking",
    "run_tool",
    "spawn",
    "stop_process",
    "tool_command",
]
