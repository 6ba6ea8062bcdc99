"""Operator views of every worker: `GET /metrics`, `GET /dashboard/`, `GET /dashboard/data.json`.

`/metrics` serves one Prometheus registry holding both our series (ops/metrics.py) and Faust's
own sensor figures (`faust.sensors.prometheus`, installed here as the app's monitor on the same
registry, so there is a single /metrics route and no second one from Faust's helper).

Consumer lag and DLQ sizes come from a sampler timer: a small group-less Kafka consumer of our own
asks the broker for end offsets (including the .dlq topics, which no worker subscribes to), and
Faust's consumer says what it has committed. Everything shown is masked (ops/logs.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.web import Request, Response, View

from stream_app.contract.topics import DLQ_SOURCES, dlq_name, topic_partitions
from stream_app.ops import alerts, metrics
from stream_app.ops.logs import mask_value

if TYPE_CHECKING:
    from stream_app.runtime.app import Runtime

log = logging.getLogger("stream_app.dashboard")

SAMPLE_INTERVAL_SECONDS = 2.0

# (key, title, the rate window shown (metrics.stage_rate), unit). Each counts, since this worker
# started: intake, input records read; batched, notifications put into a window; rows-imported, rows
# of completed imports MC imported (rows-rejected beside it); outcome, notification.status records
# (the senders' outcomes, and those MC's feedback adds after `sent`: stages/feedback.py).
STAGES = (
    ("intake", "Intake", "intake", "events/s"),
    ("batcher", "Subscriber batcher", "batched", "rows/s into windows"),
    ("imports", "Import watcher", "rows-imported", "rows/s imported"),
    ("senders", "Email / SMS senders", "outcome", "outcomes/s"),
)
# Every figure is this worker's: with several workers, the fleet's totals are the Prometheus
# series summed over them.
SCOPE = "this worker's share; fleet totals: sum the /metrics series over every worker"


class Dashboard:
    def __init__(self, runtime: Runtime, alerter: alerts.Alerter) -> None:
        self.app = runtime.app
        self.settings = runtime.settings
        self.alerter = alerter
        self.started = time.time()
        self._offsets_client: AIOKafkaConsumer | None = None

    async def _offsets(self) -> AIOKafkaConsumer:
        if self._offsets_client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_servers,
                client_id=f"{self.settings.app_id}-offsets-{self.settings.web_port}",
                enable_auto_commit=False,
            )
            await client.start()
            self._offsets_client = client
        return self._offsets_client

    async def close(self, sender: Any, **kwargs: Any) -> None:
        if self._offsets_client is not None:
            client, self._offsets_client = self._offsets_client, None
            await client.stop()

    async def sample_offsets(self) -> None:
        ours = {t for t in topic_partitions(self.settings) if not t.endswith(".dlq")}
        assigned = sorted(tp for tp in self.app.consumer.assignment() if tp.topic in ours)
        dlqs = [TopicPartition(dlq_name(t), 0) for t in DLQ_SOURCES]
        mine = [TopicPartition(tp.topic, tp.partition) for tp in assigned]
        intake = {TopicPartition(t, p): offset for (t, p), offset in list(metrics.INTAKE_COMMITTED.items())}
        mine += sorted(intake)
        client = await self._offsets()
        ends = await client.end_offsets([*mine, *dlqs])
        begins = await client.beginning_offsets([*mine, *dlqs])
        # Faust keeps what it committed (next offset to read, seeded from the group on assignment) in
        # `_committed_offset`; it has no public accessor, and asking the broker would lag behind it.
        committed_map: Any = getattr(self.app.consumer, "_committed_offset", {})
        partitions: dict[tuple[str, int], metrics.PartitionOffsets] = {}
        for tp in mine:
            if tp in intake:
                committed = intake[tp]
            else:
                committed = committed_map.get(tp) if hasattr(committed_map, "get") else None
            if committed is None:  # nothing committed by the group yet: it reads from the beginning
                committed = begins.get(tp, 0)
            partitions[(tp.topic, tp.partition)] = metrics.PartitionOffsets(ends.get(tp, 0), committed)
        dlq_sizes = {tp.topic: max(ends.get(tp, 0) - begins.get(tp, 0), 0) for tp in dlqs}
        metrics.update_offsets(partitions, dlq_sizes)
        metrics.OPEN_WINDOWS.set(self.open_window_count())

    def open_window_count(self) -> int:
        """Windows open on this worker: 0 where the batcher stage does not run, or before its table
        is ready."""
        try:
            windows: Any = self.app.tables["open-windows"]
            return len(windows)
        except Exception:
            return 0

    def data(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        lag_by_topic: dict[str, int] = {}
        for (topic, _), offsets in metrics.PARTITIONS.items():
            lag_by_topic[topic] = lag_by_topic.get(topic, 0) + offsets.lag
        windows = self.open_window_count()
        data = {
            "worker": {
                "app_id": self.settings.app_id,
                "web_port": self.settings.web_port,
                "uptime_s": round(now - self.started, 1),
                "now": now,
                "alert_webhook": bool(self.settings.alert_webhook_url),
                "scope": SCOPE,
            },
            "stages": [
                {
                    "key": key,
                    "title": title,
                    "rate": round(metrics.stage_rate(stage).rate(), 3),
                    "last_minute": metrics.stage_rate(stage).count(),
                    "total": metrics.stage_rate(stage).total,
                    "unit": unit,
                }
                for key, title, stage, unit in STAGES
            ],
            "imports": {
                "rows_imported": metrics.stage_rate("rows-imported").total,
                "rows_rejected": metrics.stage_rate("rows-rejected").total,
                "rejected_last_minute": metrics.stage_rate("rows-rejected").count(),
            },
            "outcomes": dict(sorted(metrics.OUTCOME_COUNTS.items())),
            "lag": {
                "total": sum(lag_by_topic.values()),
                "by_topic": dict(sorted(lag_by_topic.items())),
                "partitions": [
                    {"topic": t, "partition": p, "end": o.end, "committed": o.committed, "lag": o.lag}
                    for (t, p), o in sorted(metrics.PARTITIONS.items())
                ],
            },
            "open_windows": windows,
            "pending_imports": [
                {"file": p.file, "rows": p.rows, "waiting_s": round(now - p.started, 1)}
                for p in sorted(metrics.PENDING.values(), key=lambda p: p.started)
            ],
            "recent_failures": [{**f, "age_s": round(now - f["at"], 1)} for f in metrics.RECENT_FAILURES],
            "dlq": [
                {
                    "topic": dlq_name(t),
                    "size": metrics.DLQ_SIZES.get(dlq_name(t)),
                    "sent_by_worker": metrics.DLQ_SENT.get(dlq_name(t), 0),
                }
                for t in DLQ_SOURCES
            ],
            "alerts": [
                {
                    "rule": rule,
                    "active": state.active,
                    "since": state.since if state.active else None,
                    "detail": state.detail if state.active else "",
                }
                for rule, state in self.alerter.states.items()
            ],
        }
        # Belt and braces: every string leaving this view goes through the mask, whatever its origin.
        masked: dict[str, Any] = mask_value(data)
        return masked


def install(runtime: Runtime) -> None:
    app = runtime.app
    # Faust's sensor figures go to our registry, served by our /metrics (see the module docstring).
    app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(metrics.REGISTRY, "faust"))
    dashboard = Dashboard(runtime, alerts.install(app, runtime.settings))
    # cast: mode's signal stubs want a `signal=` parameter Faust never passes positionally.
    app.on_before_shutdown.connect(cast(Any, dashboard.close))

    @app.timer(SAMPLE_INTERVAL_SECONDS, name="stream_app.dashboard.sample_offsets")
    async def sample_offsets() -> None:
        try:
            await dashboard.sample_offsets()
        except Exception as exc:  # the broker restarting must not kill the timer; the next tick retries
            log.warning("offset sampling failed: %s", exc)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            body, content_type = metrics.render()
            return self.bytes(body, headers={"Content-Type": content_type})

    @app.page("/dashboard/data.json")
    class DashboardDataView(View):
        async def get(self, request: Request) -> Response:
            return self.json(dashboard.data(), headers={"Cache-Control": "no-store"})

    @app.page("/dashboard/")
    class DashboardView(View):
        async def get(self, request: Request) -> Response:
            return self.html(DASHBOARD_HTML, headers={"Cache-Control": "no-store"})


# Inline CSS and JS only: the operators' machines may be offline (no CDN). Values are written with
# textContent, never innerHTML, so nothing from a record can run as markup.
DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stream_app dashboard</title>
<style>
:root { --bg:#0f172a; --card:#1e293b; --fg:#e2e8f0; --dim:#94a3b8; --ok:#22c55e; --warn:#f59e0b;
        --bad:#ef4444; --accent:#38bdf8; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background:var(--bg); color:var(--fg); }
header { display:flex; align-items:center; gap:16px; padding:12px 20px; background:#020617;
         border-bottom:1px solid #334155; }
header h1 { font-size:18px; margin:0; }
header .meta { color:var(--dim); font-size:12px; }
#status { margin-left:auto; padding:2px 10px; border-radius:10px; font-size:12px; background:#334155; }
#status.live { background:#14532d; color:#bbf7d0; } #status.error { background:#7f1d1d; color:#fecaca; }
main { padding:16px 20px; display:grid; gap:16px; }
.flow { display:flex; align-items:stretch; gap:8px; }
.stage { flex:1; background:var(--card); border-radius:8px; padding:12px;
         border-top:3px solid var(--accent); }
.stage h2 { font-size:13px; margin:0 0 6px; color:var(--dim); text-transform:uppercase;
            letter-spacing:.04em; }
.stage .rate { font-size:28px; font-weight:600; }
.stage .unit { color:var(--dim); font-size:12px; }
.stage .extra { margin-top:6px; font-size:12px; color:var(--dim); }
.arrow { align-self:center; color:var(--dim); font-size:22px; }
.grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap:16px; }
.card { background:var(--card); border-radius:8px; padding:12px; }
.card h3 { margin:0 0 8px; font-size:14px; }
table { width:100%; border-collapse:collapse; font-size:12px; }
th, td { text-align:left; padding:3px 6px; border-bottom:1px solid #334155; vertical-align:top; }
th { color:var(--dim); font-weight:500; }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
.bad { color:var(--bad); } .warn { color:var(--warn); } .ok { color:var(--ok); }
.empty { color:var(--dim); font-style:italic; }
.pill { display:inline-block; padding:1px 8px; border-radius:9px; margin:2px 4px 2px 0; font-size:12px;
        background:#334155; }
.pill.firing { background:#7f1d1d; color:#fecaca; } .pill.quiet { background:#14532d; color:#bbf7d0; }
</style></head>
<body>
<header><h1>stream_app</h1><span class="meta" id="worker">worker</span>
<span class="meta" id="scope"></span>
<span class="meta">updated <span id="updated">never</span></span><span id="status">connecting</span></header>
<main>
<section class="flow" id="flow">
  <div class="stage" id="stage-intake"><h2>Intake</h2><div class="rate" id="rate-intake">-</div>
    <div class="unit">events/s (last minute)</div><div class="extra" id="extra-intake"></div></div>
  <div class="arrow">&#x2192;</div>
  <div class="stage" id="stage-batcher"><h2>Subscriber batcher</h2><div class="rate" id="rate-batcher">-</div>
    <div class="unit">rows/s into windows</div>
    <div class="extra">open windows: <b id="open-windows">-</b></div></div>
  <div class="arrow">&#x2192;</div>
  <div class="stage" id="stage-imports"><h2>Import watcher</h2><div class="rate" id="rate-imports">-</div>
    <div class="unit">rows/s imported</div>
    <div class="extra">rejected by MC: <b id="rows-rejected">-</b>,
    pending imports: <b id="pending-count">-</b></div></div>
  <div class="arrow">&#x2192;</div>
  <div class="stage" id="stage-senders"><h2>Email / SMS senders</h2>
    <div class="rate" id="rate-senders">-</div>
    <div class="unit">outcomes/s</div><div class="extra" id="outcomes"></div></div>
</section>
<section class="card"><h3>Alerts</h3><div id="alerts"></div></section>
<section class="grid">
  <div class="card"><h3>Consumer lag <span class="meta">(total <b id="lag-total">-</b>)</span></h3>
    <table><thead><tr><th>topic</th><th class="num">lag</th></tr></thead>
    <tbody id="lag"></tbody></table></div>
  <div class="card"><h3>Dead-letter topics</h3>
    <table><thead><tr><th>topic</th><th class="num">records</th>
    <th class="num">sent by this worker</th></tr></thead>
    <tbody id="dlq"></tbody></table></div>
  <div class="card"><h3>Pending imports</h3>
    <table><thead><tr><th>file</th><th class="num">rows</th><th class="num">waiting</th></tr></thead>
    <tbody id="pending"></tbody></table></div>
</section>
<section class="card"><h3>Recent failures <span class="meta">(last 20, masked)</span></h3>
  <table><thead><tr><th>age</th><th>kind</th><th>what</th><th>reason</th></tr></thead>
  <tbody id="failures"></tbody></table></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = String(text);
  if (cls) td.className = cls; row.appendChild(td); return td; }
function fill(tbodyId, rows, columns, emptyText) {
  const body = $(tbodyId); body.replaceChildren();
  if (!rows.length) { const tr = body.insertRow(); const td = cell(tr, emptyText, "empty");
    td.colSpan = columns; return; }
  for (const cols of rows) {
    const tr = body.insertRow(); for (const [text, cls] of cols) cell(tr, text, cls); }
}
function age(s) { return s < 60 ? s.toFixed(0) + " s" : (s / 60).toFixed(1) + " min"; }
// Outcome pills: the send's (failed, invalid bad; sent ok) and MC's feedback after it (delivered ok;
// bounced, not_sent, unsubscribed, undeliverable: the recipient's, not the service's, trouble).
const PILL = {failed: "bad", invalid: "bad", sent: "ok", delivered: "ok",
  bounced: "warn", not_sent: "warn", unsubscribed: "warn", undeliverable: "warn"};
function render(d) {
  $("worker").textContent = d.worker.app_id + " on :" + d.worker.web_port + ", up " + age(d.worker.uptime_s);
  for (const s of d.stages) { const el = $("rate-" + s.key); if (el) el.textContent = s.rate.toFixed(2); }
  const intake = d.stages.find((s) => s.key === "intake");
  $("extra-intake").textContent = intake ? intake.total + " events since start" : "";
  $("open-windows").textContent = d.open_windows;
  $("pending-count").textContent = d.pending_imports.length;
  $("rows-rejected").textContent = d.imports.rows_rejected;
  $("scope").textContent = "figures: " + d.worker.scope;
  const out = $("outcomes"); out.replaceChildren();
  for (const [status, n] of Object.entries(d.outcomes)) {
    const span = document.createElement("span"); span.className = "pill " + (PILL[status] || "");
    span.textContent = status + " " + n; out.appendChild(span); }
  $("lag-total").textContent = d.lag.total;
  fill("lag", Object.entries(d.lag.by_topic).map(([t, n]) => [[t], [n, "num " + (n > 0 ? "warn" : "")]]), 2,
       "no partitions assigned yet");
  fill("dlq", d.dlq.map((q) => [[q.topic], [q.size === null ? "?" : q.size, "num " + (q.size ? "bad" : "")],
       [q.sent_by_worker, "num"]]), 3, "none");
  fill("pending", d.pending_imports.map((p) => [[p.file], [p.rows, "num"], [age(p.waiting_s), "num"]]), 3,
       "none: no file waiting on MC");
  fill("failures", d.recent_failures.map((f) => [[age(f.age_s)], [f.kind === "dlq" ? "DLQ" : f.status, "bad"],
       [f.kind === "dlq" ? f.topic + " \\u2190 " + f.source
                         : f.channel + " " + f.notification_id],
       [f.kind === "dlq" ? f.error_class + ": " + f.reason : f.reason]]), 4, "no failures");
  const alerts = $("alerts"); alerts.replaceChildren();
  for (const a of d.alerts) { const span = document.createElement("span");
    span.className = "pill " + (a.active ? "firing" : "quiet"); span.dataset.rule = a.rule;
    span.textContent = a.rule + (a.active ? ": " + a.detail : ": ok"); alerts.appendChild(span); }
  $("updated").textContent = new Date(d.worker.now * 1000).toLocaleTimeString();
}
async function refresh() {
  try {
    const r = await fetch("data.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("status").textContent = "live"; $("status").className = "live";
  } catch (e) {
    $("status").textContent = "no data: " + e.message; $("status").className = "error";
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
"""
