"""The embedded Apache Kafka broker (single node, KRaft) and the Kafka command-line tools.

The jars come from Maven Central through the small pom in ``broker/`` (resolved once, then cached in
``broker/lib``); the JVM runs them directly, so no Kafka distribution is downloaded or installed. Used by
``python -m stream_app broker``, ``python -m stream_app dev`` and the test fixtures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar

from stream_app.settings import PROJECT_ROOT, Settings

BROKER_DIR = PROJECT_ROOT / "broker"
LIB_DIR = BROKER_DIR / "lib"
POM = BROKER_DIR / "pom.xml"
MARKER = LIB_DIR / ".resolved"
SERVER_TEMPLATE = BROKER_DIR / "server.properties.template"
SERVER_LOG4J = BROKER_DIR / "log4j2.xml"
TOOLS_LOG4J = BROKER_DIR / "tools-log4j2.xml"

# `kafka-*` command -> main class in Kafka 4.x (the 3.x kafka.tools.* Scala classes are gone).
TOOLS: dict[str, str] = {
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-configs": "kafka.admin.ConfigCommand",
}

BROKER_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    # A broker that ran out of heap is useless; dying makes the supervisor notice at once.
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# The tools are short-lived: a small heap and the serial collector start measurably faster.
TOOL_JVM_OPTS: tuple[str, ...] = (
    "-Xms32m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    # The console tools must pass UTF-8 through whatever locale the terminal has.
    "-Dfile.encoding=UTF-8",
    "-Dsun.stdout.encoding=UTF-8",
    "-Dsun.stderr.encoding=UTF-8",
)

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# A "dynamic quorum" data dir (formatted with --standalone) carries its voter set in this bootstrap
# snapshot; such a dir must be started with controller.quorum.bootstrap.servers, not static voters.
DYNAMIC_QUORUM_SNAPSHOT = Path("__cluster_metadata-0") / "00000000000000000000-0000000000.checkpoint"

T = TypeVar("T")


class BrokerError(RuntimeError):
    """The embedded broker or its tooling could not do what was asked; the message says why."""


# --------------------------------------------------------------------------------------------- jars


def kafka_version(pom: Path = POM) -> str:
    """The Apache Kafka version pinned in broker/pom.xml."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def _pom_fingerprint(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _jars_current(lib: Path, version: str, fingerprint: str) -> bool:
    marker = lib / MARKER.name
    if not marker.is_file() or not (lib / f"kafka_2.13-{version}.jar").is_file():
        return False
    return marker.read_text().split() == [f"kafka.version={version}", f"pom.sha256={fingerprint}"]


def java_executable() -> str:
    """The `java` to run: $JAVA_HOME/bin/java when set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError(
            "java not found: the embedded broker needs a Java 17+ runtime on PATH or in JAVA_HOME "
            "(Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless)"
        )
    return found


def ensure_jars() -> Path:
    """Resolve the pinned Kafka jars into broker/lib with Maven, once; returns broker/lib.

    Cached by a marker holding the pom's version and hash, so editing the pom re-resolves. Resolution
    goes to a scratch directory that replaces lib/ only when complete: an interrupted run, or a version
    bump, never leaves a half-filled or mixed-version classpath behind.
    """
    version, fingerprint = kafka_version(), _pom_fingerprint(POM)
    if _jars_current(LIB_DIR, version, fingerprint):
        return LIB_DIR
    java_executable()  # fail on a missing JVM before spending time on Maven
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            f"mvn not found: it resolves Apache Kafka {version} from Maven Central into {LIB_DIR} "
            "on first use (Debian/Ubuntu: apt-get install -y maven)"
        )
    # Two processes (say `make run` and `make test`) may get here together; one resolves, the other waits.
    with open(BROKER_DIR / ".lib.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _jars_current(LIB_DIR, version, fingerprint):
            return LIB_DIR
        print(
            f"resolving Apache Kafka {version} jars with Maven into {LIB_DIR} (first run only)",
            file=sys.stderr,
        )
        scratch = BROKER_DIR / "lib.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={scratch}",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(cmd, cwd=BROKER_DIR, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (scratch / f"kafka_2.13-{version}.jar").is_file():
            output = (done.stdout + done.stderr).strip().splitlines()[-40:]
            raise BrokerError(f"`{shlex.join(cmd)}` failed ({done.returncode}):\n" + "\n".join(output))
        (scratch / MARKER.name).write_text(f"kafka.version={version}\npom.sha256={fingerprint}\n")
        shutil.rmtree(LIB_DIR, ignore_errors=True)
        scratch.rename(LIB_DIR)
    return LIB_DIR


def classpath() -> str:
    # A single `dir/*` entry: the JVM expands it itself, so the command line stays short.
    return f"{LIB_DIR}/*"


# --------------------------------------------------------------------------------------- processes

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


def free_port(host: str = "127.0.0.1") -> int:
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


def _port_bindable(host: str, port: int) -> bool:
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
        if m and int(m.group(1)) != self.port and _port_bindable(self.host, int(m.group(1))):
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


# --------------------------------------------------------------------------------------- commands


def ready_line(broker: EmbeddedKafka) -> str:
    return (
        f"broker ready at {broker.bootstrap} (Apache Kafka {broker.version}, KRaft), "
        f"data in {broker.data_dir}"
    )


def main(argv: Sequence[str]) -> int:
    """`python -m stream_app broker`: the embedded broker in the foreground until SIGINT/SIGTERM."""
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


def tool_command(name: str, args: Sequence[str]) -> list[str]:
    """The java command line of one Kafka CLI tool (after ensure_jars)."""
    main_class = TOOLS.get(name)
    if main_class is None:
        raise BrokerError(f"unknown tool {name!r}; known: {', '.join(sorted(TOOLS))}")
    extra = shlex.split(os.environ.get("KAFKA_OPTS", ""))
    return [
        java_executable(),
        *TOOL_JVM_OPTS,
        *extra,
        f"-Dlog4j2.configurationFile={TOOLS_LOG4J}",
        "-cp",
        classpath(),
        main_class,
        *args,
    ]


def run_tool(name: str, args: Sequence[str]) -> int:
    """`python -m stream_app kafka-...`: exec the Kafka tool in place of this process.

    exec rather than a child: stdin, stdout, exit code and Ctrl-C then behave exactly as with Kafka's
    own bin/ scripts. Returns only on error.
    """
    try:
        ensure_jars()
        cmd = tool_command(name, args)
    except BrokerError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 127  # not reached: execv returns only by raising
