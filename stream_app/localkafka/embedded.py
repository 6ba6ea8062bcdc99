"""The embedded Apache Kafka: one KRaft node (broker and controller in one JVM) on a loopback address.

Also the readiness checks every caller of a local broker needs: "an open port" is not "a broker that
answers metadata requests".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import ipaddress
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import TracebackType
from typing import IO

from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import (
    BROKER_DIR,
    TOOL_JVM_OPTS,
    classpath,
    ensure_jars,
    java_executable,
    kafka_version,
)
from stream_app.localkafka.process import (
    STOP_TIMEOUT,
    free_port,
    port_accepts,
    port_bindable,
    run_blocking,
    spawn,
    stop_process,
)
from stream_app.settings import Settings

SERVER_TEMPLATE = BROKER_DIR / "server.properties.template"
SERVER_LOG4J = BROKER_DIR / "log4j2.xml"

BROKER_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    # A broker that ran out of heap is useless; dying makes the supervisor notice at once.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

READY_TIMEOUT = 60.0
# A "dynamic quorum" data dir (formatted with --standalone) carries its voter set in this bootstrap
# snapshot; such a dir must be started with controller.quorum.bootstrap.servers, not static voters.
DYNAMIC_QUORUM_SNAPSHOT = Path("__cluster_metadata-0") / "00000000000000000000-0000000000.checkpoint"


# -------------------------------------------------------------------------------------- readiness


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    brokers: list[tuple[str, int]]


async def describe_cluster(bootstrap: str, timeout: float = 3.0) -> ClusterInfo | None:
    """Ask `bootstrap` for cluster metadata; None when no Kafka broker answers there (yet)."""
    # Imported here: the `kafka-*` tool commands exec Java at once and should not pay for aiokafka.
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            meta = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    brokers = [(str(b["host"]), int(b["port"])) for b in meta.get("brokers", [])]
    return ClusterInfo(meta.get("cluster_id"), brokers) if brokers else None


def kafka_answers(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when a Kafka broker at host:port answers a metadata request (an open port is not enough)."""
    if not port_accepts(host, port):
        return False  # checked first: aiokafka logs an ERROR for every refused connection
    info = run_blocking(lambda: describe_cluster(f"{host}:{port}", timeout))
    return info is not None


# ------------------------------------------------------------------------------------------ broker


def _read_properties(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "!")) and "=" in line:
                key, value = line.split("=", 1)
                props[key.strip()] = value.strip()
    return props


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid format)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids these too: they read as options on a command line
            return text


def _tail(path: Path, lines: int) -> list[str]:
    if not path.is_file():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64 * 1024))
        return f.read().decode("utf-8", "replace").splitlines()[-lines:]


