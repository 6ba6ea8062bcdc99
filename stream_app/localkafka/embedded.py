"""The embedded Apache Kafka on loopback addresses: one KRaft node (broker and controller in one JVM),
or a cluster of such nodes sharing one quorum (the production shape, for tests of failover).

Also the readiness checks every caller of a local broker needs: "an open port" is not "a broker that
answers metadata requests".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import TracebackType
from typing import IO

from stream_app.localkafka.config import (
    CLUSTER_MIN_NODES,
    CLUSTER_REPLICATION,
    SINGLE_NODE_REPLICATION,
    render_properties,
)
from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import (
    BROKER_DIR,
    TOOL_JVM_OPTS,
    classpath,
    ensure_jars,
    java_executable,
    kafka_version,
)
from stream_app.localkafka.jvm import JvmChild
from stream_app.localkafka.process import (
    STOP_TIMEOUT,
    free_port,
    port_accepts,
    port_bindable,
    run_blocking,
)
from stream_app.settings import Settings

SERVER_TEMPLATE = BROKER_DIR / "server.properties.template"
SERVER_LOG4J = BROKER_DIR / "log4j2.xml"

BROKER_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    # A broker that ran out of heap is useless; dying makes the supervisor notice at once.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

READY_TIMEOUT = 60.0
# Three JVMs starting together on a small machine, and a quorum to elect, before any broker answers.
CLUSTER_READY_TIMEOUT = 180.0
DEFAULT_PORT = 9092
# A "dynamic quorum" data dir (formatted with --standalone) carries its voter set in this bootstrap
# snapshot; such a dir must be started with controller.quorum.bootstrap.servers, not static voters.
DYNAMIC_QUORUM_SNAPSHOT = Path("__cluster_metadata-0") / "00000000000000000000-0000000000.checkpoint"


# -------------------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    brokers: list[tuple[str, int]]


async def describe_cluster(bootstrap: str, timeout: float = 3.0) -> ClusterInfo | None:
    """Ask `bootstrap` for cluster metadata; None when no Kafka broker answers there (yet)."""
    # Imported here: the `kafka-*` tool commands exec Java at once and should not pay for aiokafka.
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            meta = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    brokers = [(str(b["host"]), int(b["port"])) for b in meta.get("brokers", [])]
    return ClusterInfo(meta.get("cluster_id"), brokers) if brokers else None


def kafka_answers(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when a Kafka broker at host:port answers a metadata request (an open port is not enough)."""
    if not port_accepts(host, port):
        return False  # checked first: aiokafka logs an ERROR for every refused connection
    info = run_blocking(lambda: describe_cluster(f"{host}:{port}", timeout))
    return info is not None


# ------------------------------------------------------------------------------------------ broker


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "!")) and "=" in line:
                key, value = line.split("=", 1)
                props[key.strip()] = value.strip()
    return props


def _previous_controller_port(server_properties: Path) -> int | None:
    """The controller port a node's last server.properties gave it, if any."""
    listeners = _read_properties(server_properties).get("listeners", "")
    m = re.search(r"CONTROLLER://[^:,]+:(\d+)", listeners)
    return int(m.group(1)) if m else None


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid format)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids these too: they read as options on a command line
            return text


