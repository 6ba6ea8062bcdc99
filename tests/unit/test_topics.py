"""Topic replication against the cluster's size (cli/topics.py) and the derived min ISR."""

from __future__ import annotations

from stream_app.cli.topics import cluster_brokers, replication_problems
from stream_app.settings import Settings


def test_a_factor_above_the_broker_count_is_an_error_naming_the_setting_and_the_topic() -> None:
    errors, warnings = replication_problems(3, 1, {"subscriber.ready": 3, "notification.status": 1})
    assert any("TOPIC_REPLICATION_FACTOR=3" in e and "1 broker" in e for e in errors)
    assert any(e.startswith("topic subscriber.ready has replication factor 3") for e in errors)
    assert warnings == [
        "topic notification.status has replication factor 1, below TOPIC_REPLICATION_FACTOR=3: raise it "
        "with kafka-reassign-partitions (README, Runbook: raising a topic's replication)"
    ]


def test_topics_at_the_factor_on_a_big_enough_cluster_are_fine() -> None:
    assert replication_problems(3, 3, {"a": 3, "b": 3}) == ([], [])
    assert replication_problems(1, 1, {"a": 1}) == ([], [])


def test_min_insync_replicas_is_two_from_a_factor_of_three() -> None:
    assert [Settings(topic_replication_factor=n).min_insync_replicas for n in (1, 2, 3, 5)] == [1, 1, 2, 2]


def test_a_broker_that_is_down_still_counts_as_one_of_the_cluster() -> None:
    """KRaft's metadata lists only the brokers up: with one of three down, the replicas of existing
    topics still name it, and a worker (re)started meanwhile must not find "factor above brokers"."""
    brokers, down = cluster_brokers(live={1, 3}, replicas={1, 2, 3})
    assert (brokers, down) == (3, [2])
    assert replication_problems(3, brokers, {"subscriber.ready": 3}) == ([], [])
    # A new cluster (no topics yet) with fewer brokers than the factor is still an error.
    assert replication_problems(3, cluster_brokers(live={1, 2}, replicas=set())[0], {})[0]
