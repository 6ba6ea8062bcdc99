"""Trace steps of one event taken in quick succession leave as one record, in order, none left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stream_app import outputs
from stream_app.outputs import TraceBuffer
from stream_app.records import TraceStep, TraceSteps


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[TraceSteps]:
    sent: list[TraceSteps] = []

    async def publish(topic: Any, key: str, value: TraceSteps) -> None:
        assert key == value.event_id
        await asyncio.sleep(0.01)  # the producer takes its time: steps keep arriving meanwhile
        sent.append(value)

    monkeypatch.setattr(outputs, "publish", publish)
    return sent


def step(stage: str) -> TraceStep:
    return TraceStep(stage=stage, at="t", detail={})


def stages(sent: list[TraceSteps], event_id: str) -> list[str]:
    return [s.stage for record in sent if record.event_id == event_id for s in record.steps]


async def test_steps_of_one_event_within_the_linger_travel_together(published: list[TraceSteps]) -> None:
    buffer = TraceBuffer(linger=0.05, max_events=100)
    for stage in ("received", "ready", "ready"):
        await buffer.add("d-1", step(stage))
    await buffer.add("d-2", step("received"))
    assert published == []
    await asyncio.sleep(0.2)
    assert [(r.event_id, len(r.steps)) for r in published] == [("d-1", 3), ("d-2", 1)]
    assert stages(published, "d-1") == ["received", "ready", "ready"]


async def test_steps_added_during_a_flush_are_not_left_behind(published: list[TraceSteps]) -> None:
    buffer = TraceBuffer(linger=0.02, max_events=100)
    await buffer.add("d-1", step("received"))
    await asyncio.sleep(0.025)  # the timer's flush is publishing now
    await buffer.add("d-1", step("outcome"))
    await asyncio.sleep(0.2)
    assert stages(published, "d-1") == ["received", "outcome"]


async def test_a_full_buffer_is_flushed_at_once(published: list[TraceSteps]) -> None:
    buffer = TraceBuffer(linger=60, max_events=3)
    for n in range(3):
        await buffer.add(f"d-{n}", step("received"))
    assert [r.event_id for r in published] == ["d-0", "d-1", "d-2"]
    await buffer.add("d-9", step("received"))
    await buffer.close()  # a clean stop
    assert published[-1].event_id == "d-9"
