"""deploy/grafana/flotilla-dashboard.json queries only metrics and labels flotilla/metrics.py defines
(worker processes, their supervisor, dispatchers), and shows every one of them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from flotilla.metrics import DispatcherMetrics, SupervisorMetrics, WorkerMetrics
from tests.deploy.conftest import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "flotilla-dashboard.json"
METRIC = re.compile(r"\bflotilla_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(flotilla_[a-z0-9_]+)\{([^}]*)\}")
BY = re.compile(r"\bby \(([^)]*)\)")
# PromQL function names never start with flotilla_, and Grafana's $-variables are not labels.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def defined_series() -> dict[str, frozenset[str]]:
    """Every series name the processes expose (suffixes included) -> its label names."""
    series: dict[str, frozenset[str]] = {}
    for metrics in (WorkerMetrics(), DispatcherMetrics(), SupervisorMetrics()):
        for metric in vars(metrics).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            # prometheus_client keeps the name without `_total` and the label names privately.
            labels = frozenset(metric._labelnames)
            for suffix in SUFFIXES[str(metric._type)]:
                extra = {"le"} if suffix == "_bucket" else set()
                series[metric._name + suffix] = labels | extra
        for family in _collected_only(metrics):
            for suffix in SUFFIXES[family.type]:
                series[family.name + suffix] = frozenset()
    return series


def _collected_only(metrics: Any) -> list[Any]:
    """Families a custom collector yields at scrape time (no wrapper object in vars())."""
    wrapped = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    return [f for f in metrics.registry.collect() if f.name not in wrapped]


def metric_families() -> set[str]:
    """Names as written in metrics.py (counters with `_total`)."""
    names = set()
    for metrics in (WorkerMetrics(), DispatcherMetrics(), SupervisorMetrics()):
        for metric in vars(metrics).values():
            if isinstance(metric, MetricWrapperBase):
                names.add(metric._name + ("_total" if metric._type == "counter" else ""))
        for family in _collected_only(metrics):
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def query_problems(expr: str, series: dict[str, frozenset[str]]) -> list[str]:
    """Unknown metrics or labels in one PromQL expression."""
    problems = []
    used = METRIC.findall(expr)
    for name in used:
        if name not in series:
            problems.append(f"unknown metric {name}")
    for name, matchers in SELECTOR.findall(expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[!=]~?", matchers):
            if label not in series.get(name, frozenset()):
                problems.append(f"{name} has no label {label}")
    available = frozenset().union(*(series.get(n, frozenset()) for n in used))
    for group in BY.findall(expr):
        for label in (x.strip() for x in group.split(",")):
            if label not in available:
                problems.append(f"by ({label}): no metric here has that label")
    return problems


def test_every_query_uses_real_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    series = defined_series()
    problems = {
        f"{title}: {expr}": p for title, expr in _targets(dashboard)
        if (p := query_problems(expr, series))
    }
    assert problems == {}


def test_every_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    shown = {m for _, expr in _targets(dashboard) for m in METRIC.findall(expr)}
    shown_families = {re.sub(r"_(bucket|sum|count)$", "", m) for m in shown}
    assert metric_families() - shown_families == set()


@pytest.mark.parametrize(
    "expr,problem",
    [
        ("sum(rate(flotilla_invocation_total[5m]))", "unknown metric flotilla_invocation_total"),
        ("flotilla_compiles", "unknown metric flotilla_compiles"),
        ('sum(rate(flotilla_invocations_total{fn="x"}[5m]))', "has no label fn"),
        ("sum by (route) (rate(flotilla_invocations_total[5m]))", "by (route)"),
        ("histogram_quantile(0.9, sum by (le) (rate(flotilla_expired_total[5m])))", "by (le)"),
    ],
)
def test_query_checker_catches(expr: str, problem: str) -> None:
    assert any(problem in p for p in query_problems(expr, defined_series()))


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables or var.startswith("__"), f"{panel['title']}: ${var}"


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
