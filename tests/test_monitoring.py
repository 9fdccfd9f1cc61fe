"""Monitoring: the forecast log, accuracy/drift/outages on real counts, gauges, alerts, dashboards, the report.

Forecasts to score are seasonal-naive (same hour last week) on the bundled real Melbourne sample, logged
through the real ``ForecastLog``; outages and drift are injected into copies of the real counts.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from cityscale import raw_zone, registry, storage
from cityscale.cli.main import app
from cityscale.config import Settings
from cityscale.forecasting.service import ForecastBatch
from cityscale.ingestion.run import ingest_snapshot
from cityscale.monitoring import forecast_log
from cityscale.monitoring.drift import drift_table
from cityscale.monitoring.forecast_log import ForecastLog, batch_rows, write_part
from cityscale.monitoring.outages import outage_table
from cityscale.monitoring.report import SECTIONS, to_html
from cityscale.monitoring.run import compute, gauges, monitor, read_tables

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helmfile.d" / "charts" / "cityscale-platform"
AS_OF = pd.Timestamp("2022-09-01")  # a clean week in the sample: no outage, no drift
SETTINGS = Settings()


def snaive_batch(wide: pd.DataFrame, origin: pd.Timestamp, horizon: int = 24) -> ForecastBatch:
    """Seasonal-naive forecasts (same hour one week before) with a +-20% band, as the server would return."""
    hours = pd.date_range(origin - pd.Timedelta(hours=168), periods=horizon, freq="h")
    p50 = np.nan_to_num(wide.reindex(hours).to_numpy().T, nan=0.0)
    values = np.stack([p50 * 0.8, p50, p50 * 1.2], axis=-1).astype(np.float32)
    targets = [f"{origin + pd.Timedelta(hours=h):%Y-%m-%dT%H:%M:%S}" for h in range(horizon)]
    times = np.array([targets] * len(wide.columns), dtype=object)
    return ForecastBatch(list(wide.columns), [origin] * len(wide.columns), [0.1, 0.5, 0.9], values, times)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A raw zone of Jun-Aug 2022 (real counts) and a forecast log of 6-hourly seasonal-naive forecasts."""
    uri = str(tmp_path_factory.mktemp("monitoring") / "store")
    ingest_snapshot(SETTINGS.sample_data, uri, start="2022-06-01", end="2022-09-01", settings=SETTINGS)
    wide = raw_zone.read(uri).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
    served = pd.Timestamp.now(tz="UTC")
    frames = [batch_rows(snaive_batch(wide, o), "0001", served) for o in pd.date_range("2022-08-22", AS_OF, freq="6h")]
    # The same forecasts served again later with other values: only the last copy may count.
    stale = batch_rows(snaive_batch(wide, pd.Timestamp("2022-08-28")), "0001", served - pd.Timedelta(hours=1))
    stale[["p10", "p50", "p90"]] *= 3
    write_part(uri, pd.concat([*frames, stale], ignore_index=True))
    return uri


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- forecast log -----------------------------------------------------------------------------------


def test_forecast_log_batches_rows_and_flushes_on_close(tmp_path, store) -> None:
    wide = raw_zone.read(store).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
    log = ForecastLog(str(tmp_path), max_batches=100, flush_rows=10**6, flush_interval_s=60)
    batches = [snaive_batch(wide, o) for o in pd.date_range("2022-08-30", periods=8, freq="6h")]
    assert all(log.record(b, "0007") for b in batches)
    assert not list(tmp_path.rglob("*.parquet")), "nothing is written before a flush is due"
    log.close()
    parts = sorted(tmp_path.rglob("part-*.parquet"))
    assert [p.parent.name for p in parts] == ["date=2022-08-30", "date=2022-08-31"], "one part per origin date"
    rows = forecast_log.read(str(tmp_path))
    assert len(rows) == 8 * len(wide.columns) * 24 and set(rows["model_version"]) == {"0007"}
    first = rows[(rows["origin"] == batches[0].starts[0]) & (rows["sensor_id"] == batches[0].sensor_ids[1])]
    first = first.sort_values("horizon")
    np.testing.assert_allclose(first["p50"], batches[0].quantile(0.5)[1])
    np.testing.assert_allclose(first["p90"], batches[0].quantile(0.9)[1])
    assert (first["target_time"] - first["origin"] == pd.to_timedelta(first["horizon"], unit="h")).all()
    assert not log.record(batches[0], "0007"), "a closed log accepts nothing"


