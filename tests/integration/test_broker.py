"""The embedded broker, the Kafka tool wrappers, `python -m stream_app broker` and `... dev`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from stream_app.cli.devstack import producer_lines, sample_event
from stream_app.localkafka import (
    BrokerError,
    EmbeddedKafka,
    classpath,
    describe_cluster,
    free_port,
    java_executable,
    kafka_answers,
    new_cluster_id,
    port_accepts,
)
from tests.fixtures.kafka import KafkaBroker, Records
from tests.integration.helpers import Output, assert_all_gone, descendants, started, topic_configs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
# The console tools must not depend on the caller's locale for UTF-8.
TOOL_ENV = {**os.environ, "LANG": "C", "LC_ALL": "C"}


def tool(
    name: str, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env=TOOL_ENV,
        check=False,
    )


def topic_name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------- fixture


async def test_broker_answers_metadata_once_ready(kafka: KafkaBroker) -> None:
    info = await describe_cluster(kafka.bootstrap)
    assert info is not None
    assert info.brokers == [("127.0.0.1", kafka.broker.port)]
    assert info.cluster_id == kafka.broker.cluster_id
    assert psutil.Process(kafka.pid).is_running()
    # Logging goes to the file, not to the JVM's stdout.
    assert "Kafka Server started" in kafka.broker.log_path.read_text()
    assert " INFO " not in (kafka.broker.logs_dir / "jvm.out").read_text()


async def test_fixture_helpers_roundtrip(kafka: KafkaBroker) -> None:
    topic = topic_name("fixture")
    kafka.create_topics({topic: 3})
    for i in range(5):
        await kafka.produce(topic, f"v{i}".encode(), key=f"k{i}".encode(), headers=[("h", b"1")])
    records = await kafka.consume_all(topic)
    assert sorted(r.value for r in records if r.value is not None) == [f"v{i}".encode() for i in range(5)]
    assert all(list(r.headers) == [("h", b"1")] for r in records)
    nothing = await kafka.consume_all(topic, until=lambda rs: len(rs) > 5, timeout=1.0)
    assert len(nothing) == 5


# ------------------------------------------------------------------------------------------ tools


async def test_console_producer_to_console_consumer_roundtrip(kafka: KafkaBroker) -> None:
    topic = topic_name("console")
    kafka.create_topics({topic: 3})
    value = json.dumps({"event_id": "d-紅包-1", "drawer": {"name": "EZ 紅包 ✓"}}, ensure_ascii=False)
    line = f"RP-0042|{value}"
    produced = tool(
        "kafka-console-producer",
        *("--bootstrap-server", kafka.bootstrap, "--topic", topic),
        *("--property", "parse.key=true", "--property", "key.separator=|"),
        stdin=line + "\n",
    )
    assert produced.returncode == 0, produced.stderr

    consumed = tool(
        "kafka-console-consumer",
        *("--bootstrap-server", kafka.bootstrap, "--topic", topic, "--from-beginning"),
        *("--max-messages", "1", "--timeout-ms", "30000"),
        *("--property", "print.key=true", "--property", "key.separator=|"),
    )
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [line]

    records = await kafka.consume_all(topic, until=lambda rs: len(rs) >= 1)
    assert [(r.key, r.value) for r in records] == [(b"RP-0042", value.encode("utf-8"))]


def test_kafka_topics_lists_and_describes_created_topics(kafka: KafkaBroker) -> None:
    a, b = topic_name("listed"), topic_name("listed")
    kafka.create_topics({a: 5, b: 1})
    listed = tool("kafka-topics", "--bootstrap-server", kafka.bootstrap, "--list")
    assert listed.returncode == 0, listed.stderr
    assert {a, b} <= set(listed.stdout.split())
    described = tool("kafka-topics", "--bootstrap-server", kafka.bootstrap, "--describe", "--topic", a)
    assert described.returncode == 0, described.stderr
    assert "PartitionCount: 5" in described.stdout


async def test_kafka_configs_sets_the_retention_the_readme_gives_for_existing_changelogs(
    kafka: KafkaBroker,
) -> None:
    topic = topic_name("changelog")
    kafka.create_topics({topic: 2})
    altered = tool(
        "kafka-configs",
        *(
            "--bootstrap-server",
            kafka.bootstrap,
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            topic,
        ),
        *("--add-config", "cleanup.policy=[compact,delete],retention.ms=2592000000"),
    )
    assert altered.returncode == 0, altered.stderr
    configs = await topic_configs(kafka.bootstrap, topic)
    assert (configs["cleanup.policy"], configs["retention.ms"]) == ("compact,delete", "2592000000")


async def test_kafka_consumer_groups_lists_and_describes_a_group(kafka: KafkaBroker) -> None:
    topic, group = topic_name("groups"), f"g-{uuid.uuid4().hex[:8]}"
    kafka.create_topics({topic: 2})
    for i in range(3):
        await kafka.produce(topic, f"m{i}".encode(), key=f"k{i}".encode())
    consumed = tool(
        "kafka-console-consumer",
        *("--bootstrap-server", kafka.bootstrap, "--topic", topic, "--group", group),
        *("--from-beginning", "--max-messages", "3", "--timeout-ms", "30000"),
    )
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == ["m0", "m1", "m2"]

    listed = tool("kafka-consumer-groups", "--bootstrap-server", kafka.bootstrap, "--list")
    assert listed.returncode == 0, listed.stderr
    assert group in listed.stdout.split()
    described = tool(
        "kafka-consumer-groups", "--bootstrap-server", kafka.bootstrap, "--describe", "--group", group
    )
    assert described.returncode == 0, described.stderr
    rows = [line.split() for line in described.stdout.splitlines() if line.startswith(group)]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...: everything consumed, nothing lagging.
    assert {(r[1], r[5]) for r in rows} == {(topic, "0")}
    assert sum(int(r[3]) for r in rows) == 3


def test_unknown_tool_is_an_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", "kafka-nonsense"], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    assert "unknown tool" in done.stderr


async def test_the_printed_producer_lines_produce_a_valid_event(kafka: KafkaBroker) -> None:
    """The lines `make run` prints, run as printed (from the repo root) against a broker."""
    topic = "packet.drawn"
    kafka.create_topics({topic: 4})
    events = [sample_event(f"d-printed-{uuid.uuid4().hex[:6]}") for _ in range(2)]
    console, _ = producer_lines(kafka.bootstrap, events[0])
    _, kcat = producer_lines(kafka.bootstrap, events[1])
    commands = [console] + ([kcat] if shutil.which("kcat") else [])
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"

    wanted = {e["event_id"] for e in events[: len(commands)]}

    def by_event_id(rs: Records) -> dict[str, Any]:
        # packet.drawn is shared with the bad-input tests: skip what is not an event.
        found = {}
        for r in rs:
            try:
                found[json.loads(r.value or b"")["event_id"]] = r
            except (ValueError, TypeError, KeyError, RecursionError):
                continue
        return found

    def arrived(rs: Records) -> bool:
        return wanted <= set(by_event_id(rs))

    by_id = by_event_id(await kafka.consume_all(topic, until=arrived))
    for event in events[: len(commands)]:
        record = by_id[event["event_id"]]
        assert record.key == b"RP-0001"
        assert json.loads(record.value) == event
    if not shutil.which("kcat"):
        pytest.skip("kcat not installed (make test installs it): only the console-producer line was run")


# -------------------------------------------------------------------------------- EmbeddedKafka


def test_restart_keeps_the_cluster_and_refuses_a_second_broker_on_the_same_dir(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    first = EmbeddedKafka("127.0.0.1", free_port(), data)
    with first:
        cluster_id = first.cluster_id
        assert cluster_id
        twin = EmbeddedKafka("127.0.0.1", free_port(), data)
        with pytest.raises(BrokerError, match="in use by another embedded broker"):
            twin.start()
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedKafka("127.0.0.1", first.port, tmp_path / "other").start()
        first_controller = first.controller_port

    # Another client port and a forced new controller port: the formatted dir still starts.
    while (controller := free_port()) == first_controller:
        pass
    again = EmbeddedKafka("127.0.0.1", free_port(), data, controller_port=controller)
    with again:
        assert again.controller_port != first_controller
        assert again.cluster_id == cluster_id
    assert not port_accepts("127.0.0.1", again.port)


def test_a_dir_formatted_as_a_dynamic_quorum_still_starts(tmp_path: Path) -> None:
    """A data dir formatted by hand with `--standalone` (KIP-853 dynamic quorum) is not reformatted."""
    data = tmp_path / "kafka"
    broker = EmbeddedKafka("127.0.0.1", free_port(), data)
    (data / "data").mkdir(parents=True)
    broker._write_config()  # the same server.properties, then formatted the other way
    props = broker.server_properties.read_text()
    voters = next(line for line in props.splitlines() if line.startswith("controller.quorum.voters="))
    controller = voters.rsplit("@", 1)[1]
    broker.server_properties.write_text(
        props.replace(voters, f"controller.quorum.bootstrap.servers={controller}")
    )
    cmd = [java_executable(), "-cp", classpath(), "kafka.tools.StorageTool", "format", "--standalone"]
    cmd += ["--cluster-id", new_cluster_id(), "--config", str(broker.server_properties)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    with EmbeddedKafka("127.0.0.1", free_port(), data) as again:
        assert "controller.quorum.bootstrap.servers=" in again.server_properties.read_text()
    assert again.proc is not None and again.proc.returncode is not None


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrokerError, match="java not found"):
        java_executable()


def test_non_loopback_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="loopback"):
        EmbeddedKafka("8.8.8.8", free_port(), tmp_path).start()


# ---------------------------------------------------------------------- python -m stream_app broker


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_broker_command_prints_ready_and_exits_0_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "BROKER_URL": f"kafka://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}
    data = tmp_path / "kafka"
    with started([sys.executable, "-m", "stream_app", "broker", "--data-dir", str(data)], env) as proc:
        out = Output(proc)
        line = out.until("broker ready", timeout=90)
        assert (
            line == f"broker ready at 127.0.0.1:{port} (Apache Kafka 4.1.1, KRaft), data in {data}"
        ), out.text
        assert kafka_answers("127.0.0.1", port)
        jvms = descendants(proc.pid)
        assert [p.name() for p in jvms] == ["java"]

        proc.send_signal(sig)
        assert proc.wait(40) == 0
        assert_all_gone(jvms)
        assert not port_accepts("127.0.0.1", port)


def test_broker_jvm_dies_with_its_parent(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "BROKER_URL": f"kafka://127.0.0.1:{port}", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "stream_app", "broker", "--data-dir", str(tmp_path / "kafka")]
    with started(cmd, env) as proc:
        out = Output(proc)
        assert out.until("broker ready", timeout=90) is not None, out.text
        jvms = descendants(proc.pid)
        proc.kill()  # no chance to clean up: only PR_SET_PDEATHSIG stops the JVM
        proc.wait(10)
        assert_all_gone(jvms)
        assert not port_accepts("127.0.0.1", port)


# ------------------------------------------------------------------------- python -m stream_app dev


def dev_env(tmp_path: Path) -> tuple[dict[str, str], list[int]]:
    ports = [free_port() for _ in range(4)]
    while len(set(ports)) < 4:
        ports = [free_port() for _ in range(4)]
    broker, web, http, sftp = ports
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "STATE_DIR": str(tmp_path / "state"),
        "BROKER_URL": f"kafka://127.0.0.1:{broker}",
        "WEB_PORT": str(web),
        "MC_AUTH_URL": f"http://127.0.0.1:{http}/",
        "MC_SFTP_PORT": str(sftp),
    }
    env.pop("MC_SFTP_KNOWN_HOSTS", None)
    return env, ports


DEV_READY_TIMEOUT = 180


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dev_stack_starts_everything_and_a_signal_leaves_nothing_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    env, ports = dev_env(tmp_path)
    with started([sys.executable, "-m", "stream_app", "dev"], env) as proc:
        out = Output(proc)
        assert out.until("Ctrl-C stops all of it", DEV_READY_TIMEOUT) is not None, out.text
        assert out.until("kcat -P", 10) is not None, out.text
        assert f"--bootstrap-server 127.0.0.1:{ports[0]} --topic packet.drawn" in out.text
        children = descendants(proc.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "kafka.Kafka" in names and "mc_sandbox" in names and "stream_app worker" in names
        assert all(port_accepts("127.0.0.1", p) for p in ports)

        proc.send_signal(sig)
        assert proc.wait(90) == 0
        tail = out.rest()
        order = [w for w in ("stopping worker", "stopping sandbox", "stopping broker") if w in tail]
        assert order == ["stopping worker", "stopping sandbox", "stopping broker"], tail
        assert_all_gone(children)
        assert not [p for p in ports if port_accepts("127.0.0.1", p)]


def test_dev_stack_stops_the_rest_and_fails_when_a_child_dies(tmp_path: Path) -> None:
    env, ports = dev_env(tmp_path)
    with started([sys.executable, "-m", "stream_app", "dev"], env) as proc:
        out = Output(proc)
        assert out.until("Ctrl-C stops all of it", DEV_READY_TIMEOUT) is not None, out.text
        children = descendants(proc.pid)
        sandbox = next(p for p in children if "mc_sandbox" in p.cmdline())
        sandbox.kill()
        assert proc.wait(90) != 0
        tail = out.rest()
        assert "sandbox exited unexpectedly" in tail
        assert_all_gone(children)
        assert not [p for p in ports if port_accepts("127.0.0.1", p)]
