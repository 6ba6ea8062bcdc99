"""The processes a bench run starts (broker, sandbox, workers, the Faust agent) and stops, by PID."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mc_sandbox import launch as sandbox_launch
from stream_app.cli import launch as worker_launch
from stream_app.cli.launch import WorkerProcess
from stream_app.localkafka import EmbeddedKafka, free_port

REPO = Path(__file__).resolve().parent.parent


class Stack:
    """Broker + sandbox + workers of one bench run; `close()` stops whatever was started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.kafka: EmbeddedKafka | None = None
        self.sandbox: sandbox_launch.Launched | None = None
        self.workers: list[WorkerProcess] = []

    def start_broker(self) -> EmbeddedKafka:
        self.kafka = EmbeddedKafka("127.0.0.1", free_port(), self.root / "kafka")
        self.kafka.start()
        return self.kafka

    def start_sandbox(
        self, import_delay: float, message_cap: int, extra: tuple[str, ...] = ()
    ) -> sandbox_launch.Launched:
        """`python -m mc_sandbox` on free ports, returned once it serves."""
        http_port, sftp_port = free_port(), free_port()
        while sftp_port == http_port:
            sftp_port = free_port()
        self.sandbox = sandbox_launch.start(
            http_port,
            sftp_port,
            self.root / "sandbox",
            import_delay=import_delay,
            extra=("--message-cap", str(message_cap), *extra),
            cwd=REPO,
        )
        return self.sandbox

    def start_worker(self, app_id: str, profile: Path | None = None, **extra_env: str) -> WorkerProcess:
        assert self.sandbox is not None
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
            # The bench measures the flow, not the night: MC would hold every SMS in quiet hours.
            "SMS_QUIET_HOURS": "",
            # The worker's own MC pace off (MC_MAX_REQUESTS_PER_SECOND, default 20/s): the phases
            # measure the flow against a sandbox that takes any rate; a phase that keeps MC's budget
            # sets its own.
            "MC_MAX_REQUESTS_PER_SECOND": os.environ.get("MC_MAX_REQUESTS_PER_SECOND", "0"),
            **extra_env,
        }
        module_args: tuple[str, ...] = worker_launch.WORKER_ARGS
        if profile is not None:  # bench.profile_worker: pyinstrument for a bounded time, on a trigger
            module_args = ("bench.profile_worker",)
            env["BENCH_PROFILE_OUT"] = str(profile)
        return self._start(app_id, "workers", "worker", module_args, env)

    def start_faust_agent(self, app_id: str, source: str, sink: str) -> WorkerProcess:
        """`bench.faust_agent`: the one-agent Faust app the intake is compared with."""
        return self._start(
            app_id, "faust-agent", "agent", ("bench.faust_agent",), {"SOURCE": source, "SINK": sink}
        )

    def _start(
        self, app_id: str, folder: str, name: str, module_args: tuple[str, ...], env: dict[str, str]
    ) -> WorkerProcess:
        """`python -m <module_args>` with its own web port and state folder, its output in a log file."""
        assert self.kafka is not None
        web_port = free_port()
        state = self.root / folder
        full_env = {
            **os.environ,
            "APP_ID": app_id,
            "BROKER_URL": self.kafka.url,
            "WEB_PORT": str(web_port),
            "STATE_DIR": str(state),
            **env,
        }
        worker = worker_launch.start(
            full_env, state, web_port, module_args=module_args, log_name=name, cwd=REPO
        )
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