def test_forecast_log_writes_what_is_queued_when_the_process_exits(tmp_path, store) -> None:
    """A server that exits (SIGTERM -> normal interpreter exit) without closing its log still writes it, at exit.

    By then Python refuses new thread-pool work; pyarrow converts a frame with many rows in a thread pool, so
    the last flush must not depend on one (it failed exactly so in a benchmark's model server).
    """
    script = f"""
import pandas as pd
from cityscale import raw_zone
from cityscale.monitoring.forecast_log import ForecastLog
from tests.test_monitoring import snaive_batch
wide = raw_zone.read({store!r}).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
log = ForecastLog({str(tmp_path)!r}, max_batches=100, flush_rows=10**6, flush_interval_s=600)
for origin in pd.date_range("2022-08-30", periods=8, freq="6h"):
    assert log.record(snaive_batch(wide, origin), "0007")
"""  # no close(): the log's own exit hook must write the queued rows
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    wide = raw_zone.read(store).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
    assert len(forecast_log.read(str(tmp_path))) == 8 * len(wide.columns) * 24


def test_forecast_log_flushes_on_its_interval(tmp_path, store) -> None:
    wide = raw_zone.read(store).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
    log = ForecastLog(str(tmp_path), max_batches=10, flush_rows=10**6, flush_interval_s=0.2)
    try:
        log.record(snaive_batch(wide, pd.Timestamp("2022-08-30")), "0001")
        deadline = time.monotonic() + 10
        while not list(tmp_path.rglob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.rglob("part-*.parquet")), "the interval flush wrote the batch without close()"
    finally:
        log.close()


def test_forecast_log_never_blocks_on_a_slow_store_and_counts_drops(tmp_path, store, monkeypatch) -> None:
    wide = raw_zone.read(store).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
    batch = snaive_batch(wide, pd.Timestamp("2022-08-30"))
    release = threading.Event()

    def slow_write_part(uri: str, rows: pd.DataFrame) -> list[str]:  # a store that hangs until released
        release.wait(30)
        return write_part(uri, rows)

    monkeypatch.setattr(forecast_log, "write_part", slow_write_part)
    dropped_before = counter("cityscale_forecast_log_dropped_batches_total")
    log = ForecastLog(str(tmp_path), max_batches=4, flush_rows=1, flush_interval_s=60)
    try:
        took, accepted = [], []
        for _ in range(40):
            start = time.perf_counter()
            accepted.append(log.record(batch, "0001"))
            took.append(time.perf_counter() - start)
        assert max(took) < 1.0, f"record() blocked for {max(took):.3f} s"  # a blocking put would wait 30 s
        n_dropped = accepted.count(False)
        assert 0 < n_dropped < 40
        assert counter("cityscale_forecast_log_dropped_batches_total") - dropped_before == n_dropped
    finally:
        release.set()
        log.close()
    assert len(forecast_log.read(str(tmp_path))) == accepted.count(True) * len(batch.sensor_ids) * 24


def test_forecast_log_write_failure_is_counted_not_raised(tmp_path, store) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store should be")
    wide = raw_zone.read(store).pivot_table(index="timestamp_local", columns="sensor_id", values="count")
    errors_before = counter("cityscale_forecast_log_write_errors_total")
    log = ForecastLog(str(blocker), max_batches=4, flush_rows=1, flush_interval_s=60)
    assert log.record(snaive_batch(wide, pd.Timestamp("2022-08-30")), "0001")
    log.close()
    assert counter("cityscale_forecast_log_write_errors_total") - errors_before == 1
    assert blocker.read_text() == "a file where the store should be"


