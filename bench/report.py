"""What a run reports: the table, the row it appends to bench/results.csv, and the JSON line."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.csv"

# The table's rows and results.csv's columns (after date and commit), in this order: key, label, unit.
ROWS = [
    ("events", "input events (backlog)", ""),
    ("baseline_msgs_per_s", "baseline aiokafka consume-decode-produce", "msgs/s"),
    ("faust_agent_msgs_per_s", "Faust agent: decode, table write, produce", "msgs/s"),
    ("faust_ratio", "Faust agent / baseline (per-event ceiling)", ""),
    ("intake_events_per_s", "intake: packet.drawn -> subscriber.ready", "events/s"),
    ("intake_notifications_per_s", "intake: notifications made ready", "notif/s"),
    ("intake_consumed_events_per_s", "intake: packet.drawn offsets committed", "events/s"),
    ("ratio", "intake / baseline", ""),
    ("sends_per_s", "MC sends (ready backlog)", "sends/s"),
    ("warmup_imports_per_s", "warm-up: new subscribers imported (window, CSV, SFTP, MC)", "subs/s"),
    ("latency_ms_p50_known", "draw-to-send p50, known subscriber", "ms"),
    ("latency_ms_p95_known", "draw-to-send p95, known subscriber", "ms"),
    ("latency_ms_p99_known", "draw-to-send p99, known subscriber", "ms"),
    ("latency_ms_p50_new", "draw-to-send p50, new subscriber", "ms"),
    ("latency_ms_p95_new", "draw-to-send p95, new subscriber", "ms"),
    ("latency_ms_p99_new", "draw-to-send p99, new subscriber", "ms"),
    ("latency_ms_p50_new_split", "draw-to-send p50, new subscriber, senders on a worker apart", "ms"),
    ("latency_ms_p99_new_split", "draw-to-send p99, new subscriber, senders on a worker apart", "ms"),
    ("notifications_per_mc_call_batched", "MC budget: emails per MC call, batched", ""),
    ("mc_calls_per_min_peak_batched", "MC budget: peak MC calls per minute, batched", "calls/min"),
    ("mc_throttled_calls_batched", "MC budget: calls MC throttled, batched", ""),
    ("notifications_per_hour_batched", "MC budget: emails per hour, batched", "/h"),
    ("notifications_per_mc_call_single", "MC budget: emails per MC call, one per call", ""),
    ("mc_calls_per_min_peak_single", "MC budget: peak MC calls per minute, one per call", "calls/min"),
    ("mc_throttled_calls_single", "MC budget: calls MC throttled, one per call", ""),
    ("notifications_per_hour_single", "MC budget: emails per hour, one per call", "/h"),
    ("orjson_us_per_event", "decode: JSON input event (orjson)", "us"),
    ("fastavro_us_per_event", "decode: Avro input event (fastavro, the codec used)", "us"),
    ("avro_us_per_event", "decode: Avro input event (avro package)", "us"),
    ("rss_mb_ready", "worker RSS when ready (idle)", "MB"),
    ("worker_peak_rss_mb", "worker peak RSS (whole run)", "MB"),
    ("rss_mb_before_backlog", "worker RSS before the big backlog", "MB"),
    ("rss_mb_peak_with_backlog", "worker peak RSS with the big backlog", "MB"),
    ("backlog_events", "big backlog produced", "events"),
    ("backlog_produce_s", "big backlog produce time", "s"),
    ("backlog_still_waiting", "big backlog still waiting at the end", "events"),
    ("sftp_uploads", "SFTP uploads", ""),
    ("window_slots", "window slots (aligned windows)", ""),
    ("windows_closed", "windows closed (per partition)", ""),
    ("cpu_steal_pct_baseline", "CPU steal (hypervisor) in the baseline", "%"),
    ("cpu_steal_pct_intake", "CPU steal in the intake phase", "%"),
    ("cpu_steal_pct_latency", "CPU steal in the latency phases", "%"),
    ("cpu_steal_pct", "CPU steal over the run", "%"),
    ("total_s", "bench wall time", "s"),
]
RATIOS = ("ratio", "faust_ratio")  # shown with four decimals
# The JSON line's first keys, in this order; every other figure follows.
SUMMARY_KEYS = [
    "baseline_msgs_per_s",
    "intake_events_per_s",
    "ratio",
    "sends_per_s",
    "latency_ms_p50_known",
    "latency_ms_p99_known",
    "latency_ms_p99_new",
    "worker_peak_rss_mb",
    "sftp_uploads",
    "events",
]


def git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def print_table(figures: dict[str, Any]) -> None:
    print()
    print(f"{'figure':<46} {'value':>14}  unit")
    print("-" * 70)
    for key, label, unit in ROWS:
        if key in figures:
            value = figures[key]
            if key in RATIOS:
                value = f"{value:.4f}"
            text = (
                f"{value:,.1f}"
                if isinstance(value, float)
                else f"{value:,}"
                if isinstance(value, int)
                else str(value)
            )
            print(f"{label:<46} {text:>14}  {unit}")
    print()


def append_csv(figures: dict[str, Any]) -> None:
    """Append a row; when the columns changed, rewrite the file under the new header (old rows kept)."""
    fields = ["date", "commit", *[key for key, _, _ in ROWS]]
    row = {"date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_head()}
    row.update({k: figures.get(k, "") for k, _, _ in ROWS})
    rows: list[dict[str, Any]] = []
    if RESULTS.exists():
        with RESULTS.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != fields:
                rows = list(reader)
    if rows or not RESULTS.exists():
        with RESULTS.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
    with RESULTS.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=fields).writerow(row)


def json_line(figures: dict[str, Any], notes: list[str]) -> str:
    """The run's last line: the summary keys first, then every other figure, then the notes if any."""
    out = {k: figures.get(k) for k in SUMMARY_KEYS}
    out.update({k: v for k, v in figures.items() if k not in out})
    if notes:
        out["notes"] = notes
    return orjson.dumps(out).decode()
