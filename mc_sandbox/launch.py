"""Starting a ``python -m mc_sandbox`` process from elsewhere (the test fixtures, ``stream_app dev``).

Two ways, sharing one command line and one notion of "ready":

- ``command(...)`` gives the argv, for a caller that spawns and supervises the process itself (its own
  log file, its own process group); it then polls ``answers(base_url)`` (or watches the output for a
  line that ``is_ready_line``) until the sandbox serves.
- ``start(...)`` spawns it with its output on a pipe, drains that pipe for the process's whole life and
  returns once the ready line was printed; ``Launched.stop()`` stops it by its PID.

Only the standard library is used here, so a caller does not pay for aiohttp to launch one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

READY_PREFIX = "mc_sandbox ready"
READY_TIMEOUT = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's pick), for a sandbox started on the side."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def command(
    http_port: int,
    sftp_port: int,
    state_dir: Path | str,
    *,
    import_delay: float | None = None,
    extra: Sequence[str] = (),
    python: str | None = None,
) -> list[str]:
    """The argv that starts a sandbox on these ports; ``extra`` are further flags (see ``--help``)."""
    cmd = [
        python or sys.executable,
        "-m",
        "mc_sandbox",
        "--http-port",
        str(http_port),
        "--sftp-port",
        str(sftp_port),
        "--state-dir",
        str(state_dir),
    ]
    if import_delay is not None:
        cmd += ["--import-delay", str(import_delay)]
    return cmd + list(extra)


def is_ready_line(line: str) -> bool:
    """Whether a line of the sandbox's output is the one it prints once HTTP and SFTP both listen."""
    return line.startswith(READY_PREFIX)


def answers(base_url: str, timeout: float = 2.0) -> bool:
    """Whether a sandbox serves at ``base_url`` (e.g. ``http://127.0.0.1:8780/``)."""
    url = base_url.rstrip("/") + "/_sandbox/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Launched:
    """A sandbox process started by ``start``; its output is collected in ``output``."""

    http_port: int
    sftp_port: int
    state_dir: Path
    proc: subprocess.Popen[str]
    ready_line: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop this process (by its PID only) and return its exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return int(self.proc.returncode)


def start(
    http_port: int,
    sftp_port: int,
    state_dir: Path,
    *,
    import_delay: float | None = None,
    extra: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Launched:
    """Start a sandbox and block until it prints its ready line (no fixed sleep).

    Raises RuntimeError, with the process's output, when it exits or stays silent past ``timeout``.
    """
    cmd = command(http_port, sftp_port, state_dir, import_delay=import_delay, extra=extra)
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
    )
    launched = Launched(http_port, sftp_port, state_dir, proc)
    ready = threading.Event()

    def pump() -> None:
        # Keep draining the pipe for the process's whole life so that it can never block on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            launched.output.append(line)
            if is_ready_line(line):
                launched.ready_line = line.strip()
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.02):
        if proc.poll() is not None or time.monotonic() > deadline:
            launched.stop(signal.SIGKILL)
            raise RuntimeError("mc_sandbox did not start:\n" + "".join(launched.output))
    return launched
