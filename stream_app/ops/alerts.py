"""Alerts: six rules over this worker's figures, POSTed to a Slack-compatible webhook.

The rules (`Alerter.evaluate`) are pure: a snapshot and a clock in, notices out, so they are tested
without a worker. A timer builds the snapshot from `stream_app.metrics` every ALERT_INTERVAL_SECONDS
and delivers the notices. Each rule notifies once when its condition starts, repeats at most once per
ALERT_REPEAT_SECONDS while the condition holds, and sends one recovery message when it clears.
Every worker evaluates its own figures, so an alert names the worker it comes from.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from stream_app.ops import metrics
from stream_app.ops.logs import mask_text
from stream_app.settings import Settings

log = logging.getLogger("stream_app.alerts")

FAILURE_BURST = "failure_burst"
DLQ_GROWING = "dlq_growing"
IMPORT_STUCK = "import_stuck"
PARTITION_STALLED = "partition_stalled"
SENDS_PENDING = "sends_pending"
MC_BLOCKED = "mc_blocked"
RULES = (FAILURE_BURST, DLQ_GROWING, IMPORT_STUCK, PARTITION_STALLED, SENDS_PENDING, MC_BLOCKED)
WEBHOOK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class AlertConfig:
    repeat_seconds: float = 300.0
    failure_threshold: int = 10
    failure_window_seconds: float = 60.0
    dlq_quiet_seconds: float = 120.0
    import_stuck_seconds: float = 300.0
    lag_stall_seconds: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        return cls(
            repeat_seconds=settings.alert_repeat_seconds,
            failure_threshold=settings.alert_failure_threshold,
            failure_window_seconds=settings.alert_failure_window_seconds,
            dlq_quiet_seconds=settings.alert_dlq_quiet_seconds,
            import_stuck_seconds=settings.alert_import_stuck_seconds,
            lag_stall_seconds=settings.alert_lag_stall_seconds,
        )


@dataclass(frozen=True)
class Snapshot:
    """What the rules look at; times are wall-clock seconds, as `now`."""

    failure_times: Sequence[float] = ()
    dlq_sent: Mapping[str, int] = field(default_factory=dict)  # cumulative, per .dlq topic
    pending_imports: Mapping[str, float] = field(default_factory=dict)  # file -> waiting since
    partitions: Mapping[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (end, committed)
    stale_pending: Mapping[str, int] = field(default_factory=dict)  # channel -> ledger entries
    mc_block: Mapping[str, Any] = field(default_factory=dict)  # since, detail: while MC blocks calls


@dataclass(frozen=True)
class Notice:
    rule: str
    state: str  # firing | recovered
    text: str
    repeat: bool = False

    def payload(self, source: str) -> dict[str, Any]:
        """Slack's incoming-webhook shape: `text` for notifications, one `blocks` section for the body."""
        icon = ":rotating_light:" if self.state == "firing" else ":white_check_mark:"
        label = "FIRING" if self.state == "firing" else "RECOVERED"
        text = mask_text(f"{icon} [{label}] {self.rule} on {source}: {self.text}")
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


@dataclass
class RuleState:
    active: bool = False
    since: float = 0.0
    last_sent: float | None = None
    notified: bool = False  # a firing message went out and its recovery is still owed
    detail: str = ""


