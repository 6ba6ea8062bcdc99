"""Never out-run MC (issue 18): against a sandbox that keeps MC's call budget, the worker's own pace
(MC_MAX_REQUESTS_PER_SECOND) keeps it under the budget, and MC's account-level block (50200) stops
the senders and raises the mc_blocked alert instead of spending every notification's tries, until MC
lets calls through again. Each test brings its own broker and sandbox: the calls counted are its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_app.localkafka import EmbeddedKafka
from tests.fixtures.worker import start_worker
from tests.integration.helpers import (
    clear_faults,
    drawn_event,
    eventually,
    fault,
    private_stack,
    produce_events,
    read_all,
    sample,
    statuses,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_the_worker_keeps_under_mcs_call_budget_and_sends_everything(tmp_path: Path) -> None:
    """MC allows 60 REST calls a minute (the sandbox's budget, `--calls-per-minute rest=60`); the
    worker paces itself at 0.9 a second. Seventy-odd calls take over a minute, so the budget
    binds: none is refused, and every notification is sent at its first try."""
    with private_stack(tmp_path, "--calls-per-minute", "rest=60") as (kafka, sandbox):
        worker = start_worker(
            kafka,
            sandbox,
            tmp_path / "worker",
            APP_ID="paced",
            MC_MAX_REQUESTS_PER_SECOND="0.9",
            MC_SEND_BATCH="1",  # one REST call per email: the family whose budget binds here
            # Only the sends and ENS spend the budget here (MC's feedback polls would share the pace).
            FEEDBACK_INTERVAL_SECONDS="0",
        )
        try:
            worker.wait_ready()
            events = [drawn_event() for _ in range(22)]  # 66 sends (two emails and an SMS each)
            await produce_events(kafka.bootstrap, events)
            outcomes = await eventually(lambda: _all_settled(kafka, events), timeout=180, interval=2)
            calls = httpx.get(f"{sandbox.http_url}_sandbox/calls", timeout=10).json()["rest"]
            paced = sample(
                httpx.get(f"{worker.web_url}metrics", timeout=10).text,
                'stream_app_mc_paced_seconds_total{reason="rate_limit"}',
            )
        finally:
            worker.stop()
    assert {s["status"] for s in outcomes} == {"sent"} and len(outcomes) == 66
    assert all(s["attempts"] == 1 for s in outcomes)
    # 66 sends and the ENS registration's calls, more than one minute's budget: MC's peak minute
    # stayed within it and MC refused none (the pace is 54 a minute, plus a burst of one).
    assert sum(m["calls"] for m in calls["minutes"]) > 60
    assert calls["peak_per_minute"] <= 60
    assert calls["throttled_total"] == 0 and calls["blocked_total"] == 0
    assert paced > 30  # the sends did wait for their turn


# MC bounds concurrent REST calls only (SOAP "does not enforce concurrent call restrictions", §6):
# one call per notification over REST, or batches through Transactional Messaging (REST as well).
BLOCKED_PATHS = {
    "one-per-call": {"MC_SEND_BATCH": "1"},
    "transactional-batched": {
        "MC_SEND_BATCH": "50",
        "MC_EMAIL_API": "transactional",
        "MC_SMS_API": "transactional",
    },
}


@pytest.mark.parametrize("path", list(BLOCKED_PATHS))
async def test_mcs_block_stops_the_senders_and_alerts_then_they_resume(tmp_path: Path, path: str) -> None:
    """MC blocks calls beyond one at a time (`--max-concurrent-calls 1`, errorcode 50200, no
    Retry-After). The worker's circuit breaker stops its MC calls and probes once per pause; the
    mc_blocked alert fires; no notification spends its tries (two here) or fails. Once MC lets
    calls through again, the next probe reopens the way, every notification goes once, and the
    alert recovers. Batched (a request per definition), a blocked call holds back all its
    notifications, and none of them spends a try either."""
    with private_stack(tmp_path, "--max-concurrent-calls", "1") as (kafka, sandbox):
        worker = start_worker(
            kafka,
            sandbox,
            tmp_path / "worker",
            APP_ID="blocked",
            FEEDBACK_INTERVAL_SECONDS="0",  # MC's feedback is not what this test counts
            MC_BLOCKED_PAUSE_SECONDS="1",
            RETRY_MAX_ATTEMPTS="2",
            ALERT_INTERVAL_SECONDS="0.5",
            **BLOCKED_PATHS[path],
        )
        try:
            worker.wait_ready()
            # MC answers slowly, so sends in flight together meet the bound.
            for target in ("rest", "sms"):
                fault(sandbox, target=target, mode="slow", seconds=0.5, probability=1.0)
            events = [drawn_event() for _ in range(6)]
            await produce_events(kafka.bootstrap, events)

            detail = await eventually(lambda: _alert(worker, "mc_blocked"), timeout=60)
            assert "50200" in detail
            assert _metric(worker, "stream_app_mc_blocked") == 1.0
            blocked_at_first = _calls(sandbox)["blocked_total"]
            assert blocked_at_first >= 1
            await eventually(
                lambda: _metric(worker, 'stream_app_mc_paced_seconds_total{reason="blocked"}') > 2
            )
            # Blocked for a while: nothing failed or went to a DLQ; the breaker only probed.
            assert not [
                s
                for e in events
                for s in await statuses(kafka.bootstrap, e["event_id"])
                if s["status"] == "failed"
            ]
            assert await read_all(kafka.bootstrap, "subscriber.ready.dlq") == []

            # MC lets the account's calls through again.
            httpx.post(f"{sandbox.http_url}_sandbox/calls", json={"max_concurrent_calls": 0}, timeout=10)
            clear_faults(sandbox)
            outcomes = await eventually(lambda: _all_settled(kafka, events), timeout=120, interval=1)
            await eventually(lambda: not _alert(worker, "mc_blocked"), timeout=30)
            assert _metric(worker, "stream_app_mc_blocked") == 0.0
            throttled = _metric(worker, 'stream_app_mc_throttled_total{answer="blocked",family="rest"}')
        finally:
            worker.stop()
    assert {s["status"] for s in outcomes} == {"sent"} and len(outcomes) == 18
    assert all(s["attempts"] == 1 for s in outcomes)  # the block cost no notification a try
    assert throttled >= 1


# --- helpers ----------------------------------------------------------------------------------------


async def _all_settled(kafka: EmbeddedKafka, events: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Every notification's outcome once each has one (three per event: two emails and an SMS)."""
    found: list[dict[str, Any]] = []
    for event in events:
        found += [s for s in await statuses(kafka.bootstrap, event["event_id"]) if s["status"] != "duplicate"]
    return found if len(found) >= 3 * len(events) else None


def _alert(worker: Any, rule: str) -> str:
    """The rule's detail while it is active on the worker ('' when it is not)."""
    data = httpx.get(f"{worker.web_url}dashboard/data.json", timeout=10).json()
    (alert,) = [a for a in data["alerts"] if a["rule"] == rule]
    return str(alert["detail"]) if alert["active"] else ""


def _metric(worker: Any, series: str) -> float:
    return sample(httpx.get(f"{worker.web_url}metrics", timeout=10).text, series)


def _calls(sandbox: Any) -> dict[str, Any]:
    rest: dict[str, Any] = httpx.get(f"{sandbox.http_url}_sandbox/calls", timeout=10).json()["rest"]
    return rest
