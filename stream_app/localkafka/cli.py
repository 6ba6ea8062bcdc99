"""`python -m stream_app broker [--nodes N]`: the embedded Kafka in the foreground until SIGINT/SIGTERM.

One node (the default, what `make run` uses) listens where BROKER_URL points. `--nodes 3` runs the
production shape, three KRaft nodes in one quorum, on the three addresses BROKER_URL lists (or on
consecutive ports from its one address: 9092-9094 by default).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from stream_app.localkafka.config import CLUSTER_MIN_NODES
from stream_app.localkafka.embedded import (
    CLUSTER_READY_TIMEOUT,
    READY_TIMEOUT,
    EmbeddedKafka,
    KafkaCluster,
)
from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.foreground import run_foreground, stop_signals
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
    stopping = stop_signals()
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
    return run_foreground(broker, "broker", {"broker": broker}, lambda: [ready_line(broker)], stopping)


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
    return run_foreground(
        cluster,
        "cluster",
        {f"node {node_id} ({n.bootstrap})": n for node_id, n in cluster.nodes.items()},
        lambda: cluster_ready_lines(cluster),
        stopping,
        lambda: f"cluster stopping (pids {', '.join(str(p) for p in cluster.pids.values())})",
    )
