"""The monitoring people install: deploy/prometheus/ and deploy/grafana/.

Every metric an alert rule or the dashboard queries must be one the service exports
(``sync_service/control/metrics.py``), with the suffix its type gives the series. When Debian's
``prometheus`` package is installed, ``promtool`` also checks the scrape config and the rules
and runs the rules' unit tests (``deploy/prometheus/alerts_test.yml``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sync_service.control.metrics import Metrics

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the rule files")

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sync-service.json"

# Series Prometheus records itself for every scrape target, not exported by anyone.
PROMETHEUS_OWN = {"up"}

# The series each metric type exposes, by suffix (prometheus_client also exports `_created`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}

# PromQL words that look like identifiers but name no series.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip

_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)  # label matchers, and Grafana's {{label}} never reach here
    text = _RANGE.sub("", text)  # [5m], [30m:1m], [$__rate_interval]
    text = _GROUPING.sub("", text)  # by (job, le) lists label names
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name in KEYWORDS:  # a function or aggregation: rate(, sum (
            continue
        names.add(name)
    return names


def exported_series() -> set[str]:
    """Every series name the service's registry can expose."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def _targets(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = [node] if "expr" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for item in node for t in _targets(item)]
    return []


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {f"{t.get('refId')}: {t['expr']}": t["expr"] for t in _targets(dashboard["panels"])}
    for variable in dashboard["templating"]["list"]:  # label_values(metric, label)
        query = variable["definition"]
        inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        assert inner, f"unexpected variable query {query!r}"
        exprs[f"${variable['name']}"] = inner.group(1)
    return exprs


# -- the parser itself --------------------------------------------------------------------------


def test_the_parser_finds_series_and_nothing_else() -> None:
    expr = """
        histogram_quantile(0.95, sum by (job, le) (rate(sync_lag_seconds_bucket{a="b c"}[15m])))
          > 300 and on (job) max without (instance) (sync_backlog_tasks offset 1h)
          unless deriv(max by (job) (sync_dead_letters)[30m:1m]) > 1e3
          or up{job=~"x|y"} == 0 or vector(0) * time()
    """
    assert metric_names(expr) == {
        "sync_lag_seconds_bucket",
        "sync_backlog_tasks",
        "sync_dead_letters",
        "up",
    }


def test_exported_series_carry_their_type_suffixes() -> None:
    series = exported_series()
    assert {"sync_tasks_finished_total", "sync_lag_seconds_bucket", "sync_backlog_tasks"} <= series
    assert "sync_tasks_finished" not in series and "sync_lag_seconds" not in series


# -- the rules and the dashboard use only what the service exports --------------------------------


@pytest.mark.parametrize("source", ["rules", "dashboard"], ids=["alerts.yml", "sync-service.json"])
def test_every_metric_queried_is_exported(source: str) -> None:
    exprs = rule_expressions() if source == "rules" else dashboard_expressions()
    assert exprs
    known = exported_series() | PROMETHEUS_OWN
    for where, expr in exprs.items():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        unknown = names - known
        assert not unknown, f"{where} queries series the service does not export: {unknown}"


def test_the_rules_cover_the_conditions_operators_asked_for() -> None:
    rules = rule_expressions()
    wanted = {
        "sync lag": "sync_lag_seconds_bucket",
        "backlog growing": "sync_backlog_tasks",
        "dead letters growing": "sync_dead_letters",
        "upstream down": "sync_upstream_up",
        "upstream failing": "sync_upstream_requests_total",
        "state store down": "sync_state_store_up",
        "service down": "up",
        "held sweep": "sync_watch_held_sweeps_total",
    }
    used = set().union(*(metric_names(expr) for expr in rules.values()))
    for condition, metric in wanted.items():
        assert metric in used, f"no rule for {condition} ({metric})"
    assert any('job="qdrant"' in expr for expr in rules.values()), "no rule for Qdrant down"


def test_every_dashboard_panel_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


# -- promtool, when Debian's prometheus package installed it --------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return subprocess.run(
        [binary, *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "rules", "alerts.yml"),
        # --syntax-only: the token files exist only where Prometheus runs (/run/secrets)
        ("check", "config", "--syntax-only", "prometheus.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool_accepts_the_files(args: tuple[str, ...]) -> None:
    result = _promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
