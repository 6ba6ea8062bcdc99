"""`python -m stream_app dev` (what `make run` runs): broker, sandbox and one worker in the foreground.

Starts, in order, the embedded Kafka broker, the Marketing Cloud sandbox, the topics and a worker, each
awaited until it really answers; prints where to look and a command line that produces an event; then
supervises. Ctrl-C (SIGINT) or SIGTERM stops worker, sandbox and broker in that order, each by its PID,
and exits 0. If any of them dies on its own, the rest are stopped and the exit code is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlparse

import httpx

from stream_app.contract.examples import drawn_example
from stream_app.localkafka import (
    BrokerError,
    EmbeddedKafka,
    kafka_answers,
    kafka_version,
    port_accepts,
    spawn,
    stop_process,
)
from stream_app.settings import PROJECT_ROOT, Settings

SANDBOX_READY_TIMEOUT = 30.0
TOPICS_TIMEOUT = 60.0
# A fresh worker joins the group, gets partitions and recovers its tables; the first run also
# creates the changelog topics. Tens of seconds on a loaded machine is normal.
WORKER_READY_TIMEOUT = 120.0
STOP_TIMEOUTS = {"worker": 30.0, "sandbox": 10.0, "broker": 20.0}
TW = timezone(timedelta(hours=8))


class DevStackError(RuntimeError):
    """The stack could not start; the message says which part and why."""


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived: stop everything and exit 0."""


class ChildExited(DevStackError):
    def __init__(self, name: str, code: int, tail: str) -> None:
        super().__init__(f"{name} exited unexpectedly with code {code}")
        self.name = name
        self.code = code
        self.tail = tail


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[Any]
    stop: Callable[[], int | None]
    log_path: Path | None = None

    def tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


def sample_event(event_id: str, packet_id: str = "RP-0001") -> dict[str, Any]:
    """design.md's example packet.drawn event, drawn now."""
    occurred_at = datetime.now(TW).replace(microsecond=0).isoformat()
    return drawn_example(event_id=event_id, packet_id=packet_id, occurred_at=occurred_at)


def producer_lines(bootstrap: str, event: dict[str, Any], bin_dir: str = "bin") -> tuple[str, str]:
    """Ready-to-paste shell lines producing `event` to packet.drawn, keyed by packet_id.

    The first uses the console producer of the pinned Kafka jars, the second kcat; both read
    `key|json` lines. Single-quoted, so the JSON must not contain a single quote (the sample doesn't).
    """
    value = json.dumps(event, ensure_ascii=False)
    record = shlex.quote(f"{event['packet_id']}|{value}")
    console = (
        f"echo {record} | {bin_dir}/kafka-console-producer --bootstrap-server {bootstrap} "
        "--topic packet.drawn --property parse.key=true --property key.separator='|'"
    )
    kcat = f"echo {record} | kcat -P -b {bootstrap} -t packet.drawn -K'|'"
    return console, kcat


