"""`python -m stream_app broker`: the embedded broker in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from stream_app.localkafka.embedded import READY_TIMEOUT, EmbeddedKafka
from stream_app.localkafka.errors import BrokerError
from stream_app.settings import Settings


def ready_line(broker: EmbeddedKafka) -> str:
    return (
        f"broker ready at {broker.bootstrap} (Apache Kafka {broker.version}, KRaft), "
        f"data in {broker.data_dir}"
    )


def main(argv: Sequence[str]) -> int:
    """Run the broker where BROKER_URL points until a signal; 0 on a signal, 1 if it failed or died."""
    parser = argparse.ArgumentParser(
        prog="python -m stream_app broker",
        description="The embedded Apache Kafka (single node, KRaft), listening where BROKER_URL points.",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $STATE_DIR/kafka")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT, help="seconds (default 60)")
    args = parser.parse_args(list(argv))
    settings = Settings()
    host, port = settings.broker_host_port
    broker = EmbeddedKafka(
        host,
        port,
        args.data_dir or settings.state_dir / "kafka",
        # Own process group: a terminal's Ctrl-C reaches this process only, which then stops the JVM.
        new_process_group=True,
        ready_timeout=args.ready_timeout,
    )
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        try:
            broker.start(abort=lambda: bool(stopping))
        except BrokerError as e:
            if stopping:
                return 0
            print(f"broker failed: {e}", file=sys.stderr)
            return 1
        print(ready_line(broker), flush=True)
        assert broker.proc is not None
        while not stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.proc.wait(0.2)
            if broker.proc.returncode is not None:
                print(
                    f"broker exited unexpectedly with code {broker.proc.returncode}; "
                    f"last lines of {broker.log_path}:\n{broker.log_tail()}",
                    file=sys.stderr,
                )
                return 1
        print("broker stopping", flush=True)
        return 0
    finally:
        broker.stop()
