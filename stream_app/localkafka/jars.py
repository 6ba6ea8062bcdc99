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
