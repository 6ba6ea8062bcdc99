"""stream_app.localkafka without a JVM: the node-count settings, BROKER_URL's addresses, cluster arguments,
the poms' pins and the JVM-child lifecycle (around a shell)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stream_app.localkafka import (
    CLUSTER_REPLICATION,
    SINGLE_NODE_REPLICATION,
    BrokerError,
    KafkaCluster,
    docker_env,
    free_port,
    jars,
    registry,
    replication_settings,
)
from stream_app.localkafka.cli import broker_addresses, cluster_addresses
from stream_app.localkafka.jars import kafka_version, pom_property
from stream_app.localkafka.jvm import JvmChild


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


def test_pom_property_reads_both_poms_pins_and_names_a_missing_one(tmp_path: Path) -> None:
    assert pom_property(jars.POM, "kafka.version") == kafka_version()
    assert pom_property(registry.POM, "apicurio.version") == registry.apicurio_version()
    pom = tmp_path / "pom.xml"
    pom.write_text('<project xmlns="http://maven.apache.org/POM/4.0.0"><properties/></project>')
    with pytest.raises(BrokerError, match="has no <kafka.version> property"):
        kafka_version(pom)


class _Shell(JvmChild):
    """The JvmChild lifecycle around a shell instead of a JVM: ready once `marker` exists."""

    kind = "shell"

    def __init__(self, script: str, workdir: Path) -> None:
        super().__init__(new_process_group=True, ready_timeout=10.0)
        self.script = script
        self.workdir = workdir

    @property
    def address(self) -> str:
        return str(self.workdir)

    @property
    def log_path(self) -> Path:
        return self.workdir / "out.log"

    def _launch(self) -> None:
        self._spawn(["sh", "-c", self.script], cwd=self.workdir)

    def _ready(self) -> bool:
        return (self.workdir / "marker").exists()


def test_a_child_is_awaited_until_ready_and_stopped_by_pid(tmp_path: Path) -> None:
    # `exec` so the PID is the sleeper's own, and SIGTERM reaches it rather than a waiting shell.
    child = _Shell("echo up; touch marker; exec sleep 60", tmp_path)
    with child:
        assert child.running()
        pid = child.pid
    assert not child.running()
    assert child.proc is not None and child.proc.returncode == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert child.log_tail() == "up"


def test_a_child_that_exits_during_startup_fails_with_its_log(tmp_path: Path) -> None:
    child = _Shell("echo boom; exit 3", tmp_path)
    with pytest.raises(BrokerError, match="the shell exited with code 3 during startup;.*\nboom"):
        child.start()
    assert not child.running()


def test_a_child_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    child = _Shell("exec sleep 60", tmp_path)
    child.ready_timeout = 0.3
    with pytest.raises(BrokerError, match="did not answer within 0 s"):
        child.start()
    assert child.proc is not None and child.proc.returncode is not None
