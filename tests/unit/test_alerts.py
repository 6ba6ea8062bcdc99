"""Alert rules with an injected clock, and webhook delivery that never raises."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from stream_app.ops.alerts import (
    DLQ_GROWING,
    FAILURE_BURST,
    IMPORT_STUCK,
    PARTITION_STALLED,
    SENDS_PENDING,
    AlertConfig,
    Alerter,
    Notice,
    Snapshot,
    deliver,
)

CONFIG = AlertConfig(
    repeat_seconds=300,
    failure_threshold=3,
    failure_window_seconds=60,
    dlq_quiet_seconds=120,
    import_stuck_seconds=300,
    lag_stall_seconds=120,
)


def states(notices: list[Notice]) -> list[tuple[str, str]]:
    return [(n.rule, n.state) for n in notices]


def test_failure_burst_fires_once_then_recovers() -> None:
    alerter = Alerter(CONFIG)
    assert alerter.evaluate(Snapshot(failure_times=[100, 101]), now=102) == []
    fired = alerter.evaluate(Snapshot(failure_times=[100, 101, 102]), now=103)
    assert states(fired) == [(FAILURE_BURST, "firing")]
    assert "3 failed/invalid notifications in the last 60 s" in fired[0].text
    # Still bursting: rate-limited, nothing new.
    assert alerter.evaluate(Snapshot(failure_times=[100, 101, 102, 103]), now=110) == []
    # The window slides past the failures: one recovery.
    recovered = alerter.evaluate(Snapshot(failure_times=[100, 101, 102, 103]), now=161)
    assert states(recovered) == [(FAILURE_BURST, "recovered")]
    assert alerter.evaluate(Snapshot(failure_times=[100, 101, 102, 103]), now=170) == []


def test_a_lasting_condition_repeats_after_the_rate_limit() -> None:
    alerter = Alerter(CONFIG)
    times = list(range(0, 1000, 5))
    assert states(alerter.evaluate(Snapshot(failure_times=times), now=100)) == [(FAILURE_BURST, "firing")]
    assert alerter.evaluate(Snapshot(failure_times=times), now=399) == []
    again = alerter.evaluate(Snapshot(failure_times=times), now=400)
    assert states(again) == [(FAILURE_BURST, "firing")] and again[0].repeat


def test_a_flap_inside_the_rate_limit_is_not_notified_nor_recovered() -> None:
    alerter = Alerter(CONFIG)
    burst = Snapshot(failure_times=[0, 1, 2])
    assert states(alerter.evaluate(burst, now=3)) == [(FAILURE_BURST, "firing")]
    assert states(alerter.evaluate(burst, now=70)) == [(FAILURE_BURST, "recovered")]
    burst2 = Snapshot(failure_times=[80, 81, 82])
    assert alerter.evaluate(burst2, now=83) == []  # within 300 s of the last message
    assert alerter.evaluate(burst2, now=150) == []  # cleared again: no recovery owed


def test_dlq_growth_fires_and_recovers_after_a_quiet_period() -> None:
    alerter = Alerter(CONFIG)
    assert alerter.evaluate(Snapshot(dlq_sent={}), now=0) == []
    fired = alerter.evaluate(Snapshot(dlq_sent={"packet.drawn.dlq": 2}), now=5)
    assert states(fired) == [(DLQ_GROWING, "firing")]
    assert "packet.drawn.dlq +2" in fired[0].text
    assert alerter.evaluate(Snapshot(dlq_sent={"packet.drawn.dlq": 3}), now=60) == []
    assert alerter.evaluate(Snapshot(dlq_sent={"packet.drawn.dlq": 3}), now=179) == []
    assert states(alerter.evaluate(Snapshot(dlq_sent={"packet.drawn.dlq": 3}), now=180)) == [
        (DLQ_GROWING, "recovered")
    ]


def test_dlq_records_sent_before_the_first_check_count_as_growth() -> None:
    alerter = Alerter(CONFIG)
    assert states(alerter.evaluate(Snapshot(dlq_sent={"subscriber.ready.dlq": 1}), now=0)) == [
        (DLQ_GROWING, "firing")
    ]


def test_import_stuck() -> None:
    alerter = Alerter(CONFIG)
    pending = Snapshot(pending_imports={"subscribers_a.csv": 1000.0})
    assert alerter.evaluate(pending, now=1299) == []
    fired = alerter.evaluate(pending, now=1300)
    assert states(fired) == [(IMPORT_STUCK, "firing")] and "subscribers_a.csv" in fired[0].text
    assert states(alerter.evaluate(Snapshot(), now=1310)) == [(IMPORT_STUCK, "recovered")]


def test_sends_left_pending_fire_until_settled() -> None:
    alerter = Alerter(CONFIG)
    assert alerter.evaluate(Snapshot(stale_pending={"email": 0, "sms": 0}), now=1000) == []
    fired = alerter.evaluate(Snapshot(stale_pending={"email": 3, "sms": 0}), now=1010)
    assert states(fired) == [(SENDS_PENDING, "firing")] and "3 email" in fired[0].text
    assert states(alerter.evaluate(Snapshot(stale_pending={"email": 0}), now=1020)) == [
        (SENDS_PENDING, "recovered")
    ]


def test_partition_with_lag_and_no_progress() -> None:
    alerter = Alerter(CONFIG)
    tp = ("subscriber.ready", 2)
    assert alerter.evaluate(Snapshot(partitions={tp: (50, 10)}), now=0) == []
    # Progress resets the clock.
    assert alerter.evaluate(Snapshot(partitions={tp: (60, 20)}), now=100) == []
    assert alerter.evaluate(Snapshot(partitions={tp: (70, 20)}), now=219) == []
    fired = alerter.evaluate(Snapshot(partitions={tp: (70, 20)}), now=220)
    assert states(fired) == [(PARTITION_STALLED, "firing")]
    assert "subscriber.ready[2] lag 50" in fired[0].text
    assert states(alerter.evaluate(Snapshot(partitions={tp: (70, 21)}), now=225)) == [
        (PARTITION_STALLED, "recovered")
    ]


def test_no_lag_is_never_stalled() -> None:
    alerter = Alerter(CONFIG)
    for now in (0, 200, 400):
        assert alerter.evaluate(Snapshot(partitions={("packet.drawn", 0): (5, 5)}), now=now) == []


def test_payload_is_slack_shaped_and_masked() -> None:
    payload = Notice(FAILURE_BURST, "firing", "reason mentions ez@example.com").payload("worker w:1")
    assert payload["text"].startswith(":rotating_light: [FIRING] failure_burst on worker w:1:")
    assert "ez@example.com" not in json.dumps(payload)
    assert payload["blocks"][0]["text"]["text"] == payload["text"]


async def test_deliver_posts_json() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, text="ok")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ok = await deliver(
            Notice(DLQ_GROWING, "recovered", "quiet"), url="http://hook/", source="w", client=client
        )
    assert ok and str(seen[0]["text"]).startswith(":white_check_mark: [RECOVERED] dlq_growing on w:")


async def test_deliver_logs_webhook_errors_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    caplog.set_level(logging.ERROR, logger="stream_app.alerts")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ok = await deliver(
            Notice(FAILURE_BURST, "firing", "x"), url="http://hook/", source="w", client=client
        )
    assert not ok
    assert any("alert webhook failed" in r.getMessage() for r in caplog.records)


async def test_without_a_url_the_alert_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="stream_app.alerts")
    assert not await deliver(Notice(IMPORT_STUCK, "firing", "waiting"), url="", source="w")
    assert any("[FIRING] import_stuck" in r.getMessage() for r in caplog.records)
