"""The local Kafka cluster (issue 17): three KRaft nodes in one quorum, a killed leader's partitions
moving to the others and the node rejoining, and `python -m stream_app broker --nodes 3`.

One cluster at a time (three JVMs starting is most of the cost on a small machine): the class-scoped
cluster is stopped, by its last test, before the command's test starts another.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.localkafka import (
    CLUSTER_READY_TIMEOUT,
    CLUSTER_REPLICATION,
    KafkaCluster,
    PartitionState,
    describe_cluster,
    port_accepts,
    run_blocking,
)
from tests.integration.helpers import (
    Output,
    assert_all_gone,
    descendants,
    eventually,
    free_ports,
    started,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

HOST = "127.0.0.1"


def properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture(scope="class")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    kafka = KafkaCluster(3, ports=free_ports(3), data_dir=tmp_path_factory.mktemp("cluster"))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


async def partitions_or_none(cluster: KafkaCluster, topic: str) -> dict[int, PartitionState] | None:
    """The topic's partitions, or None while the metadata cannot be had (a node just died)."""
    try:
        return await cluster.describe_partitions(topic)
    except Exception:
        return None


class TestThreeNodes:
    def test_one_quorum_of_three_nodes_with_the_cluster_settings(self, cluster: KafkaCluster) -> None:
        info = run_blocking(lambda: describe_cluster(cluster.bootstrap))
        assert info is not None
        assert sorted(info.brokers) == sorted((HOST, n.port) for n in cluster.nodes.values())
        assert cluster.bootstrap == ",".join(f"{HOST}:{n.port}" for n in cluster.nodes.values())

        voters = ",".join(f"{i}@{HOST}:{n.controller_port}" for i, n in cluster.nodes.items())
        controller_ports = {n.controller_port for n in cluster.nodes.values()}
        assert len(controller_ports) == 3
        assert not controller_ports & {n.port for n in cluster.nodes.values()}
        assert len({n.log_dir for n in cluster.nodes.values()}) == 3
        for node_id, node in cluster.nodes.items():
            props = properties(node.server_properties)
            assert props["node.id"] == str(node_id)
            assert props["process.roles"] == "broker,controller"
            assert props["controller.quorum.voters"] == voters
            assert {k: props[k] for k in CLUSTER_REPLICATION} == dict(CLUSTER_REPLICATION)
            meta = properties(node.log_dir / "meta.properties")
            assert (meta["node.id"], meta["cluster.id"]) == (str(node_id), cluster.cluster_id)

    async def test_a_killed_leader_hands_over_and_rejoins_the_isr(self, cluster: KafkaCluster) -> None:
        topic = f"failover.{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 3, 3, topic_configs={"min.insync.replicas": "2"})])
        finally:
            await admin.close()

        async def fully_replicated() -> dict[int, PartitionState] | None:
            parts = await partitions_or_none(cluster, topic)
            ok = parts and len(parts) == 3 and all(len(p.isr) == 3 and p.leader > 0 for p in parts.values())
            return parts if ok else None

        before = await eventually(fully_replicated, timeout=30)
        leader = before[0].leader
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic, f"before-{i}".encode(), partition=0)
            pid = cluster.pids[leader]

            assert cluster.kill(leader) == -signal.SIGKILL
            assert not psutil.pid_exists(pid)

            async def moved() -> PartitionState | None:
                parts = await partitions_or_none(cluster, topic)
                p = parts[0] if parts else None
                return p if p and p.leader not in (-1, leader) and leader not in p.isr else None

            # The controller fences the dead broker after broker.session.timeout.ms (9 s by default).
            after = await eventually(moved, timeout=60)
            assert len(after.isr) == 2
            # acks=all with two of three in sync: min.insync.replicas=2 still accepts the write.
            for i in range(5):
                await producer.send_and_wait(topic, f"after-{i}".encode(), partition=0)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            values: list[bytes] = []

            async def read_all() -> bool:
                batch = await consumer.getmany(tp, timeout_ms=500)
                values.extend(r.value for r in batch.get(tp, []) if r.value is not None)
                return len(values) >= 10

            await eventually(read_all, timeout=30, interval=0)
        finally:
            await consumer.stop()
        expected = [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
        assert [v.decode() for v in values] == expected

        cluster.start(leader)  # the same data dir and ports; returns once it answers listing itself

        async def rejoined() -> dict[int, PartitionState] | None:
            parts = await partitions_or_none(cluster, topic)
            return parts if parts and all(leader in p.isr for p in parts.values()) else None

        await eventually(rejoined, timeout=60)

    def test_stop_ends_every_node_by_pid(self, cluster: KafkaCluster) -> None:
        pids = cluster.pids
        assert sorted(pids) == [1, 2, 3]
        jvms = [psutil.Process(pid) for pid in pids.values()]
        codes = cluster.stop()
        assert all(code is not None for code in codes.values()), codes
        assert_all_gone(jvms)
        assert cluster.pids == {}
        assert not [n.port for n in cluster.nodes.values() if port_accepts(HOST, n.port)]


def test_broker_command_runs_three_nodes_until_a_signal(tmp_path: Path) -> None:
    ports = free_ports(3)
    url = "kafka://" + ";".join(f"{HOST}:{p}" for p in ports)
    env = {**os.environ, "BROKER_URL": url, "STATE_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    with started([sys.executable, "-m", "stream_app", "broker", "--nodes", "3"], env) as proc:
        out = Output(proc)
        assert out.until("BROKER_URL=", timeout=CLUSTER_READY_TIMEOUT) == f"BROKER_URL={url}", out.text
        bootstrap = ",".join(f"{HOST}:{p}" for p in ports)
        assert f"cluster ready: 3 nodes at {bootstrap} " in out.text
        assert f"bootstrap servers: {bootstrap}\n" in out.text
        info = run_blocking(lambda: describe_cluster(bootstrap))
        assert info is not None and sorted(info.brokers) == [(HOST, p) for p in ports]
        for node_id in (1, 2, 3):
            assert (
                tmp_path / "state" / "kafka-cluster" / f"node-{node_id}" / "data" / "meta.properties"
            ).is_file()
        jvms = descendants(proc.pid)
        assert [p.name() for p in jvms] == ["java"] * 3

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.rest()
        assert "cluster stopping" in out.rest()
        assert_all_gone(jvms)
        assert not [p for p in ports if port_accepts(HOST, p)]
