"""The foreground run of `python -m stream_app broker` and `registry`: start, say where it is, supervise
until SIGINT/SIGTERM/SIGHUP or a child's own exit, stop by PID."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Protocol

from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jvm import JvmChild


class Service(Protocol):
    """One JVM child, or a cluster of them: started until ready (or aborted), stopped by PID."""

    def start(self, *, wait: bool = True, abort: Callable[[], bool] | None = None) -> object: ...

    def stop(self, timeout: float = ...) -> object: ...


def stop_signals() -> list[int]:
    """Record SIGINT/SIGTERM/SIGHUP instead of dying of them; returns the record (empty until one)."""
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    return stopping


def run_foreground(
    service: Service,
    name: str,
    children: Mapping[str, JvmChild],
    ready_lines: Callable[[], Sequence[str]],
    stopping: list[int],
    stopping_line: Callable[[], str] | None = None,
) -> int:
    """Run `service` until a signal lands in `stopping` (0) or it fails to start or a child exits (1).

    `name` says what failed or stops ("broker failed: ..."); `children` (by how the messages name
    them) are the JVMs supervised; `ready_lines` are printed once it is ready, `stopping_line` (default
    "<name> stopping") when a signal came. It is stopped in every case.
    """
    try:
        try:
            service.start(abort=lambda: bool(stopping))
        except BrokerError as e:
            if stopping:
                return 0
            print(f"{name} failed: {e}", file=sys.stderr)
            return 1
        for line in ready_lines():
            print(line, flush=True)
        died = _supervise(children, stopping)
        if died is not None:
            label, child = died
            code = child.proc.returncode if child.proc else None
            others = "stopping the others; " if len(children) > 1 else ""
            print(
                f"{label} exited unexpectedly with code {code}; "
                f"{others}last lines of {child.log_path}:\n{child.log_tail()}",
                file=sys.stderr,
            )
            return 1
        print(stopping_line() if stopping_line else f"{name} stopping", flush=True)
        return 0
    finally:
        service.stop()


def _supervise(children: Mapping[str, JvmChild], stopping: list[int]) -> tuple[str, JvmChild] | None:
    """Wait for a signal (returns None) or for a child to exit on its own (returns it, by its label)."""
    first = next(iter(children.values())).proc
    assert first is not None
    while not stopping:
        # Waiting on a process rather than sleeping: its death is noticed at once.
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(0.2)
        for label, child in children.items():
            if child.proc is not None and child.proc.poll() is not None:
                return label, child
    return None
