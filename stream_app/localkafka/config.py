"""Broker settings that depend on how many nodes there are, in one place.

The embedded single node and the local 3-node cluster write these into each node's server.properties;
docker-compose.yml's Kafka must carry the cluster values too (as the image's KAFKA_* environment
variables, see `docker_env`), so a check of the compose file compares against `CLUSTER_REPLICATION`.
Everything that does not depend on the node count stays in ``broker/server.properties.template``.
"""

from __future__ import annotations

from collections.abc import Mapping

# A single replica exists, so every internal topic must accept replication factor 1 and min ISR 1;
# Kafka's defaults (3 and 2) would leave consumer groups and transactions unavailable.
SINGLE_NODE_REPLICATION: Mapping[str, str] = {
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}

# The production shape: every partition on three brokers, and a write acknowledged (acks=all) only once
# two of them have it, so one broker may die, or be restarted, without losing or refusing a write.
CLUSTER_REPLICATION: Mapping[str, str] = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
}

# Replication 3 needs three brokers; with two, a single loss would already block acks=all writes.
CLUSTER_MIN_NODES = 3


def replication_settings(nodes: int) -> Mapping[str, str]:
    """The replication settings of a local Kafka of `nodes` nodes (1, or at least 3)."""
    if nodes == 1:
        return SINGLE_NODE_REPLICATION
    if nodes >= CLUSTER_MIN_NODES:
        return CLUSTER_REPLICATION
    raise ValueError(f"a local Kafka has 1 node or at least {CLUSTER_MIN_NODES}, not {nodes}")


def render_properties(settings: Mapping[str, str]) -> str:
    """`key=value` lines, as server.properties holds them."""
    return "\n".join(f"{key}={value}" for key, value in settings.items())


def docker_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The same settings as the apache/kafka image's environment (`a.b.c` -> `KAFKA_A_B_C`)."""
    return {"KAFKA_" + key.upper().replace(".", "_"): value for key, value in settings.items()}