def _shown(path: Path) -> str:
    """A path as the user would type it from where they started us."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def _http_answers(url: str) -> int | None:
    """The HTTP status at `url`, or None when nothing answers there."""
    try:
        return httpx.get(url, timeout=2.0, trust_env=False).status_code
    except httpx.HTTPError:
        return None


class DevStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.logs_dir = self.state_dir / "logs"
        self.children: list[Child] = []
        self.notes: list[str] = []
        self.signals: list[int] = []
        self.broker: EmbeddedKafka | None = None
        self.sandbox_url = (
            settings.mc_auth_url if settings.mc_auth_url.endswith("/") else settings.mc_auth_url + "/"
        )
        self.web_url = f"http://{settings.web_host}:{settings.web_port}/"
        self.env: dict[str, str] = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.event_id = f"d-demo-{int(time.time())}"
        self._outputs: list[IO[bytes]] = []

    # -- waiting

    def check(self) -> None:
        """Raise if a signal arrived or a child died; called between every step and wait."""
        if self.signals:
            raise Interrupted
        for child in self.children:
            if child.proc.poll() is not None:
                raise ChildExited(child.name, int(child.proc.returncode), child.tail())

    def await_condition(self, what: str, ready: Callable[[], bool], timeout: float, log: Path | None) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                tail = ""
                if log is not None and log.is_file():
                    tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                raise DevStackError(f"{what} not ready within {timeout:.0f} s{tail}")
            time.sleep(0.2)

    def _log(self, name: str) -> tuple[Path, IO[bytes]]:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        path = self.logs_dir / f"{name}.log"
        out = path.open("wb")
        self._outputs.append(out)
        return path, out

    def _spawn(self, name: str, cmd: Sequence[str]) -> Child:
        path, out = self._log(name)
        # Own process group: a terminal's Ctrl-C reaches only this supervisor, which then stops the
        # children in order (the worker must commit before the broker goes away).
        proc = spawn(
            cmd, cwd=PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, new_process_group=True
        )
        child = Child(name, proc, lambda: stop_process(proc, STOP_TIMEOUTS.get(name, 20.0)), path)
        self.children.append(child)
        return child

    # -- the parts

    def start_broker(self) -> None:
        host, port = self.settings.broker_host_port
        if kafka_answers(host, port):
            self.notes.append(f"  broker    {host}:{port}  (already running: used as is, not stopped)")
            return
        if port_accepts(host, port):
            raise DevStackError(f"{host}:{port} is taken by something that does not answer as Kafka")
        broker = EmbeddedKafka(host, port, self.state_dir / "kafka", new_process_group=True)
        print(f"starting the broker on {broker.bootstrap} ...", flush=True)
        try:
            broker.start(abort=lambda: bool(self.signals))
        except BrokerError:
            if self.signals:
                raise Interrupted from None
            raise
        self.broker = broker
        assert broker.proc is not None
        self.children.append(Child("broker", broker.proc, broker.stop, broker.log_path))
        self.notes.append(
            f"  broker    {broker.bootstrap}  (Apache Kafka {broker.version}, KRaft; "
            f"log {_shown(broker.log_path)})"
        )

    def start_sandbox(self) -> None:
        # The sandbox's own launcher (one command line and one notion of ready, shared with the
        # tests and the bench); imported here: `stream_app` itself never depends on `mc_sandbox`.
        from mc_sandbox import launch

        auth = urlparse(self.sandbox_url)
        host, http_port = auth.hostname or "127.0.0.1", auth.port or 80
        sftp_port = self.settings.mc_sftp_port
        if launch.answers(self.sandbox_url):
            self.notes.append(f"  sandbox   {self.sandbox_url}  (already running: used as is, not stopped)")
            return
        if port_accepts(host, http_port) or port_accepts(host, sftp_port):
            raise DevStackError(f"sandbox ports {host}:{http_port}/{sftp_port} are taken by something else")
        sandbox_state = self.state_dir / "mc_sandbox"
        # The worker must trust the host key this sandbox writes, wherever STATE_DIR points.
        self.env.setdefault("MC_SFTP_KNOWN_HOSTS", str(sandbox_state / "known_hosts"))
        print(f"starting the sandbox on {self.sandbox_url} ...", flush=True)
        command = launch.command(http_port, sftp_port, sandbox_state, import_delay=1, python=sys.executable)
        child = self._spawn("sandbox", command)
        log = child.log_path
        assert log is not None

        def ready() -> bool:
            lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
            return any(launch.is_ready_line(line) for line in lines) or launch.answers(self.sandbox_url)

        self.await_condition("the sandbox", ready, SANDBOX_READY_TIMEOUT, log)
        self.notes.append(f"  sandbox   {self.sandbox_url}  sftp {host}:{sftp_port}  (log {_shown(log)})")

    def create_topics(self) -> None:
        child = self._spawn("create-topics", [sys.executable, "-m", "stream_app", "create-topics"])
        deadline = time.monotonic() + TOPICS_TIMEOUT
        # Not a long-lived child: it is expected to exit, so it is waited for here, not supervised.
        self.children.remove(child)
        while child.proc.poll() is None:
            try:
                self.check()
            except BaseException:
                stop_process(child.proc, 5)
                raise
            if time.monotonic() > deadline:
                stop_process(child.proc, 5)
                raise DevStackError(
                    f"create-topics did not finish within {TOPICS_TIMEOUT:.0f} s\n{child.tail()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(0.2)
        if child.proc.returncode != 0:
            raise DevStackError(f"create-topics failed with code {child.proc.returncode}:\n{child.tail()}")
        print(f"topics ready ({_shown(child.log_path or self.logs_dir)})", flush=True)

    def start_worker(self) -> None:
        host, port = self.settings.web_host, self.settings.web_port
        if port_accepts(host, port):
            raise DevStackError(f"WEB_PORT {host}:{port} is taken (another worker running?); set WEB_PORT")
        print(f"starting a worker (web {self.web_url}) ...", flush=True)
        child = self._spawn("worker", [sys.executable, "-m", "stream_app", "worker"])

        def ready() -> bool:
            # /health/ says 200 only once partitions are assigned and tables recovered.
            return _http_answers(f"{self.web_url}health/") == 200

        self.await_condition("the worker", ready, WORKER_READY_TIMEOUT, child.log_path)
        self.notes.append(f"  worker    {self.web_url}  (log {_shown(child.log_path or self.logs_dir)})")

    def start(self) -> None:
        for step in (self.start_broker, self.start_sandbox, self.create_topics, self.start_worker):
            self.check()
            step()

    def banner(self) -> str:
        bootstrap = self.settings.bootstrap_servers
        bin_dir = "bin" if Path.cwd().resolve() == PROJECT_ROOT else str(PROJECT_ROOT / "bin")
        console, kcat = producer_lines(bootstrap, sample_event(self.event_id), bin_dir)
        return "\n".join(
            [
                "",
                "stream_app dev stack is up; Ctrl-C stops all of it.",
                "",
                *self.notes,
                "",
                f"  dashboard      {self.web_url}dashboard/",
                f"  event trace    {self.web_url}events/{self.event_id}/",
                f"  metrics        {self.web_url}metrics",
                f"  MC messages    {self.sandbox_url}_sandbox/messages",
                "",
                "produce one packet.drawn event (Apache Kafka console producer):",
                "",
                f"  {console}",
                "",
                "or with kcat:",
                "",
                f"  {kcat}",
                "",
            ]
        )

    def supervise(self) -> None:
        """Return on a signal; raise ChildExited when a child dies on its own."""
        while True:
            try:
                self.check()
            except Interrupted:
                return
            if self.children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.children[-1].proc.wait(0.2)
            else:
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the children newest first (worker, sandbox, broker), each by PID, waiting for each."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                print(f"stopping {child.name} (pid {child.proc.pid}) ...", flush=True)
            started = time.monotonic()
            code = child.stop()
            if code is not None and time.monotonic() - started > 0.05:
                print(f"  {child.name} stopped in {time.monotonic() - started:.1f} s", flush=True)
        self.children.clear()
        for out in self._outputs:
            out.close()
        self._outputs.clear()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_app dev",
        description="Embedded broker + MC sandbox + one worker in the foreground (what `make run` runs).",
    )
    parser.parse_args(list(argv))
    stack = DevStack(Settings())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.signals.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    print(f"stream_app dev: Apache Kafka {kafka_version()}, state in {_shown(stack.state_dir)}", flush=True)
    try:
        stack.start()
        print(stack.banner(), flush=True)
        stack.supervise()
        print("\nshutting down ...", flush=True)
        return 0
    except Interrupted:
        print("\ninterrupted while starting; shutting down ...", flush=True)
        return 0
    except ChildExited as e:
        print(f"\n{e}; last lines of its log:\n{e.tail}\nstopping the rest ...", file=sys.stderr, flush=True)
        return 1
    except (DevStackError, BrokerError) as e:
        print(f"\ndev stack failed: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        print("all stopped.", flush=True)
