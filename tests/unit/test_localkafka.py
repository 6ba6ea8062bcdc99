"""stream_app.localkafka without a JVM: the node-count settings, BROKER_URL's addresses, cluster arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_app.localkafka import (
    CLUSTER_REPLICATION,
    SINGLE_NODE_REPLICATION,
    BrokerError,
    KafkaCluster,
    docker_env,
    free_port,
    replication_settings,
)
from stream_app.localkafka.cli import broker_addresses, cluster_addresses


def test_replication_follows_the_node_count() -> None:
    assert replication_settings(1) is SINGLE_NODE_REPLICATION
    assert replication_settings(3) is CLUSTER_REPLICATION
    assert replication_settings(5) is CLUSTER_REPLICATION
    with pytest.raises(ValueError):
        replication_settings(2)
    assert CLUSTER_REPLICATION["default.replication.factor"] == "3"
    assert CLUSTER_REPLICATION["min.insync.replicas"] == "2"
    assert CLUSTER_REPLICATION["offsets.topic.replication.factor"] == "3"
    assert CLUSTER_REPLICATION["transaction.state.log.replication.factor"] == "3"
    assert CLUSTER_REPLICATION["transaction.state.log.min.isr"] == "2"
    assert set(SINGLE_NODE_REPLICATION) == set(CLUSTER_REPLICATION)


def test_docker_env_names_settings_as_the_apache_kafka_image_reads_them() -> None:
    env = docker_env(CLUSTER_REPLICATION)
    assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    assert len(env) == len(CLUSTER_REPLICATION)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://127.0.0.1:9092", [("127.0.0.1", 9092)]),
        ("kafka://127.0.0.1:9092;127.0.0.1:9093", [("127.0.0.1", 9092), ("127.0.0.1", 9093)]),
        ("127.0.0.1:1,127.0.0.1:2", [("127.0.0.1", 1), ("127.0.0.1", 2)]),
        ("kafka://localhost", [("localhost", 9092)]),
    ],
)
def test_broker_addresses(url: str, expected: list[tuple[str, int]]) -> None:
    assert broker_addresses(url) == expected


def test_cluster_addresses_default_to_consecutive_ports() -> None:
    assert cluster_addresses("kafka://127.0.0.1:9092", 3) == ("127.0.0.1", [9092, 9093, 9094])
    assert cluster_addresses("kafka://127.0.0.1:7;127.0.0.1:5;127.0.0.1:9", 3) == ("127.0.0.1", [7, 5, 9])
    with pytest.raises(BrokerError, match="needs 1 or 3"):
        cluster_addresses("kafka://127.0.0.1:1;127.0.0.1:2", 3)
    with pytest.raises(BrokerError, match="one host"):
        cluster_addresses("kafka://127.0.0.1:1;127.0.0.2:2;127.0.0.1:3", 3)


def test_cluster_arguments_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="at least 3"):
        KafkaCluster(2, data_dir=tmp_path)
    with pytest.raises(BrokerError, match="must all differ"):
        KafkaCluster(3, ports=[1, 2, 2], data_dir=tmp_path)
    with pytest.raises(BrokerError, match="must all differ"):
        KafkaCluster(3, ports=[1, 2, 3], controller_ports=[3, 4, 5], data_dir=tmp_path)
    cluster = KafkaCluster(3, data_dir=tmp_path)
    assert cluster.bootstrap == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    assert cluster.url == "kafka://127.0.0.1:9092;127.0.0.1:9093;127.0.0.1:9094"
    assert [n.data_dir for n in cluster.nodes.values()] == [tmp_path / f"node-{i}" for i in (1, 2, 3)]
    with pytest.raises(BrokerError, match="start the whole cluster"):
        cluster.start(2)


def test_a_data_dir_formatted_for_another_node_count_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cluster.properties").write_text("nodes=5\ncluster.id=abc\n")
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    with pytest.raises(BrokerError, match="cluster of 5 nodes, not 3"):
        KafkaCluster(3, ports=sorted(ports), data_dir=tmp_path).start()
