"""The processes a bench run starts (broker, sandbox, worker) and stops again, always by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from stream_app.localkafka import EmbeddedKafka, free_port
from tests.fixtures.sandbox import SandboxProcess, start_sandbox
from tests.fixtures.worker import WorkerProcess

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Worker(WorkerProcess):
    """A worker subprocess (the test suite's, with the app id the bench reads offsets by)."""

    app_id: str = ""


@dataclass
class RssSampler:
    """Samples one process's RSS every `interval` seconds, labelled with the current phase."""

    pid: int
    interval: float = 0.2
    phase: str = "start"
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        proc = psutil.Process(self.pid)

        def run() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.samples.append((time.monotonic(), self.phase, proc.memory_info().rss))
                except psutil.Error:
                    return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def peak_mb(self, *phases: str) -> float:
        values = [rss for _, phase, rss in self.samples if not phases or phase in phases]
        return max(values, default=0) / 2**20

    def last_mb(self, phase: str) -> float:
        values = [rss for _, p, rss in self.samples if p == phase]
        return (values[-1] if values else 0) / 2**20


class Stack:
    """Broker + sandbox + workers of one bench run; `close()` stops whatever was started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kafka: EmbeddedKafka | None = None
        self.sandbox: SandboxProcess | None = None
        self.workers: list[Worker] = []

    def start_broker(self) -> EmbeddedKafka:
        self.kafka = EmbeddedKafka("127.0.0.1", free_port(), self.root / "kafka")
        self.kafka.start()
        return self.kafka

    def start_sandbox(self, import_delay: float, message_cap: int) -> SandboxProcess:
        self.sandbox = start_sandbox(
            self.root / "sandbox", "--message-cap", str(message_cap), import_delay=import_delay
        )
        return self.sandbox

    def start_worker(self, app_id: str, profile: Path | None = None, **extra_env: str) -> Worker:
        assert self.kafka is not None and self.sandbox is not None
        env = {
            "PYTHONUNBUFFERED": "1",
            "MC_AUTH_URL": self.sandbox.http_url,
            "MC_SFTP_PORT": str(self.sandbox.sftp_port),
            "MC_SFTP_KNOWN_HOSTS": str(self.sandbox.known_hosts),
            "BATCH_WINDOW_SECONDS": os.environ.get("BATCH_WINDOW_SECONDS", "1"),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
            # The production table store: state on disk behind an LRU, not all in the heap.
            "TABLE_STORE": os.environ.get("TABLE_STORE", "rocksdb://"),
            "LOG_FORMAT": "text",
            **extra_env,
        }
        module = "stream_app"
        if profile is not None:  # bench.profile_worker: pyinstrument for a bounded time, on a trigger
            module = "bench.profile_worker"
            env["BENCH_PROFILE_OUT"] = str(profile)
        args = [] if profile is not None else ["worker"]
        return self._start(app_id, "workers", "worker", [module, *args], env)

    def start_faust_agent(self, app_id: str, source: str, sink: str) -> Worker:
        """`bench.faust_agent`: the one-agent Faust app the intake is compared with."""
        return self._start(
            app_id, "faust-agent", "agent", ["bench.faust_agent"], {"SOURCE": source, "SINK": sink}
        )

    def _start(
        self, app_id: str, folder: str, name: str, module_args: list[str], env: dict[str, str]
    ) -> Worker:
        """`python -m <module_args>` with its own web port and state folder, its output in a log file."""
        assert self.kafka is not None
        web_port = free_port()
        state = self.root / folder
        state.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            "APP_ID": app_id,
            "BROKER_URL": self.kafka.url,
            "WEB_PORT": str(web_port),
            "STATE_DIR": str(state),
            **env,
        }
        log_path = state / f"{name}-{web_port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *module_args],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        worker = Worker(web_port, state, log_path, proc, app_id)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.stop()
            except Exception as exc:  # keep stopping the rest
                print(f"could not stop worker {worker.pid}: {exc}", file=sys.stderr)
        if self.sandbox is not None:
            try:
                self.sandbox.stop()
            except Exception as exc:
                print(f"could not stop sandbox {self.sandbox.pid}: {exc}", file=sys.stderr)
        if self.kafka is not None:
            self.kafka.stop()
