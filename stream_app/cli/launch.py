"""Starting a ``python -m stream_app worker`` process from elsewhere (the test fixtures, the bench).

``start(env, state_dir, web_port)`` spawns it with its output in a log file under ``state_dir``;
``WorkerProcess.wait_ready()`` blocks until its ``/health/`` says 200 (partitions owned, tables
restored); ``stop()`` and ``kill()`` end it by its PID. The caller builds the environment (broker,
MC, ``WEB_PORT``, ``STATE_DIR``, ...): this module only starts, awaits and stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from stream_app.localkafka import stop_process
from stream_app.settings import PROJECT_ROOT

READY_TIMEOUT = 90.0
WORKER_ARGS = ("stream_app", "worker")


@dataclass
class WorkerProcess:
    web_port: int
    state_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until the worker owns partitions and restored its tables."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.web_url}health/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start(
    env: Mapping[str, str],
    state_dir: Path,
    web_port: int,
    *,
    module_args: Sequence[str] = WORKER_ARGS,
    log_name: str = "worker",
    cwd: Path = PROJECT_ROOT,
) -> WorkerProcess:
    """`python -m <module_args>` (a worker by default) with `env`; its output in `<log_name>-<port>.log`.

    `web_port` is where `wait_ready` looks: the one `env` gives the process as `WEB_PORT`.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"{log_name}-{web_port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )
    return WorkerProcess(web_port, state_dir, log_path, proc)
