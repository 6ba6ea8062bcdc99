"""Child processes that never outlive their parent, stopped by PID; ports; sync-to-async glue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

STOP_TIMEOUT = 20.0

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def _death_signal_preexec(sig: int) -> Callable[[], None] | None:
    """A preexec_fn making the child receive `sig` when its parent dies (Linux), so no orphan survives.

    The kernel ties this to the *thread* that forked, not the process: start children from a thread
    that lives as long as they should (the main thread), never from a short-lived worker thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    # Looked up before fork: the child should do as little as possible between fork and exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def spawn(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    new_process_group: bool = False,
    death_signal: int = signal.SIGTERM,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process; optionally in its own process group.

    A separate process group keeps a terminal's Ctrl-C away from the child, so the parent alone decides
    when and in which order its children stop.
    """
    return subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_death_signal_preexec(death_signal),
        process_group=0 if new_process_group else None,
        pass_fds=tuple(pass_fds),
    )


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM by PID, wait up to `timeout`, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return int(proc.returncode)


def kill_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGKILL by PID (no chance to clean up, as in a crash) and reap; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    return int(proc.returncode)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick; free until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True when a server could bind host:port now (SO_REUSEADDR, as Kafka's listeners do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, on a throwaway thread with its own event loop.

    Never asyncio.run() on the calling thread: inside a running loop (async tests) it is refused, and
    outside one it ends with set_event_loop(None), which detaches the loop pytest-asyncio (or any
    caller) had installed for the main thread.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()
