"""Every metric the alert rules and Grafana dashboards query is one that something really exports.

An alert on a misspelt metric never fires and a dashboard panel on one stays empty, silently. The names are
read from the rendered PrometheusRule and dashboards, and compared with the names the code exports, read from
the code itself: the ``prometheus_client`` metrics declared in ``cityscale/`` and ``serving/`` (parsed, not
imported) and kserve's own request histograms, plus the gauges ``cityscale/monitoring/run.py`` really pushes
(generated from a monitoring result). Only names from exporters outside this repository are accepted by rule:
kube-state-metrics (``kube_*``) and Prometheus' own per-target series.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from infra_testlib import REPO, find, load_docs
from prometheus_client.parser import text_string_to_metric_families

# Series that exist without any code of ours: `up` per scrape target, and the Pushgateway's own process metric
# that the monitoring staleness alert uses (its Go client exports it).
SCRAPE_SERIES = {"up", "process_start_time_seconds"}
EXTERNAL_PREFIXES = ("kube_",)  # kube-state-metrics, deployed by kube-prometheus-stack (50-monitoring.yaml)
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, label names or label values)."""
    names = set(re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,", expr))  # Grafana variable queries
    expr = re.sub(r"label_values\([^)]*\)", "", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values (and Grafana $variables inside them)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = PROMQL_GROUPING.sub("", expr)  # label lists of by (...), on (...), ...
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if match.group() in PROMQL_KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function call
        names.add(match.group())
    return names


def exposition_names(kind: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for a metric declared as ``kind(name, ...)``."""
    if kind == "Counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "Histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "Summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "Info":
        return {f"{name}_info"}
    return {name}


def declared_metrics(paths: list[Path]) -> dict[str, Path]:
    """Exposed series name -> the file declaring it, for every ``Counter("name", ...)``-style call in ``paths``."""
    out: dict[str, Path] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if func not in METRIC_CLASSES:
                continue
            args = [node.args[0]] if node.args else [k.value for k in node.keywords if k.arg == "name"]
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                assert not any(k.arg in ("namespace", "subsystem") for k in node.keywords), (path, args[0].value)
                for series in exposition_names(func, args[0].value):
                    out[series] = path
    return out


def code_metrics() -> dict[str, Path]:
    """What CityScale's code and the kserve package (its model server's handler histograms) export."""
    ours = [p for d in ("cityscale", "serving") for p in sorted((REPO / d).rglob("*.py"))]
    spec = importlib.util.find_spec("kserve")  # located, not imported (importing kserve parses sys.argv)
    assert spec is not None and spec.submodule_search_locations
    kserve = sorted(Path(spec.submodule_search_locations[0]).rglob("*.py"))
    return declared_metrics(ours + kserve)


def pushed_monitoring_gauges() -> set[str]:
    """The series ``cityscale/monitoring/run.py`` pushes, generated from a (small, made-up) monitoring result."""
    from prometheus_client import generate_latest

    from cityscale.monitoring.run import MonitoringResult, gauges

    result = MonitoringResult(
        summary={
            "sensors_in_outage": 1,
            "as_of": "2022-11-01T00:00:00",
            "data_lag_hours": 2.0,
            "retrain": False,
            "reasons": [],
        },
        by_sensor=pd.DataFrame(
            {
                "sensor_id": ["all", "A"],
                "wape": [0.2, 0.3],
                "mase": [0.9, 1.1],
                "coverage": [0.8, 0.7],
                "n_hours": [48, 24],
            }
        ),
        daily=pd.DataFrame(),
        drift=pd.DataFrame({"sensor_id": ["A"], "psi": [0.1], "drifted": [False]}),
        outages=pd.DataFrame({"sensor_id": ["A"], "kind": ["stuck_zero"]}),
        joined=pd.DataFrame(
            {
                "sensor_id": ["A"],
                "target_time": [pd.Timestamp("2022-10-31T23:00")],
                "horizon": [1],
                "actual": [120.0],
                "p50": [110.0],
            }
        ),
    )
    text = generate_latest(gauges(result)).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def queried_metrics(rendered: Path) -> dict[str, set[str]]:
    """Metric name -> where it is queried (alert name or dashboard panel), over the rendered platform chart."""
    docs = load_docs(rendered / "dev" / "cityscale-platform.yaml")
    where: dict[str, set[str]] = {}
    for rule in (r for doc in find(docs, "PrometheusRule") for g in doc["spec"]["groups"] for r in g["rules"]):
        for name in promql_metric_names(rule["expr"]):
            where.setdefault(name, set()).add(f"alert {rule.get('alert') or rule.get('record')}")
    for cm in find(docs, "ConfigMap"):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
            continue
        for body in cm["data"].values():
            dash = json.loads(body)
            exprs = [(p["title"], t["expr"]) for p in panels(dash["panels"]) for t in p.get("targets", [])]
            for var in dash.get("templating", {}).get("list", []):
                query = var.get("query")
                exprs.append((f"${var['name']}", query.get("query", "") if isinstance(query, dict) else ""))
            for title, expr in exprs:
                for name in promql_metric_names(expr):
                    where.setdefault(name, set()).add(f"dashboard {dash['uid']}: {title}")
    return where


def panels(items: list[dict]) -> list[dict]:
    return [p for item in items for p in [item, *panels(item.get("panels", []))]]


def unexported(queried: dict[str, set[str]], exported: set[str]) -> dict[str, set[str]]:
    return {
        name: where
        for name, where in queried.items()
        if name not in exported and name not in SCRAPE_SERIES and not name.startswith(EXTERNAL_PREFIXES)
    }


@pytest.mark.parametrize(
    "expr, names",
    [
        (
            'histogram_quantile(0.99, sum by (le) (rate(request_predict_seconds_bucket{model_name="x"}[5m]))) > 0.5',
            {"request_predict_seconds_bucket"},
        ),
        ("max by (sensor_id, kind) (cityscale_monitor_sensor_outage) > 0", {"cityscale_monitor_sensor_outage"}),
        (
            '(time() - max(a_ts)) > 26 * 3600 or (absent(a_ts) and on() (time() - max(b{job="j"})) > 1e3)',
            {"a_ts", "b"},
        ),
        ('cityscale_monitor_wape{sensor_id=~"$sensor", sensor_id!="all"}', {"cityscale_monitor_wape"}),
        ("label_values(cityscale_monitor_wape, sensor_id)", {"cityscale_monitor_wape"}),
        ("sum(rate(x_total[5m])) / sum(rate(y_total[5m]))", {"x_total", "y_total"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_code_metrics_are_found() -> None:
    found = code_metrics()
    assert found["cityscale_forecast_requests_total"].name == "metrics.py"
    assert found["cityscale_monitor_last_run_timestamp_seconds"] == REPO / "cityscale/monitoring/run.py"
    assert "request_predict_seconds_bucket" in found  # kserve's model server


def test_every_queried_metric_is_exported(rendered: Path) -> None:
    queried = queried_metrics(rendered)
    assert len(queried) >= 20, sorted(queried)  # the parse found the rules' and panels' metrics
    missing = unexported(queried, set(code_metrics()))
    assert not missing, f"queried but exported by nothing: {missing}"


def test_monitoring_metrics_are_the_gauges_the_monitoring_run_pushes(rendered: Path) -> None:
    """The monitoring rules and panels query exactly what ``gauges()`` generates (the Pushgateway only has those)."""
    pushed = pushed_monitoring_gauges()
    assert "cityscale_monitor_last_run_timestamp_seconds" in pushed
    monitoring = {n: w for n, w in queried_metrics(rendered).items() if n.startswith("cityscale_monitor_")}
    assert {"cityscale_monitor_wape", "cityscale_monitor_last_run_timestamp_seconds"} <= set(monitoring)
    assert not {n: w for n, w in monitoring.items() if n not in pushed}


def test_a_misspelt_metric_is_reported() -> None:
    queried = {"cityscale_monitor_wapes": {"alert X"}, "kube_pod_info": {"alert Y"}, "up": {"alert Z"}}
    assert unexported(queried, set(code_metrics())) == {"cityscale_monitor_wapes": {"alert X"}}
