"""docker-compose.yml without a Docker engine: valid against the Compose Specification's JSON schema, and
the production shape (issue 17): three KRaft nodes in one quorum with the replication settings of
stream_app/localkafka/config.py, the ones the cluster test runs on, and workers creating every topic
with three replicas from a BROKER_URL naming all three brokers.

The schema is the one check-jsonschema (PyPI) vendors from github.com/compose-spec/compose-spec
(schema/compose-spec.json), read from the installed package: no network needed.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream_app.localkafka import CLUSTER_REPLICATION, docker_env
from stream_app.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
KAFKA_IMAGE = "apache/kafka:4.1.1"
WORKERS = ("worker-1", "worker-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the anchors and `<<` merge keys as Compose does.
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(text.read_text())
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def kafka_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == KAFKA_IMAGE}


def test_the_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_mistake(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["kafka-1"]["depends_on"] = "kafka-2"  # a string, where a list or map belongs
    broken["services"]["worker-1"]["restart_policy"] = "always"  # no such key
    assert len(list(validator.iter_errors(broken))) >= 2


def test_three_kafka_nodes_in_one_quorum_with_the_cluster_replication(compose: dict[str, Any]) -> None:
    nodes = kafka_services(compose)
    assert sorted(nodes) == ["kafka-1", "kafka-2", "kafka-3"]
    # Compared as strings: the image reads its environment as text, and YAML would type 3 as a number.
    replication = {key: str(value) for key, value in docker_env(CLUSTER_REPLICATION).items()}
    voters = {f"{i}@kafka-{i}:9093" for i in (1, 2, 3)}
    envs = {name: {k: str(v) for k, v in s["environment"].items()} for name, s in nodes.items()}
    for name, env in envs.items():
        assert {k: env.get(k) for k in replication} == replication, name
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["KAFKA_NODE_ID"] == name.removeprefix("kafka-")
        assert f"PLAINTEXT://{nodes[name]['hostname']}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1
    # Each node its own data and its own host port (9092-9094, as `broker --nodes 3`).
    assert len({s["volumes"][0].split(":")[0] for s in nodes.values()}) == 3
    assert sorted(s["ports"][0].split(":")[1] for s in nodes.values()) == ["9092", "9093", "9094"]


def test_topics_and_workers_create_every_topic_with_three_replicas_on_all_brokers(
    compose: dict[str, Any],
) -> None:
    brokers = sorted((s["hostname"], 9092) for s in kafka_services(compose).values())
    for name in ("topics", *WORKERS):
        service = compose["services"][name]
        env = {k: str(v) for k, v in service["environment"].items()}
        assert env["TOPIC_REPLICATION_FACTOR"] == "3", name
        settings = Settings(broker_url=env["BROKER_URL"], topic_replication_factor=3)
        assert sorted(settings.broker_addresses) == brokers, name
        assert settings.min_insync_replicas == 2
        assert {f"kafka-{i}" for i in (1, 2, 3)} <= set(service["depends_on"]), name
