"""A real schema registry beside the embedded broker: Apicurio Registry, in-memory storage, with its
Confluent-compatible API at `/apis/ccompat/v7` (what `SCHEMA_REGISTRY_URL` points at).

Apicurio publishes the registry to Maven Central as a Quarkus application jar, not a runnable one:
``registry/pom.xml`` has the Quarkus Maven plugin build it into a runner jar and its lib/, once, into
``registry/app`` (the pom says which release and why). Like the broker's jars, nothing is downloaded
but through Maven, and a changed pom builds again.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import httpx

from stream_app.localkafka.errors import BrokerError
from stream_app.localkafka.jars import (
    build_current,
    java_executable,
    maven_once,
    pom_fingerprint,
    pom_property,
)
from stream_app.localkafka.jvm import JvmChild
from stream_app.localkafka.process import port_bindable
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
    return pom_property(pom, "apicurio.version")


def _built(app: Path, fingerprint: str) -> bool:
    return build_current(app, RUNNER, MARKER, fingerprint)


def ensure_registry() -> Path:
    """Build the registry with Maven into registry/app, once; returns its runner jar (a changed pom
    builds again)."""
    app = maven_once(
        APP_DIR,
        pom=POM,
        goals=lambda out: ["package", "-DskipTests", f"-Dregistry.build.directory={out}"],
        product=RUNNER,
        marker=MARKER,
        stamp=pom_fingerprint(POM) + "\n",
        lock=REGISTRY_DIR / ".build.lock",
        doing=f"building Apicurio Registry {apicurio_version()}",
        timeout=BUILD_TIMEOUT,
    )
    return app / RUNNER


def registry_answers(api_url: str, timeout: float = 2.0) -> bool:
    """Whether a Confluent-compatible registry answers at `api_url` (its list of schema types)."""
    try:
        return httpx.get(f"{api_url}/schemas/types", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class LocalRegistry(JvmChild):
    """One Apicurio Registry JVM on host:port, in-memory (its schemas go with it), logging to
    `log_dir`/registry.log. Stopped by its PID; it dies with this process."""

    kind = "registry"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        log_dir: Path | None = None,
        *,
        new_process_group: bool = False,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(new_process_group=new_process_group, ready_timeout=ready_timeout)
        self.host = host
        self.port = port
        self.log_dir = log_dir or PROJECT_ROOT / ".state" / "registry"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what SCHEMA_REGISTRY_URL is set to."""
        return self.base_url + API_PATH

    @property
    def address(self) -> str:
        return self.url

    @property
    def log_path(self) -> Path:
        return self.log_dir / "registry.log"

    @property
    def version(self) -> str:
        return apicurio_version()

    # -- lifecycle (JvmChild's start, wait_ready, stop, kill)

    def _launch(self) -> None:
        if not port_bindable(self.host, self.port):
            raise BrokerError(f"{self.host}:{self.port} is in use: another registry, or another server")
        java = java_executable()
        runner = ensure_registry()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            *REGISTRY_JVM_OPTS,
            f"-Dquarkus.http.host={self.host}",
            f"-Dquarkus.http.port={self.port}",
            "-jar",
            str(runner),
        ]
        self._spawn(cmd, cwd=self.log_dir)

    def _ready(self) -> bool:
        return registry_answers(self.url)


def host_port(url: str) -> tuple[str, int]:
    """Host and port of a registry URL (`http://127.0.0.1:8781/apis/ccompat/v7`); 127.0.0.1:8781
    for an empty one."""
    if not url:
        return "127.0.0.1", DEFAULT_PORT
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or DEFAULT_PORT