def test_predictor_logs_served_forecasts(trained_workdir, tmp_path) -> None:
    from serving.predictor import CityScalePredictor

    # Without the forecasts that servers of other tests logged into the shared store.
    shutil.copytree(
        trained_workdir / "store", tmp_path / "store", ignore=shutil.ignore_patterns(forecast_log.LOG_PREFIX)
    )
    settings = Settings(
        workdir=tmp_path, registry_uri=str(trained_workdir / "registry"), forecast_log_flush_interval_s=60
    )
    predictor = CityScalePredictor(settings)
    predictor.load()
    out = predictor.answer({"instances": [{"sensor_id": "FliS_T", "forecast_start": "2022-10-20T00:00:00"}]})
    predictor.forecast_log.close()
    rows = forecast_log.read(settings.resolved_store_uri)
    assert len(rows) == 24 and set(rows["sensor_id"]) == {"FliS_T"}
    assert set(rows["model_version"]) == {predictor.model_version}
    np.testing.assert_allclose(rows.sort_values("horizon")["p50"], out["predictions"][0]["p50"], atol=0.01)
    assert CityScalePredictor(Settings(workdir=tmp_path, forecast_log_enabled=False)).forecast_log is None


# --- accuracy ---------------------------------------------------------------------------------------


def test_accuracy_matches_a_brute_force_computation(store) -> None:
    result = compute(store, SETTINGS, as_of=AS_OF)
    raw = raw_zone.read(store)
    actual = {(r.sensor_id, r.timestamp_local): float(r.count) for r in raw.itertuples()}
    series = {s: f.set_index("timestamp_local")["count"].astype(float) for s, f in raw.groupby("sensor_id")}
    rows = (
        forecast_log.read(store)
        .sort_values("served_at")
        .drop_duplicates(["model_version", "sensor_id", "origin", "target_time"], keep="last")
    )
    window = rows[(rows["target_time"] >= AS_OF - pd.Timedelta(days=7)) & (rows["target_time"] < AS_OF)]
    for sensor in ["FliS_T", "WatCit_T", "488Mac_T"]:
        abs_err = total = inside = n = 0.0
        pair_ratio = []
        for (_, origin), pair in window[window["sensor_id"] == sensor].groupby(["sensor_id", "origin"]):
            errs = []
            for r in pair.itertuples():
                y = actual.get((sensor, r.target_time))
                if y is None:
                    continue
                abs_err += abs(r.p50 - y)
                total += y
                inside += r.p10 <= y <= r.p90
                n += 1
                errs.append(abs(r.p50 - y))
            history = series[sensor][series[sensor].index < origin]
            lagged = history.shift(freq=pd.Timedelta(hours=24)).reindex(history.index)
            scale = (history - lagged).abs().dropna().mean()
            if errs and scale > 0:
                pair_ratio.append(np.mean(errs) / scale)
        got = result.by_sensor.set_index("sensor_id").loc[sensor]
        assert got["n_hours"] == n
        assert got["wape"] == pytest.approx(abs_err / total, rel=1e-6)
        assert got["coverage"] == pytest.approx(inside / n, rel=1e-9)
        assert got["mase"] == pytest.approx(np.mean(pair_ratio), rel=1e-5)
    overall = result.by_sensor.set_index("sensor_id").loc["all"]
    assert overall["n_hours"] == result.by_sensor["n_hours"].iloc[1:].sum()
    daily = result.daily[result.daily["sensor_id"] == "all"]
    assert len(daily) == 7 and daily["n_hours"].sum() == overall["n_hours"]


# --- outages and drift on real counts ----------------------------------------------------------------


