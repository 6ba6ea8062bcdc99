"""The sandbox's copy of MC's hold rule (reference §2.6): three bounces spanning at least 15 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mc_sandbox.outcomes import held_by_bounces

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def days(*offsets: float) -> list[datetime]:
    return [T0 + timedelta(days=d) for d in offsets]


def test_one_or_two_bounces_never_hold_however_far_apart() -> None:
    assert not held_by_bounces(days(0))
    assert not held_by_bounces(days(0, 30))


def test_three_bounces_hold_once_they_span_15_days() -> None:
    assert not held_by_bounces(days(0, 1, 2))
    assert not held_by_bounces(days(0, 7, 14.99))
    assert held_by_bounces(days(0, 8, 15))
    assert held_by_bounces(days(0, 1, 2, 16))
