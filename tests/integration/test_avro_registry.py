"""Avro with a real schema registry (issue 20): Apicurio Registry (`python -m stream_app registry`'s),
the real broker, a worker and the sandbox. A producer registers its schema over the registry's REST
API, writes the Confluent wire format with fastavro and produces with aiokafka; its events are sent
as their JSON twins are, and a record of an id the registry never gave out lands in the DLQ."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from fastavro import parse_schema, schemaless_writer

from stream_app.contract.registry import CONTENT_TYPE, topic_schemas
from stream_app.contract.wire import frame
from stream_app.localkafka import EmbeddedKafka, free_port, port_accepts
from stream_app.localkafka.registry import LocalRegistry
from tests.fixtures.sandbox import SandboxProcess
from tests.fixtures.worker import start_worker
from tests.integration.helpers import drawn_event, eventually, messages, private_stack, read_all, statuses

pytestmark = [
    pytest.mark.integration,
    pytest.mark.registry,
    # The registry's first use builds it with Maven (a minute or two on a new machine).
    pytest.mark.timeout(900),
]

APP_ID = "avro"
UNKNOWN_ID = 987_654


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[EmbeddedKafka, SandboxProcess]]:
    # A broker of its own: the session's worker, which has no registry, would take these events too.
    with private_stack(tmp_path) as stack:
        yield stack


def create_topics(kafka: EmbeddedKafka, registry: LocalRegistry, state: Path) -> str:
    env = {
        **os.environ,
        "BROKER_URL": kafka.url,
        "SCHEMA_REGISTRY_URL": registry.url,
        "STATE_DIR": str(state),
    }
    done = subprocess.run(
        [sys.executable, "-m", "stream_app", "create-topics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def register(registry: LocalRegistry, subject: str, schema: dict[str, Any]) -> int:
    """What a producer's serializer does: POST the schema under the subject, get its id."""
    response = httpx.post(
        f"{registry.url}/subjects/{subject}/versions",
        content=json.dumps({"schema": json.dumps(schema)}),
        headers={"Content-Type": CONTENT_TYPE},
        timeout=10,
    )
    response.raise_for_status()
    return int(response.json()["id"])


def avro_bytes(schema: dict[str, Any], event: dict[str, Any], schema_id: int) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), event)
    return frame(schema_id, out.getvalue())