def outages_of(raw: pd.DataFrame) -> pd.DataFrame:
    return outage_table(
        raw,
        AS_OF,
        24,
        28,
        SETTINGS.monitor_zero_run_hours,
        SETTINGS.monitor_zero_expected_min,
        SETTINGS.monitor_flatline_hours,
    )


def test_injected_outages_are_detected_and_clean_counts_are_not_flagged(store) -> None:
    raw = raw_zone.read(store)
    assert outages_of(raw).empty, "the clean week has no outage"
    broken = raw.copy()
    last_day = broken["timestamp_local"] >= AS_OF - pd.Timedelta(hours=20)
    broken.loc[last_day & (broken["sensor_id"] == "FliS_T"), "count"] = 0
    flat = (broken["timestamp_local"] >= AS_OF - pd.Timedelta(hours=10)) & (broken["sensor_id"] == "Swa295_T")
    broken.loc[flat, "count"] = 57
    broken = broken[
        ~((broken["sensor_id"] == "ElFi_T") & (broken["timestamp_local"] >= AS_OF - pd.Timedelta(hours=30)))
    ]
    found = outages_of(broken)
    assert set(zip(found["sensor_id"], found["kind"], strict=True)) == {
        ("FliS_T", "stuck_at_zero"),
        ("Swa295_T", "flatline"),
        ("ElFi_T", "missing"),
    }
    assert found.set_index("sensor_id").loc["Swa295_T", "hours"] == 10


def test_injected_drift_is_detected_and_clean_counts_are_not_flagged(store) -> None:
    raw = raw_zone.read(store)
    window_start = AS_OF - pd.Timedelta(days=7)
    clean = drift_table(raw, window_start, AS_OF, 28, SETTINGS.monitor_psi_threshold)
    assert len(clean) == 12 and not clean["drifted"].any(), clean
    doubled = raw.copy()
    recent = (doubled["timestamp_local"] >= window_start) & doubled["sensor_id"].isin(["FliS_T", "KenMac_T"])
    doubled.loc[recent, "count"] *= 2
    drifted = drift_table(doubled, window_start, AS_OF, 28, SETTINGS.monitor_psi_threshold).set_index("sensor_id")
    assert set(drifted.index[drifted["drifted"]]) == {"FliS_T", "KenMac_T"}
    assert drifted.loc["FliS_T", "level_ratio"] == pytest.approx(
        2 * clean.set_index("sensor_id").loc["FliS_T", "level_ratio"]
    )


# --- the run, its decision and its gauges -------------------------------------------------------------


def test_retrain_decision_follows_the_thresholds_and_the_production_model(store, tmp_path) -> None:
    calm = compute(store, SETTINGS, as_of=AS_OF)
    assert not calm.retrain and calm.reasons == [] and 0 < calm.summary["wape"] < SETTINGS.monitor_retrain_wape
    strict = compute(store, Settings(monitor_retrain_wape=calm.summary["wape"] / 2), as_of=AS_OF)
    assert strict.retrain and "WAPE" in strict.reasons[0]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "contract.json").write_text("{}")
    regs = str(tmp_path / "registry")
    version = registry.register(model_dir, regs, SETTINGS.model_name, {"wape": calm.summary["wape"] / 2}, "card")
    registry.set_alias(regs, SETTINGS.model_name, "production", version)
    degraded = compute(store, SETTINGS, registry_uri=regs, as_of=AS_OF)
    assert degraded.retrain and "backtest WAPE" in degraded.reasons[0]


