"""The worker's share of the fleet's MC budget (ops/fleet_share.py)."""

from __future__ import annotations

from types import SimpleNamespace

from stream_app.ops.fleet_share import group_members, share


def test_the_fleet_rate_is_split_evenly_and_a_worker_alone_takes_it_all() -> None:
    assert share(40.0, 4) == 10.0
    assert share(40.0, 1) == share(40.0, 0) == 40.0


def test_members_are_read_from_the_raw_describe_groups_answer() -> None:
    member = ("id", "client", "/127.0.0.1", b"", b"")
    answer = SimpleNamespace(
        groups=[
            (0, "other", "Stable", "consumer", "faust", [member]),
            (0, "app", "Stable", "consumer", "faust", [member, member, member]),
        ]
    )
    assert group_members([answer], "app") == 3
    assert group_members([answer], "absent") == 0
    failed = SimpleNamespace(groups=[(16, "app", "", "", "", [])])  # an error code: no members known
    assert group_members([failed], "app") == 0
