"""Metrics rendering, the dashboard's rate windows, and MC call timing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stream_app.ops import metrics


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    metrics.reset_for_tests()
    yield
    metrics.reset_for_tests()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_window_counts_the_last_minute_only() -> None:
    clock = FakeClock(1000.0)
    window = metrics.RateWindow(60, clock)
    clock.now = 1030.0
    window.add(30)
    assert window.count() == 30 and window.rate() == pytest.approx(1.0)  # 30 over 30 s of uptime
    clock.now = 1080.0
    window.add(6)
    assert window.count() == 36 and window.rate() == pytest.approx(36 / 60)
    clock.now = 1091.0
    assert window.count() == 6 and window.total == 36


def render_text() -> str:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return body.decode()


def test_outcomes_and_dlq_records_render_and_are_kept_masked() -> None:
    metrics.record_outcome(channel="email", status="sent", notification_id="n1", event_id="e1")
    metrics.record_outcome(
        channel="email",
        status="invalid",
        notification_id="n2",
        event_id="e2",
        reason="invalid email ez@example.com",
    )
    metrics.record_dlq(
        dlq_topic="packet.drawn.dlq",
        source_topic="packet.drawn",
        partition=1,
        offset=7,
        error=ValueError("bad +886912345678"),
    )
    text = render_text()
    assert 'stream_app_notifications_total{channel="email",status="invalid"}' in text
    assert 'stream_app_dlq_records_total{topic="packet.drawn.dlq"}' in text
    assert len(metrics.FAILURE_TIMES) == 1 and metrics.DLQ_SENT == {"packet.drawn.dlq": 1}
    dlq, invalid = list(metrics.RECENT_FAILURES)
    assert dlq["source"] == "packet.drawn[1]@7" and "+886***78" in dlq["reason"]
    assert invalid["reason"] == "invalid email e***@example.com"


def test_import_pending_is_visible_while_waiting_and_timed() -> None:
    with metrics.import_pending("subscribers_x.csv", 12):
        assert set(metrics.PENDING) == {"subscribers_x.csv"}
        assert metrics.PENDING_IMPORTS._value.get() == 1
    assert metrics.PENDING == {}
    assert 'stream_app_import_duration_seconds_count{outcome="ok"}' in render_text()


def test_offsets_update_gauges_and_drop_revoked_partitions() -> None:
    metrics.update_offsets(
        {
            ("packet.drawn", 0): metrics.PartitionOffsets(10, 4),
            ("packet.drawn", 1): metrics.PartitionOffsets(3, 3),
        },
        {"packet.drawn.dlq": 2},
    )
    text = render_text()
    assert 'stream_app_consumer_lag{partition="0",topic="packet.drawn"} 6.0' in text
    assert 'stream_app_dlq_size{topic="packet.drawn.dlq"} 2.0' in text
    metrics.update_offsets({("packet.drawn", 1): metrics.PartitionOffsets(3, 3)}, {})
    assert 'partition="0",topic="packet.drawn"' not in render_text()


class _Part:
    def __init__(self) -> None:
        self.calls = 0

    async def send_email(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        return "receipt"

    async def upload(self, name: str, data: bytes) -> str:
        raise OSError("dropped")


class _MC:
    def __init__(self) -> None:
        self.rest, self.soap, self.sftp = _Part(), _Part(), _Part()


async def test_instrumented_mc_calls_are_timed_by_operation_and_outcome() -> None:
    # Async, not asyncio.run(): that unsets the session's event loop the async tests after it run on.
    mc = metrics.instrument_mc(metrics.instrument_mc(_MC()))  # twice: wrapped once only
    assert await mc.rest.send_email("k", to="x") == "receipt"
    with pytest.raises(OSError):
        await mc.sftp.upload("f.csv", b"")
    text = render_text()
    assert 'stream_app_mc_call_seconds_count{operation="rest.send_email",outcome="ok"} 1.0' in text
    assert 'stream_app_mc_call_seconds_count{operation="sftp.upload",outcome="error"} 1.0' in text


def test_stale_pending_counts_outlive_the_offset_samples_between_sweeps() -> None:
    # The sweep counts stale pending sends once a minute at most, the offsets are sampled every 2 s:
    # a sample that cleared the counts hid them from the sends_pending alert for most of the minute.
    from stream_app.ops.alerts import snapshot_from_metrics

    metrics.stale_pending("email", 3)
    metrics.update_offsets({("subscriber.ready", 0): metrics.PartitionOffsets(5, 5)}, {})
    assert snapshot_from_metrics().stale_pending == {"email": 3}