class FakePushgateway(BaseHTTPRequestHandler):
    """Records what push_to_gateway sends (no Pushgateway binary is installable here)."""

    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_monitor_writes_tables_textfile_and_pushes_gauges(store) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePushgateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = monitor(store, SETTINGS, as_of=AS_OF, pushgateway_url=f"127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    text = (Path(store) / "monitoring" / "metrics.prom").read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("cityscale_monitor_wape", (("sensor_id", "all"),))] == pytest.approx(result.summary["wape"])
    assert samples[("cityscale_monitor_retrain_needed", ())] == 0
    assert samples[("cityscale_monitor_sensors_in_outage", ())] == 0
    ((method, path, body),) = FakePushgateway.received
    assert method == "PUT" and path == "/metrics/job/cityscale-monitoring"
    assert b'cityscale_monitor_wape{sensor_id="all"}' in body
    again = read_tables(storage.join(store, "monitoring", "latest"))
    assert again.summary == json.loads(json.dumps(result.summary))
    pd.testing.assert_frame_equal(again.by_sensor, result.by_sensor)


# --- report ------------------------------------------------------------------------------------------


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data) -> None:
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def check_report(page: str) -> None:
    parser = _Images()
    parser.feed(page)
    assert len(parser.images) == len(SECTIONS)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,"), "self-contained: no external image"
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.format == "PNG" and image.width > 300 and image.height > 150
    assert {*SECTIONS, "Accuracy by sensor", "Drift", "Outages"} <= set(parser.headings)
    assert "http://" not in page and "https://" not in page