class EmbeddedKafka(JvmChild):
    """One Apache Kafka node (broker and KRaft controller in one JVM) on a loopback address.

    Alone it is a quorum of itself. Given `node_id`, `voters` (node id -> controller port, every voter
    on `host`) and `cluster_id`, it is one node of a KafkaCluster, which sets those.

    Layout of `data_dir`: `server.properties` (rewritten on every start), `data/` (the log dir;
    formatted on first start, its meta.properties keeps the cluster id), `logs/server.log` (log4j) and
    `logs/jvm.out` (the JVM's own stdout/stderr, e.g. a crash before logging starts).
    """

    kind = "broker"
    awaited = "answer metadata requests"
    poll_interval = 0.1

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        data_dir: Path | None = None,
        *,
        controller_port: int | None = None,
        new_process_group: bool = False,
        ready_timeout: float = READY_TIMEOUT,
        node_id: int | None = None,
        voters: Mapping[int, int] | None = None,
        cluster_id: str | None = None,
        replication: Mapping[str, str] = SINGLE_NODE_REPLICATION,
    ) -> None:
        super().__init__(new_process_group=new_process_group, ready_timeout=ready_timeout)
        self.host = host
        self.port = port
        self.data_dir = (data_dir or Settings().state_dir / "kafka").resolve()
        self.controller_port = controller_port
        self.node_id = node_id
        self.voters = dict(voters) if voters else None
        self.cluster_id = cluster_id
        self.replication = replication
        self._lock: IO[str] | None = None

    # -- paths and addresses

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def version(self) -> str:
        return kafka_version()

    @property
    def address(self) -> str:
        return self.bootstrap

    @property
    def jvm_out_path(self) -> Path:
        return self.logs_dir / "jvm.out"

    # -- lifecycle (JvmChild's start, wait_ready, stop, kill)

    def _launch(self) -> None:
        self._check_address()
        java = java_executable()
        ensure_jars()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._take_data_dir_lock()
        self._write_config()
        self._format_if_needed(java)
        cmd = self._kafka_command(java, BROKER_JVM_OPTS, "kafka.Kafka", str(self.server_properties))
        assert self._lock is not None
        # The JVM inherits the data-dir lock, so the lock lasts as long as the JVM does, even if this
        # Python process dies first.
        self._spawn(cmd, cwd=self.data_dir, pass_fds=[self._lock.fileno()])

    def _ready(self) -> bool:
        """The broker answers a metadata request listing itself (an open port is not enough)."""
        if not port_accepts(self.host, self.port):
            return False
        info = run_blocking(lambda: describe_cluster(self.bootstrap, 2.0))
        if info is not None and (self.host, self.port) in info.brokers:
            self.cluster_id = info.cluster_id
            return True
        return False

    # -- internals

    def _check_address(self) -> None:
        try:
            addr = ipaddress.ip_address(socket.gethostbyname(self.host))
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot resolve broker host {self.host!r}: {e}") from e
        if not addr.is_loopback:
            raise BrokerError(
                f"the embedded broker listens on loopback addresses only, not {self.host} ({addr}); "
                "point BROKER_URL at 127.0.0.1, or at a real Kafka cluster and do not start this one"
            )
        if port_accepts(self.host, self.port):
            raise BrokerError(f"{self.bootstrap} is already in use (another broker running?)")

    def _take_data_dir_lock(self) -> None:
        # Kafka locks its log dirs only once the broker half is starting; by then the controller half
        # has already written to the metadata log. Two JVMs on one dir corrupt the quorum state (seen:
        # a later SIGTERM hangs forever), so refuse the second one up front.
        lock = (self.data_dir / ".embedded.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            lock.close()
            raise BrokerError(
                f"{self.data_dir} is in use by another embedded broker ({holder or 'unknown'}); "
                "stop it or pick another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} at {self.bootstrap}\n")
        lock.flush()
        self._lock = lock

    def _release(self) -> None:
        super()._release()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _pick_controller_port(self) -> int:
        if self.controller_port:
            return self.controller_port
        # Reuse the last run's port when free: nothing depends on it, but stable is easier to read.
        previous = _previous_controller_port(self.server_properties)
        if previous and previous != self.port and port_bindable(self.host, previous):
            return previous
        while (port := free_port(self.host)) == self.port:
            pass
        return port

    def _write_config(self) -> None:
        meta = _read_properties(self.log_dir / "meta.properties")
        formatted_as = meta.get("node.id")
        if formatted_as and self.node_id is not None and int(formatted_as) != self.node_id:
            raise BrokerError(f"{self.log_dir} belongs to node {formatted_as}, not to node {self.node_id}")
        # An existing data dir keeps its identity: another node id would not match its metadata log.
        node_id = formatted_as or str(self.node_id or 1)
        self.cluster_id = meta.get("cluster.id", self.cluster_id)
        self.controller_port = self._pick_controller_port()
        if self.voters:
            # Static voters, every node listed the same way: the quorum a KafkaCluster formats.
            voters = ",".join(f"{i}@{self.host}:{port}" for i, port in sorted(self.voters.items()))
            quorum = f"controller.quorum.voters={voters}"
        elif (self.log_dir / DYNAMIC_QUORUM_SNAPSHOT).exists():
            quorum = f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}"
        else:
            quorum = f"controller.quorum.voters={node_id}@{self.host}:{self.controller_port}"
        text = Template(SERVER_TEMPLATE.read_text()).substitute(
            node_id=node_id,
            quorum_line=quorum,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.log_dir,
            replication=render_properties(self.replication),
        )
        self.server_properties.write_text(text)

    def _kafka_command(self, java: str, jvm_opts: Sequence[str], main_class: str, *args: str) -> list[str]:
        """A Kafka main class run from the pinned jars, logging as this node does (into logs_dir)."""
        return [
            java,
            *jvm_opts,
            f"-Dlog4j2.configurationFile={SERVER_LOG4J}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            classpath(),
            main_class,
            *args,
        ]

    def _format_if_needed(self, java: str) -> None:
        if (self.log_dir / "meta.properties").is_file():
            return
        # A cluster's nodes must all be formatted with the cluster id it chose; a lone node picks one.
        self.cluster_id = self.cluster_id or new_cluster_id()
        # Static voters (no --standalone or --initial-controllers): the voter set lives in
        # server.properties, not in the metadata log, so controller ports may change between runs.
        cmd = self._kafka_command(
            java,
            TOOL_JVM_OPTS,
            "kafka.tools.StorageTool",
            *("format", "--cluster-id", self.cluster_id, "--config", str(self.server_properties)),
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.log_dir} failed:\n{done.stdout}{done.stderr}")


