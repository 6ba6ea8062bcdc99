"""A JVM child started from resolved jars (a Kafka node, the schema registry): started with a command
line, awaited until it answers, stopped by PID (SIGTERM, then SIGKILL after a grace), its log tailed
for the error messages."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.process import STOP_TIMEOUT, kill_process, spawn, stop_process


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a file (read from its last 64 KiB: logs only grow); none if absent."""
    if not path.is_file():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        return f.read().decode("utf-8", "replace").splitlines()[-lines:]


class JvmChild(ABC):
    """One JVM this process starts and owns. A subclass says how to launch it (`_launch`, which ends in
    `_spawn`), when it is ready (`_ready`), where it is (`address`) and where it logs (`log_path`)."""

    # How messages name it ("the broker exited ..."), and what it does once ready ("did not <awaited>").
    kind: ClassVar[str]
    awaited: ClassVar[str] = "answer"
    # How often readiness is checked; between checks the wait is on the process, so a crash shows at once.
    poll_interval: ClassVar[float] = 0.2

    def __init__(self, *, new_process_group: bool, ready_timeout: float) -> None:
        self.new_process_group = new_process_group
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    # -- what a subclass says

    @property
    @abstractmethod
    def address(self) -> str:
        """Where it answers, for messages."""

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Its main log."""

    @property
    def jvm_out_path(self) -> Path:
        """Where the JVM's own stdout and stderr go: the main log unless the subclass logs elsewhere."""
        return self.log_path

    @abstractmethod
    def _launch(self) -> None:
        """Prepare what the JVM needs and start it with `_spawn`."""

    @abstractmethod
    def _ready(self) -> bool:
        """Whether it answers as it should once started (called while its process runs)."""

    # -- state

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BrokerError(f"the {self.kind} is not running")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        out = tail_lines(self.log_path, lines)
        if self.jvm_out_path != self.log_path:
            jvm = tail_lines(self.jvm_out_path, 10)
            if jvm:
                out += [f"--- {self.jvm_out_path.name} ---", *jvm]
        return "\n".join(out)

    # -- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, *, wait: bool = True, abort: Callable[[], bool] | None = None) -> Self:
        """Start the JVM and (by default) block until it is ready; a failed start leaves nothing running."""
        if self.running():
            return self
        try:
            self._launch()
        except BaseException:
            self._release()
            raise
        if wait:
            try:
                self.wait_ready(abort=abort)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float | None = None, abort: Callable[[], bool] | None = None) -> None:
        """Block until `_ready()`, or raise with the log's last lines (on an exit, at once)."""
        budget = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while True:
            if self.proc is None:
                raise BrokerError(f"the {self.kind} was never started")
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"the {self.kind} exited with code {self.proc.returncode} during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if abort is not None and abort():
                raise BrokerError("startup aborted")
            if self._ready():
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the {self.kind} at {self.address} did not {self.awaited} within {budget:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            # Wait on the process rather than sleep: an early crash is reported at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(self.poll_interval)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the JVM by PID, wait up to `timeout` for a clean shutdown, then SIGKILL; its code."""
        rc = None
        try:
            if self.proc is not None:
                rc = stop_process(self.proc, timeout)
        finally:
            self._release()
        return rc

    def kill(self) -> int | None:
        """SIGKILL the JVM by PID, as a crash would end it (no clean shutdown); returns its code."""
        rc = None
        try:
            if self.proc is not None:
                rc = kill_process(self.proc)
        finally:
            self._release()
        return rc

    # -- for subclasses

    def _spawn(self, cmd: Sequence[str], *, cwd: Path, pass_fds: Sequence[int] = ()) -> None:
        """Start `cmd` in `cwd`, its stdout and stderr appended to `jvm_out_path`."""
        self._out = self.jvm_out_path.open("ab")
        self.proc = spawn(
            cmd,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            new_process_group=self.new_process_group,
            # Kafka recovers from a hard kill and the registry keeps nothing; a JVM that outlives
            # its parent is worse than either.
            death_signal=signal.SIGKILL,
            pass_fds=pass_fds,
        )

    def _release(self) -> None:
        """Close what this process held for the JVM (once it is stopped, or failed to start)."""
        if self._out is not None:
            self._out.close()
            self._out = None
