"""`python -m stream_app broker [--nodes N]`: the embedded Kafka in the foreground until SIGINT/SIGTERM.

One node (the default, what `make run` uses) listens where BROKER_URL points. `--nodes 3` runs the
production shape, three KRaft nodes in one quorum, on the three addresses BROKER_URL lists (or on
consecutive ports from its one address: 9092-9094 by default).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from stream_app.localkafka.config import CLUSTER_MIN_NODES
from stream_app.localkafka.embedded import (
    CLUSTER_READY_TIMEOUT,
    READY_TIMEOUT,
    EmbeddedKafka,
    KafkaCluster,
)
from stream_app.localkafka.errors import BrokerError
from stream_app.settings import Settings


def ready_line(broker: EmbeddedKafka) -> str:
    return (
        f"broker ready at {broker.bootstrap} (Apache Kafka {broker.version}, KRaft), "
        f"data in {broker.data_dir}"
    )


def cluster_ready_lines(cluster: KafkaCluster) -> list[str]:
    return [
        f"cluster ready: {len(cluster.nodes)} nodes at {cluster.bootstrap} "
        f"(Apache Kafka {cluster.version}, KRaft; controllers {cluster.controllers}), "
        f"data in {cluster.data_dir}",
        f"bootstrap servers: {cluster.bootstrap}",
        f"BROKER_URL={cluster.url}",
    ]


def broker_addresses(url: str) -> list[tuple[str, int]]:
    """Every host:port of a BROKER_URL (`kafka://h:p;h:p`, commas too, scheme optional)."""
    addresses = []
    for part in url.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        parsed = urlparse(part if "://" in part else f"kafka://{part}")
        addresses.append((parsed.hostname or "127.0.0.1", parsed.port or 9092))
    return addresses


def cluster_addresses(url: str, nodes: int) -> tuple[str, list[int]]:
    """The host and broker ports of `nodes` nodes: BROKER_URL's addresses if it lists `nodes` of them,
    else consecutive ports from its first address."""
    addresses = broker_addresses(url) or [("127.0.0.1", 9092)]
    if len(addresses) == 1:
        host, first = addresses[0]
        return host, [first + i for i in range(nodes)]
    if len(addresses) != nodes:
        raise BrokerError(f"BROKER_URL lists {len(addresses)} addresses; --nodes {nodes} needs 1 or {nodes}")
    hosts = {host for host, _ in addresses}
    if len(hosts) != 1:
        raise BrokerError(f"the local cluster runs on one host; BROKER_URL names {sorted(hosts)}")
    return hosts.pop(), [port for _, port in addresses]


def main(argv: Sequence[str]) -> int:
    """Run the broker (or cluster) until a signal; 0 on a signal, 1 if it failed or a node died."""
    parser = argparse.ArgumentParser(
        prog="python -m stream_app broker",
        description="The embedded Apache Kafka (KRaft), listening where BROKER_URL points.",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help=f"1 (default) or at least {CLUSTER_MIN_NODES}: a cluster of combined controller+broker "
        "nodes in one quorum, on BROKER_URL's addresses or consecutive ports from its first",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: $STATE_DIR/kafka (a cluster: kafka-cluster)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=None,
        help=f"seconds (default {READY_TIMEOUT:.0f}; a cluster: {CLUSTER_READY_TIMEOUT:.0f})",
    )
    args = parser.parse_args(list(argv))
    if args.nodes != 1 and args.nodes < CLUSTER_MIN_NODES:
        parser.error(f"--nodes is 1 or at least {CLUSTER_MIN_NODES}")
    settings = Settings()
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if args.nodes == 1:
        return _run_single(settings, args.data_dir, args.ready_timeout or READY_TIMEOUT, stopping)
    return _run_cluster(settings, args.nodes, args.data_dir, args.ready_timeout, stopping)


def _run_single(settings: Settings, data_dir: Path | None, ready_timeout: float, stopping: list[int]) -> int:
    host, port = settings.broker_host_port
    broker = EmbeddedKafka(
        host,
        port,
        data_dir or settings.state_dir / "kafka",
        # Own process group: a terminal's Ctrl-C reaches this process only, which then stops the JVM.
        new_process_group=True,
        ready_timeout=ready_timeout,
    )
    try:
        try:
            broker.start(abort=lambda: bool(stopping))
        except BrokerError as e:
            if stopping:
                return 0
            print(f"broker failed: {e}", file=sys.stderr)
            return 1
        print(ready_line(broker), flush=True)
        died = _supervise({1: broker}, stopping)
        if died is not None:
            print(
                f"broker exited unexpectedly with code {died.proc.returncode if died.proc else None}; "
                f"last lines of {died.log_path}:\n{died.log_tail()}",
                file=sys.stderr,
            )
            return 1
        print("broker stopping", flush=True)
        return 0
    finally:
        broker.stop()


def _run_cluster(
    settings: Settings, nodes: int, data_dir: Path | None, ready_timeout: float | None, stopping: list[int]
) -> int:
    try:
        host, ports = cluster_addresses(settings.broker_url, nodes)
        cluster = KafkaCluster(
            nodes,
            host=host,
            ports=ports,
            data_dir=data_dir or settings.state_dir / "kafka-cluster",
            # Own process groups: a terminal's Ctrl-C reaches this process only, which stops the JVMs.
            new_process_group=True,
            ready_timeout=ready_timeout or CLUSTER_READY_TIMEOUT,
        )
    except BrokerError as e:
        print(f"cluster failed: {e}", file=sys.stderr)
        return 1
    try:
        try:
            cluster.start(abort=lambda: bool(stopping))
        except BrokerError as e:
            if stopping:
                return 0
            print(f"cluster failed: {e}", file=sys.stderr)
            return 1
        for line in cluster_ready_lines(cluster):
            print(line, flush=True)
        died = _supervise(cluster.nodes, stopping)
        if died is not None:
            code = died.proc.returncode if died.proc else None
            print(
                f"node {died.node_id} ({died.bootstrap}) exited unexpectedly with code {code}; "
                f"stopping the others; last lines of {died.log_path}:\n{died.log_tail()}",
                file=sys.stderr,
            )
            return 1
        print(f"cluster stopping (pids {', '.join(str(p) for p in cluster.pids.values())})", flush=True)
        return 0
    finally:
        cluster.stop()


def _supervise(nodes: dict[int, EmbeddedKafka], stopping: list[int]) -> EmbeddedKafka | None:
    """Wait for a signal (returns None) or for a node to exit on its own (returns that node)."""
    first = next(iter(nodes.values())).proc
    assert first is not None
    while not stopping:
        # Waiting on a process rather than sleeping: its death is noticed at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(0.2)
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is not None:
                return node
    return None