class Alerter:
    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self.states = {rule: RuleState() for rule in RULES}
        self._dlq_seen: dict[str, int] | None = None
        self._dlq_last_growth: float | None = None
        self._dlq_growth: dict[str, int] = {}
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}  # committed offset, changed at

    def evaluate(self, snap: Snapshot, now: float) -> list[Notice]:
        checks = {
            FAILURE_BURST: self._failure_burst(snap, now),
            DLQ_GROWING: self._dlq_growing(snap, now),
            IMPORT_STUCK: self._import_stuck(snap, now),
            PARTITION_STALLED: self._partition_stalled(snap, now),
            SENDS_PENDING: self._sends_pending(snap, now),
            MC_BLOCKED: self._mc_blocked(snap, now),
        }
        notices: list[Notice] = []
        for rule, problem in checks.items():
            notice = self._transition(rule, problem, now)
            if notice is not None:
                notices.append(notice)
        return notices

    def _transition(self, rule: str, problem: str | None, now: float) -> Notice | None:
        state = self.states[rule]
        if problem is not None:
            if not state.active:
                state.active, state.since = True, now
            state.detail = problem
            if state.last_sent is None or now - state.last_sent >= self.config.repeat_seconds:
                repeat = state.notified
                state.last_sent, state.notified = now, True
                return Notice(rule, "firing", problem, repeat=repeat)
            return None
        if state.active:
            state.active = False
            lasted = now - state.since
            if state.notified:
                state.notified = False
                return Notice(rule, "recovered", f"cleared after {lasted:.0f} s (was: {state.detail})")
        return None

    def _failure_burst(self, snap: Snapshot, now: float) -> str | None:
        window = self.config.failure_window_seconds
        count = sum(1 for t in snap.failure_times if now - window < t <= now)
        if count >= self.config.failure_threshold:
            return (
                f"{count} failed/invalid notifications in the last {window:.0f} s "
                f"(threshold {self.config.failure_threshold})"
            )
        return None

    def _dlq_growing(self, snap: Snapshot, now: float) -> str | None:
        current = dict(snap.dlq_sent)
        if self._dlq_seen is not None:
            seen = self._dlq_seen
            grew = {t: n - seen.get(t, 0) for t, n in current.items() if n > seen.get(t, 0)}
            if grew:
                self._dlq_last_growth = now
                for topic, delta in grew.items():
                    self._dlq_growth[topic] = self._dlq_growth.get(topic, 0) + delta
        else:
            # First look: what the worker sent before the alerter ran is growth too.
            if current:
                self._dlq_last_growth = now
                self._dlq_growth = dict(current)
        self._dlq_seen = current
        if self._dlq_last_growth is not None and now - self._dlq_last_growth < self.config.dlq_quiet_seconds:
            added = ", ".join(f"{t} +{n}" for t, n in sorted(self._dlq_growth.items()))
            return f"new dead-letter records: {added}"
        self._dlq_growth = {}
        return None

    def _import_stuck(self, snap: Snapshot, now: float) -> str | None:
        limit = self.config.import_stuck_seconds
        stuck = sorted((since, name) for name, since in snap.pending_imports.items() if now - since >= limit)
        if stuck:
            since, name = stuck[0]
            more = f" (and {len(stuck) - 1} more)" if len(stuck) > 1 else ""
            return f"waiting {now - since:.0f} s on MC's import of {name}{more} (threshold {limit:.0f} s)"
        return None

    def _partition_stalled(self, snap: Snapshot, now: float) -> str | None:
        stalled: list[str] = []
        progress: dict[tuple[str, int], tuple[int, float]] = {}
        for tp, (end, committed) in snap.partitions.items():
            previous = self._progress.get(tp)
            changed_at = previous[1] if previous is not None and previous[0] == committed else now
            progress[tp] = (committed, changed_at)
            lag = end - committed
            if lag > 0 and now - changed_at >= self.config.lag_stall_seconds:
                stalled.append(f"{tp[0]}[{tp[1]}] lag {lag}, no progress for {now - changed_at:.0f} s")
        self._progress = progress
        if stalled:
            return "; ".join(sorted(stalled))
        return None

    def _sends_pending(self, snap: Snapshot, now: float) -> str | None:
        stale = {channel: n for channel, n in snap.stale_pending.items() if n > 0}
        if stale:
            counts = ", ".join(f"{n} {channel}" for channel, n in sorted(stale.items()))
            return f"sends left pending (outcome unknown, being settled with MC's send log): {counts}"
        return None

    def _mc_blocked(self, snap: Snapshot, now: float) -> str | None:
        if not snap.mc_block:
            return None
        since = float(snap.mc_block.get("since") or now)
        return (
            f"MC answered errorcode 50200 (the account's calls temporarily blocked) {now - since:.0f} s "
            f"ago: every MC call of this worker is held and its records wait uncommitted "
            f"({snap.mc_block.get('detail', '')}). If it lasts, MC says to contact Salesforce support"
        )


def snapshot_from_metrics() -> Snapshot:
    return Snapshot(
        failure_times=tuple(metrics.FAILURE_TIMES),
        dlq_sent=dict(metrics.DLQ_SENT),
        pending_imports={name: p.started for name, p in metrics.PENDING.items()},
        partitions={tp: (o.end, o.committed) for tp, o in metrics.PARTITIONS.items()},
        stale_pending=dict(metrics.STALE_PENDING_COUNTS),
        mc_block=dict(metrics.MC_BLOCK),
    )


async def deliver(notice: Notice, *, url: str, source: str, client: httpx.AsyncClient | None = None) -> bool:
    """Log the notice; POST it when a webhook is set. Never raises: alerting must not stop a worker."""
    payload = notice.payload(source)
    level = logging.WARNING if notice.state == "firing" else logging.INFO
    log.log(level, payload["text"], extra={"alert_rule": notice.rule, "alert_state": notice.state})
    if not url:
        return False
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as own:
                response = await own.post(url, json=payload)
        else:
            response = await client.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
        response.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.error("alert webhook failed: %s", type(exc).__name__, extra={"alert_rule": notice.rule})
        return False


def source_name(settings: Settings) -> str:
    return f"worker {socket.gethostname()}:{settings.web_port} ({settings.app_id})"


def install(app: Any, settings: Settings) -> Alerter:
    """Run the rules on `app` every ALERT_INTERVAL_SECONDS (every worker: each speaks for itself)."""
    alerter = Alerter(AlertConfig.from_settings(settings))
    source = source_name(settings)

    @app.timer(settings.alert_interval_seconds, name="stream_app.alerts.evaluate")
    async def evaluate_alerts() -> None:
        try:
            notices = alerter.evaluate(snapshot_from_metrics(), time.time())
        except Exception:  # a bug in a rule must not take the timer down with it
            log.exception("alert evaluation failed")
            return
        for notice in notices:
            await deliver(notice, url=settings.alert_webhook_url, source=source)

    return alerter