# ----------------------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata has it, by node id; `leader` is -1 while it has none."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class KafkaCluster:
    """`nodes` Apache Kafka nodes on one loopback host, each a KRaft controller and a broker: one quorum
    (every node a voter), one cluster id, replication as config.CLUSTER_REPLICATION has it.

    Node ids are 1..nodes, the ids Kafka's metadata names leaders and replicas by, so
    `kill(cluster.partitions(t)[0].leader)` stops the leader of partition 0. Layout of `data_dir`:
    `cluster.properties` (the node count and cluster id the node dirs were formatted with) and
    `node-<id>/`, each laid out as an EmbeddedKafka's data dir.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        data_dir: Path | None = None,
        controller_ports: Sequence[int] | None = None,
        new_process_group: bool = False,
        ready_timeout: float = CLUSTER_READY_TIMEOUT,
    ) -> None:
        if nodes < CLUSTER_MIN_NODES:
            raise BrokerError(f"a cluster has at least {CLUSTER_MIN_NODES} nodes, not {nodes}")
        broker_ports = list(ports) if ports is not None else [DEFAULT_PORT + i for i in range(nodes)]
        wanted = list(controller_ports) if controller_ports is not None else None
        if len(broker_ports) != nodes or (wanted is not None and len(wanted) != nodes):
            raise BrokerError(f"{nodes} nodes need {nodes} broker ports (and controller ports, if given)")
        if len(set(broker_ports + (wanted or []))) != len(broker_ports) + len(wanted or []):
            raise BrokerError(f"ports must all differ: brokers {broker_ports}, controllers {wanted}")
        self.host = host
        self.data_dir = (data_dir or Settings().state_dir / "kafka-cluster").resolve()
        self.ready_timeout = ready_timeout
        self.cluster_id: str | None = None
        self._wanted_controller_ports = wanted
        self.nodes: dict[int, EmbeddedKafka] = {
            node_id: EmbeddedKafka(
                host,
                port,
                self.data_dir / f"node-{node_id}",
                new_process_group=new_process_group,
                ready_timeout=ready_timeout,
                node_id=node_id,
                replication=CLUSTER_REPLICATION,
            )
            for node_id, port in enumerate(broker_ports, start=1)
        }

    # -- addresses and state

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated (the Kafka clients' and tools' form)."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def url(self) -> str:
        """BROKER_URL's form (Faust's): `kafka://host:port;host:port;...`."""
        return "kafka://" + ";".join(node.bootstrap for node in self.nodes.values())

    @property
    def controllers(self) -> str:
        return ",".join(f"{n.host}:{n.controller_port}" for n in self.nodes.values() if n.controller_port)

    @property
    def version(self) -> str:
        return kafka_version()

    @property
    def pids(self) -> dict[int, int]:
        """Node id -> PID of every running node."""
        return {node_id: node.pid for node_id, node in self.nodes.items() if node.running()}

    def node(self, node_id: int) -> EmbeddedKafka:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise BrokerError(f"no node {node_id}; the nodes are {sorted(self.nodes)}") from None

    def running(self) -> bool:
        """True while every node runs."""
        return all(node.running() for node in self.nodes.values())

    # -- lifecycle

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(
        self, node: int | None = None, *, wait: bool = True, abort: Callable[[], bool] | None = None
    ) -> KafkaCluster:
        """Start every node (or only `node`, with the data dir and ports it had) and by default wait.

        The whole cluster is ready once every node answers metadata requests listing itself and the
        metadata lists every node; one node once it answers listing itself.
        """
        if node is not None:
            target = self.node(node)
            if target.voters is None:
                raise BrokerError("start the whole cluster once before restarting one of its nodes")
            target.start(wait=wait, abort=abort)
            return self
        if not any(n.running() for n in self.nodes.values()):
            self._prepare()
        try:
            # No node can finish starting alone (it waits for a quorum majority): start all, then wait.
            for n in self.nodes.values():
                n.start(wait=False)
            if wait:
                self.wait_ready(abort=abort)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float | None = None, abort: Callable[[], bool] | None = None) -> None:
        """Block until every node answers and the metadata lists all of them, or raise with a log."""
        budget = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        for n in self.nodes.values():
            n.wait_ready(max(0.0, deadline - time.monotonic()), abort)
        expected = {(n.host, n.port) for n in self.nodes.values()}
        while True:
            info = run_blocking(lambda: describe_cluster(self.bootstrap, 2.0))
            if info is not None and set(info.brokers) == expected:
                self.cluster_id = info.cluster_id
                return
            for n in self.nodes.values():
                if not n.running():
                    raise BrokerError(
                        f"node {n.node_id} ({n.bootstrap}) exited during startup; "
                        f"last lines of {n.log_path}:\n{n.log_tail()}"
                    )
            if abort is not None and abort():
                raise BrokerError("startup aborted")
            if time.monotonic() > deadline:
                listed = sorted(info.brokers) if info else "none"
                raise BrokerError(
                    f"the cluster lists brokers {listed} after {budget:.0f} s, not {sorted(expected)}"
                )
            first = next(iter(self.nodes.values()))
            assert first.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                first.proc.wait(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[int, int | None]:
        """SIGTERM every node by PID at once, wait up to `timeout` in all, SIGKILL what is left.

        Returns node id -> exit code (None for a node that was not started).
        """
        # All at once: stopped one by one, each node first hands its partitions to the others
        # (controlled shutdown) only for the next one to hand them on again.
        for n in self.nodes.values():
            if n.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        return {node_id: n.stop(max(0.1, deadline - time.monotonic())) for node_id, n in self.nodes.items()}

    def kill(self, node: int) -> int | None:
        """SIGKILL one node by PID, as a crash would end it; the others carry on. Returns its code."""
        return self.node(node).kill()

    # -- metadata

    async def describe_partitions(self, topic: str) -> dict[int, PartitionState]:
        """Partition -> leader, replicas and in-sync replicas (node ids), from the cluster's metadata."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if not described or described[0]["error_code"] != 0:
            raise BrokerError(f"cannot describe topic {topic!r}: {described}")
        return {
            int(p["partition"]): PartitionState(int(p["leader"]), tuple(p["replicas"]), tuple(p["isr"]))
            for p in described[0]["partitions"]
        }

    def partitions(self, topic: str) -> dict[int, PartitionState]:
        """describe_partitions, from sync code."""
        return run_blocking(lambda: self.describe_partitions(topic))

    def leader(self, topic: str, partition: int = 0) -> int:
        """The node id leading `partition` of `topic` now (-1 while none does)."""
        return self.partitions(topic)[partition].leader

    # -- internals

    def _prepare(self) -> None:
        """Settle the cluster id and the controller ports, and give every node the voter set."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = self._settled_cluster_id()
        ports = self._pick_controller_ports()
        voters = dict(zip(self.nodes, ports, strict=True))
        for node_id, n in self.nodes.items():
            n.controller_port = voters[node_id]
            n.voters = voters
            n.cluster_id = self.cluster_id
        marker = self.data_dir / "cluster.properties"
        marker.write_text(
            "# What the node directories here were formatted as (stream_app.localkafka.KafkaCluster).\n"
            f"nodes={len(self.nodes)}\ncluster.id={self.cluster_id}\n"
        )

    def _settled_cluster_id(self) -> str:
        marker = _read_properties(self.data_dir / "cluster.properties")
        if marker.get("nodes") and int(marker["nodes"]) != len(self.nodes):
            raise BrokerError(
                f"{self.data_dir} holds a cluster of {marker['nodes']} nodes, not {len(self.nodes)}: "
                "its quorum cannot change size here; pick another --data-dir or remove this one"
            )
        ids = {marker["cluster.id"]} if marker.get("cluster.id") else set()
        for n in self.nodes.values():
            formatted = _read_properties(n.log_dir / "meta.properties").get("cluster.id")
            if formatted:
                ids.add(formatted)
        if len(ids) > 1:
            raise BrokerError(f"the node dirs in {self.data_dir} belong to different clusters: {sorted(ids)}")
        return ids.pop() if ids else new_cluster_id()

    def _pick_controller_ports(self) -> list[int]:
        if self._wanted_controller_ports is not None:
            return self._wanted_controller_ports
        taken = {n.port for n in self.nodes.values()}
        # Reuse the last run's ports when all are free: nothing depends on them, but stable reads better.
        found = [_previous_controller_port(n.server_properties) for n in self.nodes.values()]
        previous = [p for p in found if p is not None]
        if (
            len(set(previous)) == len(self.nodes)
            and not taken & set(previous)
            and all(port_bindable(self.host, p) for p in previous)
        ):
            return previous
        ports: list[int] = []
        while len(ports) < len(self.nodes):
            port = free_port(self.host)
            if port not in taken and port not in ports:
                ports.append(port)
        return ports