def test_cli_monitor_and_report_render_a_self_contained_page(store, tmp_path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["monitor", "--store", store, "--as-of", "2022-09-01", "--pushgateway", ""])
    assert done.exit_code == 0, done.output
    assert "no retraining needed" in done.output
    out = tmp_path / "report.html"
    done = runner.invoke(app, ["report", "--store", store, "--out", str(out)])
    assert done.exit_code == 0, done.output
    check_report(out.read_text())
    (run_dir,) = (Path(store) / "monitoring" / "runs").iterdir()
    done = runner.invoke(app, ["report", "--run", str(run_dir), "--out", str(tmp_path / "run.html")])
    assert done.exit_code == 0 and (tmp_path / "run.html").stat().st_size > 10_000
    bad = runner.invoke(app, ["report", "--store", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and "no monitoring run" in bad.output and not (tmp_path / "x.html").exists()
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 2
    assert runner.invoke(app, ["monitor", "--store", str(tmp_path / "empty")]).exit_code == 2


def test_report_marks_outages_and_renders_without_scored_forecasts(tmp_path) -> None:
    uri = str(tmp_path / "store")
    ingest_snapshot(SETTINGS.sample_data, uri, start="2022-08-01", end="2022-09-01", settings=SETTINGS)
    result = compute(uri, SETTINGS, as_of=AS_OF)  # no forecast log at all
    assert result.summary["n_hours"] == 0 and not result.retrain
    check_report(to_html(result))


# --- alerts and dashboards ----------------------------------------------------------------------------


def known_metrics() -> set[str]:
    """Metric series the rules and dashboards may use: ours (serving + monitoring) and the platform's."""
    import serving.metrics  # noqa: F401  (registers the serving metrics)
    from cityscale.monitoring.run import MonitoringResult

    names = {s.name for m in REGISTRY.collect() for s in m.samples if s.name.startswith("cityscale_")}
    names |= {
        m.name + suffix
        for m in REGISTRY.collect()
        if m.name.startswith("cityscale_")
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    empty = MonitoringResult(
        {"sensors_in_outage": 0, "data_lag_hours": 0, "as_of": "2022-09-01", "retrain": False},
        *(
            pd.DataFrame(columns=c)
            for c in (
                ["sensor_id", "wape", "mase", "coverage", "n_hours"],
                ["date"],
                ["sensor_id", "psi", "drifted"],
                ["sensor_id", "kind"],
                ["sensor_id", "actual", "p50", "target_time", "horizon"],
            )
        ),
    )
    names |= {m.name for m in gauges(empty).collect()}
    return names


def metric_names(expr) -> set[str]:
    import promql_parser

    if isinstance(expr, promql_parser.VectorSelector):
        return {expr.name}
    found: set[str] = set()
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(expr, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            found |= metric_names(child)
    for arg in getattr(expr, "args", None) or []:
        found |= metric_names(arg)
    return found


# Exported by the platform, not by CityScale code: kube-state-metrics, KServe's request histograms, and the
# standard process metrics of every exporter (the Pushgateway's start time gates the stale-monitoring alert).
PLATFORM_METRICS = re.compile(
    r"^(kube_|up$|process_start_time_seconds$|request_(predict|preprocess|postprocess|explain)_seconds_)"
)


def check_promql(expr: str, known: set[str]) -> None:
    import promql_parser

    names = metric_names(promql_parser.parse(expr))
    unknown = {n for n in names if n not in known and not PLATFORM_METRICS.match(n)}
    assert names and not unknown, f"{expr}: unknown metrics {unknown}"


@pytest.fixture(scope="module")
def prometheus_rule(tmp_path_factory) -> dict:
    sys.path.insert(0, str(REPO / "tests" / "infra"))
    from infra_testlib import find, load_docs, run_checks

    out = tmp_path_factory.mktemp("rendered")
    proc = run_checks("render", "--out", str(out))  # the chart through Helm's engine (skips without .venv-lint)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rule,) = find(load_docs(out / "dev" / "cityscale-platform.yaml"), "PrometheusRule")
    return rule


def test_alert_rules_parse_reference_known_metrics_and_match_the_crd_schema(prometheus_rule) -> None:
    import promql_parser

    schema = json.loads((REPO / "tests/infra/schemas/monitoring.coreos.com_prometheusrules.json").read_text())
    jsonschema.validate(prometheus_rule, schema)
    rules = {r["alert"]: r for g in prometheus_rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "CityScaleForecastErrorRate",
        "CityScaleForecastLatencySLO",
        "CityScaleForecastAccuracyDegraded",
        "CityScaleStaleData",
        "CityScaleSensorOutage",
    } <= set(rules)
    known = known_metrics()
    for name, rule in rules.items():
        check_promql(rule["expr"], known)
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning"} and rule["annotations"]["description"]
        assert "{{ ." not in json.dumps(rule), f"{name}: unrendered Helm template"
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(cityscale_forecast_requests_total[5m])")  # the check can fail
    with pytest.raises(AssertionError):
        check_promql("cityscale_monitor_wapee > 1", known)


def test_dashboards_reference_known_metrics_with_unique_ids() -> None:
    known = known_metrics()
    uids = set()
    paths = sorted((CHART / "dashboards").glob("*.json"))
    assert "cityscale-monitoring.json" in {p.name for p in paths}
    for path in paths:
        dash = json.loads(path.read_text())
        uids.add(dash["uid"])
        variables = {v["name"] for v in dash["templating"]["list"]}
        assert "datasource" in variables
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                check_promql(target["expr"].replace("$sensor", ".*"), known)
    assert len(uids) == len(paths)
    monitoring = json.loads((CHART / "dashboards" / "cityscale-monitoring.json").read_text())
    titles = " ".join(p["title"] for p in monitoring["panels"])
    assert "Accuracy over time" in titles and "Traffic now vs forecast per sensor" in titles and "latency" in titles


def test_chart_values_schema_accepts_the_new_alert_thresholds() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    values["alerts"]["accuracyWapeMax"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)


# --- the KFP pipeline under kfp.local -------------------------------------------------------------------


@pytest.mark.e2e
def test_monitoring_pipeline_runs_under_kfp_local_and_skips_retraining_when_healthy(store, tmp_path) -> None:
    from kfp import local

    from pipelines.monitoring import PIPELINE_NAME, monitoring_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    monitoring_pipeline(store_uri=store, registry_uri=str(tmp_path / "registry"), as_of="2022-09-01")
    (run_dir,) = tmp_path.glob(f"{PIPELINE_NAME}-*")
    check_report((run_dir / "monitor" / "report").read_text())
    assert "no retraining needed" in (run_dir / "monitor" / "summary").read_text()
    assert not (run_dir / "ingest").exists(), "the retraining branch did not run"
