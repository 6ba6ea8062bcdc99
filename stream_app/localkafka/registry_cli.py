"""`python -m stream_app registry`: Apicurio Registry (in-memory) in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from stream_app.localkafka.foreground import run_foreground, stop_signals
from stream_app.localkafka.registry import READY_TIMEOUT, LocalRegistry, host_port
from stream_app.settings import Settings


def ready_line(registry: LocalRegistry) -> str:
    return (
        f"schema registry ready at {registry.url} (Apicurio Registry {registry.version}, in-memory: "
        f"its schemas go when it stops); set SCHEMA_REGISTRY_URL={registry.url}"
    )


def main(argv: Sequence[str]) -> int:
    """Run the registry until a signal; 0 on a signal, 1 if it failed or died."""
    settings = Settings()
    default_host, default_port = host_port(settings.schema_registry_url)
    parser = argparse.ArgumentParser(
        prog="python -m stream_app registry",
        description="Apicurio Registry (in-memory storage) with its Confluent-compatible API at "
        "/apis/ccompat/v7, where SCHEMA_REGISTRY_URL points (default 127.0.0.1:8781).",
    )
    parser.add_argument("--host", default=default_host, help=f"default: {default_host}")
    parser.add_argument("--port", type=int, default=default_port, help=f"default: {default_port}")
    parser.add_argument("--log-dir", type=Path, default=None, help="default: $STATE_DIR/registry")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT, help="seconds (default 120)")
    args = parser.parse_args(list(argv))
    registry = LocalRegistry(
        args.host,
        args.port,
        args.log_dir or settings.state_dir / "registry",
        # Own process group: a terminal's Ctrl-C reaches this process only, which then stops the JVM.
        new_process_group=True,
        ready_timeout=args.ready_timeout,
    )
    return run_foreground(
        registry, "registry", {"registry": registry}, lambda: [ready_line(registry)], stop_signals()
    )
