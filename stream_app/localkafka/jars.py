"""The pinned Apache Kafka jars (resolved from Maven Central through ``broker/pom.xml``) and the JVM.

No Kafka distribution is downloaded or installed: Maven copies the jars the pom pins into
``broker/lib`` once, and every broker or tool JVM runs them from there.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from stream_app.localkafka.errors import BrokerError
from stream_app.settings import PROJECT_ROOT

BROKER_DIR = PROJECT_ROOT / "broker"
LIB_DIR = BROKER_DIR / "lib"
POM = BROKER_DIR / "pom.xml"
MARKER = LIB_DIR / ".resolved"

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


def pom_property(pom: Path, name: str) -> str:
    """The `<name>` property of a Maven pom's `<properties>` (the versions the poms here pin)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find(f"m:properties/m:{name}", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <{name}> property")
    return (node.text or "").strip()


def kafka_version(pom: Path = POM) -> str:
    """The Apache Kafka version pinned in broker/pom.xml."""
    return pom_property(pom, "kafka.version")


def pom_fingerprint(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def build_current(target: Path, product: str, marker: str, stamp: str) -> bool:
    """Whether `target` holds a finished build: its `product` file and a `marker` reading `stamp`."""
    path = target / marker
    if not path.is_file() or not (target / product).is_file():
        return False
    return path.read_text().split() == stamp.split()


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


def maven_once(
    target: Path,
    *,
    pom: Path,
    goals: Callable[[Path], Sequence[str]],
    product: str,
    marker: str,
    stamp: str,
    lock: Path,
    doing: str,
    timeout: float | None = None,
) -> Path:
    """Fill `target` with what Maven makes of `pom` (`mvn -f pom <goals(out dir)>`), once; returns it.

    Cached by `marker` holding `stamp` (say, the pom's hash), so a changed pom builds again. Maven
    writes to a scratch directory that replaces `target` only when complete and holding `product`: an
    interrupted run, or a version bump, never leaves a half-filled or mixed-version directory behind.
    `doing` says what for, in the messages ("resolving Apache Kafka 4.1.1 jars").
    """
    if build_current(target, product, marker, stamp):
        return target
    java_executable()  # fail on a missing JVM before spending time on Maven
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError(
            f"mvn not found: {doing} from Maven Central into {target} needs it, on first use "
            "(Debian/Ubuntu: apt-get install -y maven)"
        )
    # Two processes (say `make run` and `make test`) may get here together; one builds, the other waits.
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if build_current(target, product, marker, stamp):
            return target
        print(f"{doing} with Maven into {target} (first run only)", file=sys.stderr)
        scratch = target.with_name(target.name + ".tmp")
        shutil.rmtree(scratch, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), *goals(scratch)]
        try:
            done = subprocess.run(
                cmd, cwd=pom.parent, capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise BrokerError(f"`{shlex.join(cmd)}` took longer than {timeout:.0f} s") from None
        if done.returncode != 0 or not (scratch / product).is_file():
            output = (done.stdout + done.stderr).strip().splitlines()[-40:]
            raise BrokerError(f"`{shlex.join(cmd)}` failed ({done.returncode}):\n" + "\n".join(output))
        (scratch / marker).write_text(stamp)
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    return target


def ensure_jars() -> Path:
    """Resolve the pinned Kafka jars into broker/lib with Maven, once; returns broker/lib."""
    version = kafka_version()
    return maven_once(
        LIB_DIR,
        pom=POM,
        goals=lambda out: [
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ],
        product=f"kafka_2.13-{version}.jar",
        marker=MARKER.name,
        stamp=f"kafka.version={version}\npom.sha256={pom_fingerprint(POM)}\n",
        lock=BROKER_DIR / ".lib.lock",
        doing=f"resolving Apache Kafka {version} jars",
    )


def classpath() -> str:
    # A single `dir/*` entry: the JVM expands it itself, so the command line stays short.
    return f"{LIB_DIR}/*"
