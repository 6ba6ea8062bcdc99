"""The Prometheus alerting rules and the Grafana dashboard in stream_app/ops: promtool checks the rules
and runs their unit tests, and every series they name is one a worker really serves on /metrics."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

OPS = Path(__file__).resolve().parents[2] / "stream_app" / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "alerts.test.yml"
DASHBOARD = OPS / "grafana" / "stream_app.json"
# Labels Prometheus adds to every series it scrapes from a worker.
TARGET_LABELS = frozenset({"job", "instance"})


def ops_module(name: str) -> ModuleType:
    """stream_app.ops.<name>, or stream_app.<name> where the module has not moved to ops/ yet."""
    try:
        return importlib.import_module(f"stream_app.ops.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"stream_app.ops.{name}", "stream_app.ops"):
            raise
        return importlib.import_module(f"stream_app.{name}")


# --- what the files say -------------------------------------------------------------------------


def alert_rules() -> list[tuple[str, str]]:
    """(alert name, expr) of every rule in alerts.yml.

    The venv has no YAML parser, and alerts.yml keeps every expr a `|` block (its header says so), so
    the rules are read line by line; `promtool check rules` counting the same number of rules
    (test_promtool_checks_the_rules) shows none was missed."""
    lines = RULES.read_text().splitlines()
    rules: list[tuple[str, str]] = []
    name: str | None = None
    for i, line in enumerate(lines):
        alert = re.match(r"\s*- alert:\s*(\S+)\s*$", line)
        if alert:
            name = alert.group(1)
            continue
        expr = re.match(r"(\s*)expr:\s*(.*?)\s*$", line)
        if expr is None:
            continue
        assert name is not None, f"alerts.yml line {i + 1}: an expr outside an alerting rule"
        indent, rest = len(expr.group(1)), expr.group(2)
        if rest == "|":
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following.strip())
            text = "\n".join(block).strip()
        else:
            assert rest and rest[0] not in "'\">|", f"alerts.yml line {i + 1}: write the expr as a `|` block"
            text = rest
        rules.append((name, text))
        name = None
    return rules


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return found


def dashboard_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every PromQL query of the dashboard, the templating's label_values included."""
    exprs = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        label_values = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_]\w*)\)", query.strip())
        assert label_values, f"variable {variable['name']}: expected label_values(<selector>, <label>)"
        selector, label = label_values.groups()
        # `by (label)` makes the label checked against the selector's series like any grouping label.
        exprs.append((f"variable {variable['name']}", f"count by ({label}) ({selector})"))
    return exprs


def normalized(expr: str) -> str:
    return " ".join(expr.split())


# --- what a worker serves -------------------------------------------------------------------------


def faust_prefix() -> str:
    """The prefix dashboard.py gives Faust's sensor series (`FaustMetrics.create(registry, prefix)`)."""
    source = Path(ops_module_file("dashboard")).read_text()
    found = re.search(r"FaustMetrics\.create\(\s*metrics\.REGISTRY\s*,\s*\"(\w+)\"\s*\)", source)
    assert found, "dashboard.py no longer creates FaustMetrics on metrics.REGISTRY: update this test"
    return found.group(1)


def ops_module_file(name: str) -> str:
    """The path of an ops module without importing it (dashboard.py starts the whole Faust app)."""
    for path in (OPS / f"{name}.py", OPS.parent / f"{name}.py"):
        if path.exists():
            return str(path)
    raise AssertionError(f"neither stream_app/ops/{name}.py nor stream_app/{name}.py exists")


SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def series_of(registry: CollectorRegistry, wrappers: list[MetricWrapperBase]) -> dict[str, frozenset[str]]:
    """Series name -> its label names, for every metric family the registry collects."""
    # A labelled metric with no children yet collects no samples; its label names are on the wrapper.
    label_names = {wrapper._name: frozenset(wrapper._labelnames) for wrapper in wrappers}
    series: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        assert family.name in label_names, f"{family.name}: a metric this test does not know the labels of"
        labels = label_names[family.name]
        for suffix in SUFFIXES[family.type]:
            series[family.name + suffix] = labels | {"le"} if suffix == "_bucket" else labels
    return series


def exported_series() -> dict[str, frozenset[str]]:
    """Every series of a worker's /metrics with its label names: our registry and Faust's sensor."""
    metrics = ops_module("metrics")
    ours = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    series = series_of(metrics.REGISTRY, ours)
    faust_registry = CollectorRegistry()
    faust = FaustMetrics.create(faust_registry, faust_prefix())
    series.update(series_of(faust_registry, list(faust)))
    return series


# --- reading PromQL ------------------------------------------------------------------------------

KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
)
KEYWORDS |= {"inf", "nan", "Inf", "NaN"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def referenced(expr: str) -> tuple[list[tuple[str, frozenset[str]]], frozenset[str]]:
    """The series selectors of a PromQL expression, each (metric name, label names it matches on), and
    the label names of its grouping clauses (by, without, on, ignoring, group_left/right).

    Not a full PromQL parser: enough for the rules and the dashboard, and strict, so that anything it
    cannot place (a bare name) counts as a metric name and has to be a real series."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery brackets: [5m], [$__rate_interval]
    text = re.sub(r"\boffset\s+-?[0-9a-zA-Z_$]+", " ", text)  # offset 2m
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside strings
    grouping = frozenset(
        label.strip() for labels in GROUPING.findall(text) for label in labels.split(",") if label.strip()
    )
    text = GROUPING.sub(" ", text)
    text = re.sub(r"(?<![\w:.])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?", " ", text)  # numbers, 1e3 included
    selectors: list[tuple[str, frozenset[str]]] = []
    for found in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?", text):
        name, matchers, call = found.groups()
        if (call and not matchers) or name in KEYWORDS:
            continue  # a function or an aggregation, or an operator
        labels = frozenset(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""))
        selectors.append((name, labels))
    assert "{" not in re.sub(r"[A-Za-z_:][\w:]*\s*\{[^}]*\}", "", text), f"a selector without a name: {expr}"
    return selectors, grouping


def unknown_references(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """What `expr` names that no worker serves: series, and labels those series do not have."""
    selectors, grouping = referenced(expr)
    problems: list[str] = []
    known_labels = set(TARGET_LABELS)
    for name, labels in selectors:
        if name not in series:
            problems.append(f"series {name} is not exported")
            continue
        known_labels |= series[name]
        problems += [
            f"{name} has no label {label}" for label in sorted(labels - series[name] - TARGET_LABELS)
        ]
    problems += [
        f"grouping label {label} is on none of its series" for label in sorted(grouping - known_labels)
    ]
    return problems


def test_the_promql_reader_finds_series_labels_and_groupings() -> None:
    selectors, grouping = referenced(
        "histogram_quantile(0.95, sum by (le, operation) "
        '(rate(a_bucket{job="$job", x=~"1|2"}[$__rate_interval])))'
        " / 1e3 > 0 and on (job) b offset 5m unless count(c[2m] @ 100) or vector(0)"
    )
    assert selectors == [("a_bucket", frozenset({"job", "x"})), ("b", frozenset()), ("c", frozenset())]
    assert grouping == {"le", "operation", "job"}
    series = {"a_bucket": frozenset({"x", "le", "operation"}), "b": frozenset()}
    assert unknown_references('sum by (channel) (a_bucket{y="1"}) + b + c', series) == [
        "a_bucket has no label y",
        "series c is not exported",
        "grouping label channel is on none of its series",
    ]


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`, see scripts/ensure-system-deps)")
    return path


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    output = f"$ {' '.join(command)}\n{done.stdout}{done.stderr}"
    print(output)
    assert done.returncode == 0, f"exit status {done.returncode}:\n{output}"
    return output


def test_promtool_checks_the_rules(promtool: str) -> None:
    output = run([promtool, "check", "rules", RULES.name], cwd=RULES.parent)
    # The same count as alert_rules() reads, so the other tests see every rule.
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent)


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    cases = re.split(r"\n\s*- eval_time:", RULE_TESTS.read_text())[1:]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        alertname = re.search(r"alertname:\s*(\S+)", case)
        assert alertname, f"an eval without an alertname: {case[:200]}"
        (quiet if re.search(r"exp_alerts:\s*\[\]", case) else firing).add(alertname.group(1))
    names = {name for name, _ in alert_rules()}
    assert names - firing == set(), "rules without a firing case in alerts.test.yml"
    assert names - quiet == set(), "rules without a not-firing case in alerts.test.yml"


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    """Each query of the dashboard as a recording rule, Grafana's variables filled in, for promtool."""
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*", "$job": "stream_app"}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(dashboard_exprs(dashboard())):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not fill in: {expr}"
        lines += [f"      - record: dashboard:query_{i}", "        expr: " + json.dumps(normalized(expr))]
    (tmp_path / "dashboard.yml").write_text("\n".join(lines) + "\n")
    run([promtool, "check", "rules", "--lint=none", "dashboard.yml"], cwd=tmp_path)


def test_the_rules_name_only_series_a_worker_exports() -> None:
    series = exported_series()
    problems = [
        f"{name}: {problem}" for name, expr in alert_rules() for problem in unknown_references(expr, series)
    ]
    assert problems == []
    # And they do name some: a reader that found nothing would pass the check above.
    assert all(referenced(expr)[0] for _, expr in alert_rules())


def test_the_dashboard_names_only_series_a_worker_exports() -> None:
    series = exported_series()
    exprs = dashboard_exprs(dashboard())
    problems = [
        f"{where}: {problem}" for where, expr in exprs for problem in unknown_references(expr, series)
    ]
    assert problems == []
    named = {name for _, expr in exprs for name, _ in referenced(expr)[0]}
    assert any(name.startswith("faust_") for name in named) and len(named) > 10


def test_a_rule_on_a_series_no_worker_exports_is_caught() -> None:
    series = exported_series()
    assert unknown_references("sum(rate(stream_app_notifications_sent_total[1m])) > 0", series) == [
        "series stream_app_notifications_sent_total is not exported"
    ]
    assert unknown_references('sum by (topic) (stream_app_consumer_lag{channel="email"})', series) == [
        "stream_app_consumer_lag has no label channel"
    ]
    # Counters are served with _total, histograms as _bucket/_sum/_count, Faust's with its prefix.
    assert {"stream_app_notifications_total", "stream_app_mc_call_seconds_bucket"} <= set(series)
    assert "stream_app_notifications" not in series and "faust_messages_received_total" in series


def test_the_alert_names_are_the_built_in_rule_names() -> None:
    names = [name for name, _ in alert_rules()]
    assert len(names) == len(set(names)), f"an alert name twice: {names}"
    assert sorted(names) == sorted(ops_module("alerts").RULES)


def test_the_dashboard_uses_the_datasource_variable_and_shows_every_rule() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"] and all(t["datasource"] == datasource for t in panel["targets"]), panel[
            "title"
        ]
    # The alerts panel evaluates each rule's own expression (no copy to drift from alerts.yml).
    (alerts_panel,) = [p for p in panels(board) if p["type"] == "state-timeline"]
    shown = {t["refId"]: normalized(t["expr"]) for t in alerts_panel["targets"]}
    assert shown == {name: f"count({normalized(expr)}) or vector(0)" for name, expr in alert_rules()}