def shape(event: dict[str, Any], sent: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The sends of an event with its own ids taken out: what its twin must have been sent too."""
    roles = {event["drawer"]["member_id"]: "drawer", event["giver"]["member_id"]: "giver"}
    addresses = {
        event[role][field].lstrip("+"): f"{role}.{field}"
        for role in ("drawer", "giver")
        for field in ("email", "mobile")
        if event[role][field]
    }
    return sorted(
        (
            m["definition_key"],
            m["channel"],
            roles[m["subscriber_key"]],
            addresses[m["to"].lstrip("+")],
            m["from_name"],
            m["text"],
        )
        for m in sent
    )


@pytest.mark.asyncio(loop_scope="session")
async def test_avro_events_through_the_registry_are_sent_like_their_json_twins(
    own_stack: tuple[EmbeddedKafka, SandboxProcess], schema_registry: LocalRegistry, tmp_path: Path
) -> None:
    kafka, sandbox = own_stack
    printed = create_topics(kafka, schema_registry, tmp_path / "state")
    ours = {s: int(i) for s, i in re.findall(r"registered (\S+) \(schema id (\d+)\)", printed)}
    assert {"packet.drawn-value", "packet.redeemed-value"} <= set(ours), printed
    subjects = httpx.get(f"{schema_registry.url}/subjects", timeout=10).json()
    assert {"packet.drawn-value", "packet.redeemed-value"} <= set(subjects)

    # The drawn events' producer has a schema of its own, a later version than create-topics's (one
    # more field): a new id, which the worker has to fetch. The redeemed events use the registered one.
    producer_schema = json.loads(topic_schemas(["packet.drawn"])["packet.drawn-value"])
    producer_schema["fields"].append({"name": "source", "type": ["null", "string"], "default": None})
    drawn_id = register(schema_registry, "packet.drawn-value", producer_schema)
    assert drawn_id != ours["packet.drawn-value"]
    redeemed_schema = json.loads(topic_schemas(["packet.redeemed"])["packet.redeemed-value"])
    assert (
        register(schema_registry, "packet.redeemed-value", redeemed_schema) == ours["packet.redeemed-value"]
    )

    drawn, drawn_twin = drawn_event(source="app"), drawn_event()
    redeemed, redeemed_twin = (drawn_event(spent_amount=800, cashback_amount=120) for _ in range(2))
    unknown = avro_bytes(producer_schema, drawn_event(source=None), UNKNOWN_ID)

    worker = start_worker(
        kafka, sandbox, tmp_path / "worker", APP_ID=APP_ID, SCHEMA_REGISTRY_URL=schema_registry.url
    )
    try:
        worker.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for topic, value, key in (
                ("packet.drawn", avro_bytes(producer_schema, drawn, drawn_id), drawn["packet_id"]),
                ("packet.drawn", orjson.dumps(drawn_twin), drawn_twin["packet_id"]),
                ("packet.drawn", unknown, "RP-unknown"),
                (
                    "packet.redeemed",
                    avro_bytes(redeemed_schema, redeemed, ours["packet.redeemed-value"]),
                    redeemed["packet_id"],
                ),
                ("packet.redeemed", orjson.dumps(redeemed_twin), redeemed_twin["packet_id"]),
            ):
                await producer.send_and_wait(topic, value, key=key.encode())
        finally:
            await producer.stop()

        for event, count in ((drawn, 3), (drawn_twin, 3), (redeemed, 1), (redeemed_twin, 1)):
            await eventually(functools.partial(_sent_at_least, sandbox, event, count), timeout=60)
        assert shape(drawn, messages(sandbox, drawn)) == shape(drawn_twin, messages(sandbox, drawn_twin))
        assert len(messages(sandbox, drawn)) == 3
        assert shape(redeemed, messages(sandbox, redeemed)) == shape(
            redeemed_twin, messages(sandbox, redeemed_twin)
        )
        final = await eventually(lambda: _all_sent(kafka.bootstrap, drawn["event_id"], 3), timeout=30)
        assert {s["status"] for s in final} == {"sent"}

        dead = await eventually(lambda: _dead_letters(kafka.bootstrap), timeout=30)
        ((value, headers),) = dead
        assert value == unknown  # untouched: a replay after registering the schema would work
        assert headers["error.class"] == b"InvalidEvent"
        assert headers["error.message"].decode() == (
            f"Avro schema id {UNKNOWN_ID}: unknown to the schema registry at {schema_registry.url}"
        )
    finally:
        worker.stop()


def _sent_at_least(sandbox: SandboxProcess, event: dict[str, Any], count: int) -> bool:
    return len(messages(sandbox, event)) >= count


async def _all_sent(bootstrap: str, event_id: str, count: int) -> list[dict[str, Any]] | None:
    found = await statuses(bootstrap, event_id)
    return found if len(found) >= count else None


async def _dead_letters(bootstrap: str) -> list[tuple[bytes, dict[str, bytes]]]:
    return [(r.value, dict(r.headers)) for r in await read_all(bootstrap, "packet.drawn.dlq")]


def test_the_registry_command_runs_in_the_foreground_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "STATE_DIR": str(tmp_path), "SCHEMA_REGISTRY_URL": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app", "registry", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "ready at" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the registry command ended before it was ready"
        url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
        assert f"SCHEMA_REGISTRY_URL={url}" in line and "Apicurio Registry 2.4.2.Final" in line
        assert httpx.get(f"{url}/schemas/types", timeout=10).json() == ["JSON", "PROTOBUF", "AVRO"]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends; the command stops its JVM by PID
        assert proc.wait(60) == 0
        assert not port_accepts("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
