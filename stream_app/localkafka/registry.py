"""A real schema registry beside the embedded broker: Apicurio Registry, in-memory storage, with its
Confluent-compatible API at `/apis/ccompat/v7` (what `SCHEMA_REGISTRY_URL` points at).

Apicurio publishes the registry to Maven Central as a Quarkus application jar, not a runnable one:
``registry/pom.xml`` has the Quarkus Maven plugin build it into a runner jar and its lib/, once, into
``registry/app`` (the pom says which release and why). Like the broker's jars, nothing is downloaded
but through Maven, and a changed pom builds again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import urlparse

import httpx

from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import java_executable
from stream_app.localkafka.process import STOP_TIMEOUT, port_bindable, spawn, stop_process
from stream_app.settings import PROJECT_ROOT

REGISTRY_DIR = PROJECT_ROOT / "registry"
POM = REGISTRY_DIR / "pom.xml"
APP_DIR = REGISTRY_DIR / "app"
RUNNER = "schema-registry-1.0-runner.jar"
MARKER = ".built"
DEFAULT_PORT = 8781
API_PATH = "/apis/ccompat/v7"
READY_TIMEOUT = 120.0
# Maven resolves ~200 MB and Quarkus augments the registry (a minute or two on the first run).
BUILD_TIMEOUT = 1200.0

# A registry holds a few schemas: a small heap; C1 only starts Quarkus faster.
REGISTRY_JVM_OPTS: tuple[str, ...] = (
    "-Xms32m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dfile.encoding=UTF-8",
)


def apicurio_version(pom: Path = POM) -> str:
    """The Apicurio Registry release registry/pom.xml pins."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:apicurio.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <apicurio.version> property")
    return (node.text or "").strip()


def _fingerprint(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _built(app: Path, fingerprint: str) -> bool:
    marker = app / MARKER
    return (app / RUNNER).is_file() and marker.is_file() and marker.read_text().strip() == fingerprint


def ensure_registry() -> Path:
    """Build the registry with Maven into registry/app, once; returns its runner jar.

    Built in a scratch directory that replaces app/ only when complete, under a lock (two test runs
    may get here together); a changed pom builds again."""
    fingerprint = _fingerprint(POM)
    if _built(APP_DIR, fingerprint):
        return APP_DIR / RUNNER
    java_executable()
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            "mvn not found: it builds Apicurio Registry from Maven Central into "
            f"{APP_DIR} on first use (Debian/Ubuntu: apt-get install -y maven)"
        )
    with open(REGISTRY_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _built(APP_DIR, fingerprint):
            return APP_DIR / RUNNER
        print(
            f"building Apicurio Registry {apicurio_version()} with Maven into {APP_DIR} (first run only)",
            file=sys.stderr,
        )
        scratch = REGISTRY_DIR / "app.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "package",
            "-DskipTests",
            f"-Dregistry.build.directory={scratch}",
        ]
        try:
            done = subprocess.run(
                cmd, cwd=REGISTRY_DIR, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise BrokerError(f"`{shlex.join(cmd)}` took longer than {BUILD_TIMEOUT:.0f} s") from None
        if done.returncode != 0 or not (scratch / RUNNER).is_file():
            output = (done.stdout + done.stderr).strip().splitlines()[-40:]
            raise BrokerError(f"`{shlex.join(cmd)}` failed ({done.returncode}):\n" + "\n".join(output))
        (scratch / MARKER).write_text(fingerprint + "\n")
        shutil.rmtree(APP_DIR, ignore_errors=True)
        scratch.rename(APP_DIR)
    return APP_DIR / RUNNER


def registry_answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Confluent-compatible registry answers at `api_url` (its list of schema types)."""
    try:
        return httpx.get(f"{api_url}/schemas/types", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class LocalRegistry:
    """One Apicurio Registry JVM on host:port, in-memory (its schemas go with it), logging to
    `log_dir`/registry.log. Stopped by its PID; it dies with this process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        log_dir: Path | None = None,
        *,
        new_process_group: bool = False,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.log_dir = log_dir or PROJECT_ROOT / ".state" / "registry"
        self.new_process_group = new_process_group
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what SCHEMA_REGISTRY_URL is set to."""
        return self.base_url + API_PATH

    @property
    def log_path(self) -> Path:
        return self.log_dir / "registry.log"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BrokerError("the registry is not running")
        return self.proc.pid

    @property
    def version(self) -> str:
        return apicurio_version()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, *, wait: bool = True, abort: Callable[[], bool] | None = None) -> LocalRegistry:
        """Start the JVM and (by default) block until the registry answers its API."""
        if self.running():
            return self
        if not port_bindable(self.host, self.port):
            raise BrokerError(f"{self.host}:{self.port} is in use: another registry, or another server")
        java = java_executable()
        runner = ensure_registry()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._out = self.log_path.open("ab")
        cmd = [
            java,
            *REGISTRY_JVM_OPTS,
            f"-Dquarkus.http.host={self.host}",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(runner),
        ]
        self.proc = spawn(
            cmd,
            cwd=self.log_dir,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            new_process_group=self.new_process_group,
            death_signal=signal.SIGKILL,  # in-memory: nothing to lose, and it must not outlive us
        )
        if wait:
            try:
                self.wait_ready(abort=abort)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout: float | None = None, abort: Callable[[], bool] | None = None) -> None:
        budget = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        while True:
            if self.proc is None:
                raise BrokerError("the registry was never started")
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"the registry exited with code {self.proc.returncode} during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if abort is not None and abort():
                raise BrokerError("startup aborted")
            if registry_answers(self.url):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the registry at {self.url} did not answer within {budget:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the JVM by PID, wait up to `timeout`, then SIGKILL; returns its exit code."""
        rc = None
        if self.proc is not None:
            rc = stop_process(self.proc, timeout)
        if self._out is not None:
            self._out.close()
            self._out = None
        return rc


def host_port(url: str) -> tuple[str, int]:
    """Host and port of a registry URL (`http://127.0.0.1:8781/apis/ccompat/v7`); 127.0.0.1:8781
    for an empty one."""
    if not url:
        return "127.0.0.1", DEFAULT_PORT
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or DEFAULT_PORT