class EmbeddedKafka:
    """One Apache Kafka node (broker and KRaft controller in one JVM) on a loopback address.

    Layout of `data_dir`: `server.properties` (rewritten on every start), `data/` (the log dir;
    formatted on first start, its meta.properties keeps the cluster id), `logs/server.log` (log4j) and
    `logs/jvm.out` (the JVM's own stdout/stderr, e.g. a crash before logging starts).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        data_dir: Path | None = None,
        *,
        controller_port: int | None = None,
        new_process_group: bool = False,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = (data_dir or Settings().state_dir / "kafka").resolve()
        self.controller_port = controller_port
        self.new_process_group = new_process_group
        self.ready_timeout = ready_timeout
        self.cluster_id: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None
        self._jvm_out: IO[bytes] | None = None

    # -- paths and addresses

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BrokerError("the broker is not running")
        return self.proc.pid

    @property
    def version(self) -> str:
        return kafka_version()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        out = _tail(self.log_path, lines)
        jvm = _tail(self.logs_dir / "jvm.out", 10)
        if jvm:
            out += ["--- jvm.out ---", *jvm]
        return "\n".join(out)

    # -- lifecycle

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, *, wait: bool = True, abort: Callable[[], bool] | None = None) -> EmbeddedKafka:
        """Start the JVM and (by default) block until the broker answers metadata requests."""
        if self.running():
            return self
        self._check_address()
        java = java_executable()
        ensure_jars()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._take_data_dir_lock()
        try:
            self._write_config()
            self._format_if_needed(java)
            self._jvm_out = (self.logs_dir / "jvm.out").open("ab")
            cmd = [
                java,
                *BROKER_JVM_OPTS,
                f"-Dlog4j2.configurationFile={SERVER_LOG4J}",
                f"-Dkafka.logs.dir={self.logs_dir}",
                "-cp",
                classpath(),
                "kafka.Kafka",
                str(self.server_properties),
            ]
            assert self._lock is not None
            self.proc = spawn(
                cmd,
                cwd=self.data_dir,
                stdout=self._jvm_out,
                stderr=subprocess.STDOUT,
                new_process_group=self.new_process_group,
                # Kafka recovers from a hard kill; a JVM that outlives its parent is worse.
                death_signal=signal.SIGKILL,
                # The JVM inherits the data-dir lock, so the lock lasts as long as the JVM does,
                # even if this Python process dies first.
                pass_fds=[self._lock.fileno()],
            )
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
        """Block until the broker answers a metadata request listing itself, or raise with its log."""
        budget = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while True:
            if self.proc is None:
                raise BrokerError("the broker was never started")
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self.proc.returncode} during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if abort is not None and abort():
                raise BrokerError("startup aborted")
            if port_accepts(self.host, self.port):
                info = run_blocking(lambda: describe_cluster(self.bootstrap, 2.0))
                if info is not None and (self.host, self.port) in info.brokers:
                    self.cluster_id = info.cluster_id
                    return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the broker at {self.bootstrap} did not answer metadata requests within {budget:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            # Poll the process rather than sleep: an early crash is reported at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the JVM by PID, wait up to `timeout` for a clean shutdown, then SIGKILL."""
        rc = None
        try:
            if self.proc is not None:
                rc = stop_process(self.proc, timeout)
        finally:
            self._release()
        return rc

    # -- internals

    def _check_address(self) -> None:
        try:
            addr = ipaddress.ip_address(socket.gethostbyname(self.host))
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot resolve broker host {self.host!r}: {e}") from e
        if not addr.is_loopback:
            raise BrokerError(
                f"the embedded broker listens on loopback addresses only, not {self.host} ({addr}); "
                "point BROKER_URL at 127.0.0.1, or at a real Kafka cluster and do not start this one"
            )
        if port_accepts(self.host, self.port):
            raise BrokerError(f"{self.bootstrap} is already in use (another broker running?)")

    def _take_data_dir_lock(self) -> None:
        # Kafka locks its log dirs only once the broker half is starting; by then the controller half
        # has already written to the metadata log. Two JVMs on one dir corrupt the quorum state (seen:
        # a later SIGTERM hangs forever), so refuse the second one up front.
        lock = (self.data_dir / ".embedded.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            lock.close()
            raise BrokerError(
                f"{self.data_dir} is in use by another embedded broker ({holder or 'unknown'}); "
                "stop it or pick another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} at {self.bootstrap}\n")
        lock.flush()
        self._lock = lock

    def _release(self) -> None:
        for f in (self._jvm_out, self._lock):
            if f is not None:
                f.close()
        self._jvm_out = self._lock = None

    def _pick_controller_port(self) -> int:
        if self.controller_port:
            return self.controller_port
        # Reuse the last run's port when free: nothing depends on it, but stable is easier to read.
        previous = _read_properties(self.server_properties).get("listeners", "")
        m = re.search(r"CONTROLLER://[^:,]+:(\d+)", previous)
        if m and int(m.group(1)) != self.port and port_bindable(self.host, int(m.group(1))):
            return int(m.group(1))
        while (port := free_port(self.host)) == self.port:
            pass
        return port

    def _write_config(self) -> None:
        meta = _read_properties(self.log_dir / "meta.properties")
        # An existing data dir keeps its identity: another node id would not match its metadata log.
        node_id = meta.get("node.id", "1")
        self.cluster_id = meta.get("cluster.id")
        self.controller_port = self._pick_controller_port()
        if (self.log_dir / DYNAMIC_QUORUM_SNAPSHOT).exists():
            quorum = f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}"
        else:
            quorum = f"controller.quorum.voters={node_id}@{self.host}:{self.controller_port}"
        text = Template(SERVER_TEMPLATE.read_text()).substitute(
            node_id=node_id,
            quorum_line=quorum,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.log_dir,
        )
        self.server_properties.write_text(text)

    def _format_if_needed(self, java: str) -> None:
        if (self.log_dir / "meta.properties").is_file():
            return
        self.cluster_id = new_cluster_id()
        # Static voters (no --standalone): the controller port may then change from one run to the next.
        cmd = [
            java,
            *TOOL_JVM_OPTS,
            f"-Dlog4j2.configurationFile={SERVER_LOG4J}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(self.server_properties),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.log_dir} failed:\n{done.stdout}{done.stderr}")
