"""The daily monitoring run: accuracy, drift and outages over the last window, gauges, a retrain decision.

``monitor`` reads the raw zone and the forecast log, computes the tables, decides whether to retrain and
writes everything under ``<store>/monitoring/``:

- ``runs/<as_of>/`` and ``latest/``: the tables as Parquet (``by_sensor``, ``daily``, ``drift``,
  ``outages``, ``joined``) + ``summary.json``; ``cityscale report --store/--run`` renders them;
- ``metrics.prom``: the gauges in the Prometheus text format (node-exporter textfile style), and, when
  ``monitor_pushgateway_url`` is set, the same gauges pushed to the Pushgateway.

Every file is written atomically, and ``latest/`` only after the run's own folder is complete, so a
failed run leaves the previous good ``latest/`` in place.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from cityscale import raw_zone, registry, storage
from cityscale.config import Settings
from cityscale.monitoring import forecast_log
from cityscale.monitoring.accuracy import accuracy_tables, join_actuals
from cityscale.monitoring.drift import drift_table
from cityscale.monitoring.outages import outage_table
from cityscale.panel import Panel

MONITORING_PREFIX = "monitoring"
TABLES = ("by_sensor", "daily", "drift", "outages", "joined")
PUSH_JOB = "cityscale-monitoring"
logger = logging.getLogger(__name__)


@dataclass
class MonitoringResult:
    """What one run found; ``summary`` holds the scalars (window, overall metrics, counts, the decision)."""

    summary: dict
    by_sensor: pd.DataFrame
    daily: pd.DataFrame
    drift: pd.DataFrame
    outages: pd.DataFrame
    joined: pd.DataFrame = field(repr=False)

    @property
    def retrain(self) -> bool:
        return bool(self.summary["retrain"])

    @property
    def reasons(self) -> list[str]:
        return list(self.summary["reasons"])

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics (KFP Metrics artifact, CLI table)."""
        keys = ("wape", "mase", "coverage", "n_hours", "sensors_drifted", "sensors_in_outage", "data_lag_hours")
        return {k: float(self.summary[k]) for k in keys if self.summary.get(k) is not None}


def _production_wape(registry_uri: str, model_name: str) -> float | None:
    """The backtest WAPE the production model was promoted with (None when unknown)."""
    if not registry_uri:
        return None
    try:
        uri, _ = registry.resolve("production", registry_uri, model_name)
        value = storage.read_json(storage.join(uri, "metrics.json")).get("wape")
    except (registry.RegistryError, FileNotFoundError):
        return None
    return float(value) if value is not None else None


def decide(summary: dict, settings: Settings, reference_wape: float | None) -> list[str]:
    """Reasons to retrain (empty = keep the model). Outages are a data problem and never trigger a retrain."""
    reasons = []
    wape, coverage = summary["wape"], summary["coverage"]
    if summary["n_hours"] and np.isfinite(wape):
        if wape > settings.monitor_retrain_wape:
            reasons.append(f"WAPE {wape:.3f} above the limit {settings.monitor_retrain_wape:.3f}")
        if reference_wape and wape > reference_wape * (1 + settings.monitor_retrain_degradation):
            reasons.append(
                f"WAPE {wape:.3f} is more than {settings.monitor_retrain_degradation:.0%} above the production "
                f"model's backtest WAPE {reference_wape:.3f}"
            )
        if np.isfinite(coverage) and coverage < settings.monitor_retrain_coverage_min:
            reasons.append(f"P10-P90 coverage {coverage:.1%} below {settings.monitor_retrain_coverage_min:.0%}")
    if summary["sensors"] and summary["sensors_drifted"] / summary["sensors"] > settings.monitor_retrain_drift_share:
        reasons.append(
            f"{summary['sensors_drifted']} of {summary['sensors']} sensors drifted "
            f"(more than {settings.monitor_retrain_drift_share:.0%})"
        )
    return reasons


def compute(
    store_uri: str, settings: Settings, registry_uri: str = "", as_of: pd.Timestamp | None = None
) -> MonitoringResult:
    """All monitoring tables for the window ending at ``as_of`` (default: the hour after the newest count)."""
    raw = raw_zone.read(store_uri)
    if raw.empty:
        raise FileNotFoundError(f"the raw zone at {store_uri} holds no counts: nothing to monitor")
    newest = raw["timestamp_local"].max()
    as_of = pd.Timestamp(as_of) if as_of is not None else newest + pd.Timedelta(hours=1)
    window_start = as_of - pd.Timedelta(days=settings.monitor_window_days)
    raw = raw[raw["timestamp_local"] < as_of]
    if raw.empty:
        raise ValueError(f"the raw zone holds no counts before as_of {as_of}")

    logged = forecast_log.read(store_uri, window_start - pd.Timedelta(days=2), as_of)
    logged = logged[(logged["target_time"] >= window_start) & (logged["target_time"] < as_of)]
    joined = join_actuals(logged, raw)
    by_sensor, daily = accuracy_tables(joined, Panel.from_raw(raw))
    drift = drift_table(raw, window_start, as_of, settings.monitor_drift_reference_days, settings.monitor_psi_threshold)
    outages = outage_table(
        raw,
        as_of,
        settings.monitor_outage_hours,
        settings.monitor_drift_reference_days,
        settings.monitor_zero_run_hours,
        settings.monitor_zero_expected_min,
        settings.monitor_flatline_hours,
    )
    overall = by_sensor.iloc[0].to_dict()
    summary = {
        "as_of": as_of.isoformat(),
        "window_start": window_start.isoformat(),
        "newest_count": newest.isoformat(),
        # Wall-clock age of the newest count (UTC): what the stale-data alert watches.
        "data_lag_hours": round((pd.Timestamp.now(tz="UTC") - raw["timestamp_utc"].max()) / pd.Timedelta(hours=1), 2),
        "model_versions": sorted(joined["model_version"].unique().tolist()),
        "forecast_rows": len(joined),
        **{
            k: (float(overall[k]) if k not in ("n_pairs", "n_hours") else int(overall[k]))
            for k in overall
            if k != "sensor_id"
        },
        "sensors": int(len(drift)),
        "sensors_drifted": int(drift["drifted"].sum()),
        "sensors_in_outage": int(outages["sensor_id"].nunique()),
    }
    reference_wape = _production_wape(registry_uri, settings.model_name)
    summary["reference_wape"] = reference_wape
    summary["reasons"] = decide(summary, settings, reference_wape)
    summary["retrain"] = bool(summary["reasons"])
    return MonitoringResult(summary, by_sensor, daily, drift, outages, joined)


def gauges(result: MonitoringResult) -> CollectorRegistry:
    """The run's results as Prometheus gauges in their own registry (pushed / written, never served)."""
    reg = CollectorRegistry()
    label = ["sensor_id"]
    wape = Gauge(
        "cityscale_monitor_wape", "Rolling WAPE of served P50 forecasts (sensor_id=all: overall).", label, registry=reg
    )
    mase = Gauge("cityscale_monitor_mase", "Rolling MASE of served P50 forecasts.", label, registry=reg)
    coverage = Gauge(
        "cityscale_monitor_coverage", "Share of actuals inside the served P10-P90 band.", label, registry=reg
    )
    scored = Gauge(
        "cityscale_monitor_scored_hours", "Forecast hours with a landed actual in the window.", label, registry=reg
    )
    for row in result.by_sensor.itertuples():
        for gauge, value in ((wape, row.wape), (mase, row.mase), (coverage, row.coverage)):
            if np.isfinite(value):
                gauge.labels(row.sensor_id).set(value)
        scored.labels(row.sensor_id).set(row.n_hours)
    psi = Gauge(
        "cityscale_monitor_psi", "PSI of recent hourly counts against the reference weeks.", label, registry=reg
    )
    drifted = Gauge(
        "cityscale_monitor_sensor_drifted",
        "1 when the sensor's inputs drifted past the threshold.",
        label,
        registry=reg,
    )
    for row in result.drift.itertuples():
        if np.isfinite(row.psi):
            psi.labels(row.sensor_id).set(row.psi)
        drifted.labels(row.sensor_id).set(int(row.drifted))
    outage = Gauge(
        "cityscale_monitor_sensor_outage",
        "1 per sensor and outage kind detected in the last hours.",
        ["sensor_id", "kind"],
        registry=reg,
    )
    for row in result.outages.drop_duplicates(["sensor_id", "kind"]).itertuples():
        outage.labels(row.sensor_id, row.kind).set(1)
    Gauge("cityscale_monitor_sensors_in_outage", "Sensors with any outage.", registry=reg).set(
        result.summary["sensors_in_outage"]
    )
    actual = Gauge(
        "cityscale_monitor_latest_actual", "Count of the newest scored hour per sensor.", label, registry=reg
    )
    forecast = Gauge(
        "cityscale_monitor_latest_forecast_p50", "Served P50 (shortest horizon) for that hour.", label, registry=reg
    )
    scored_rows = result.joined[result.joined["actual"].notna()]
    if len(scored_rows):
        newest = scored_rows.sort_values(["target_time", "horizon"], ascending=[False, True])
        for row in newest.drop_duplicates("sensor_id").itertuples():
            actual.labels(row.sensor_id).set(row.actual)
            forecast.labels(row.sensor_id).set(row.p50)
    as_of = pd.Timestamp(result.summary["as_of"])
    Gauge(
        "cityscale_monitor_data_lag_hours", "Age of the newest count (hours, wall clock) at the run.", registry=reg
    ).set(result.summary["data_lag_hours"])
    Gauge(
        "cityscale_monitor_window_end_timestamp_seconds",
        "End of the monitored window (local time as UTC).",
        registry=reg,
    ).set(as_of.timestamp())
    Gauge(
        "cityscale_monitor_last_run_timestamp_seconds", "When the monitoring run finished (Unix time).", registry=reg
    ).set(datetime.now(UTC).timestamp())
    Gauge("cityscale_monitor_retrain_needed", "1 when the last run asked for retraining.", registry=reg).set(
        int(result.retrain)
    )
    return reg


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def write_tables(result: MonitoringResult, uri: str) -> None:
    """The tables + summary.json under ``uri`` (each file atomically; summary.json last marks it complete)."""
    for name in TABLES:
        storage.write_bytes_atomic(storage.join(uri, f"{name}.parquet"), _parquet(getattr(result, name)))
    storage.write_json(storage.join(uri, "summary.json"), result.summary)


def read_tables(uri: str) -> MonitoringResult:
    """A result written by ``write_tables`` (a run folder, ``latest/``, or a local directory)."""
    summary_uri = storage.join(uri, "summary.json")
    if not storage.exists(summary_uri):
        raise FileNotFoundError(f"{uri} holds no monitoring run (no summary.json): run `cityscale monitor` first")
    frames = {}
    for name in TABLES:
        fs, path = storage.filesystem(storage.join(uri, f"{name}.parquet"))
        with fs.open(path, "rb") as fh:
            frames[name] = pd.read_parquet(fh)
    return MonitoringResult(storage.read_json(summary_uri), **frames)


def monitor(
    store_uri: str,
    settings: Settings,
    registry_uri: str = "",
    as_of: pd.Timestamp | None = None,
    pushgateway_url: str | None = None,
) -> MonitoringResult:
    """Compute, write the run folder, then ``latest/`` and ``metrics.prom``; push the gauges if configured."""
    result = compute(store_uri, settings, registry_uri, as_of)
    root = storage.join(store_uri, MONITORING_PREFIX)
    stamp = pd.Timestamp(result.summary["as_of"]).strftime("%Y%m%dT%H%M")
    write_tables(result, storage.join(root, "runs", stamp))
    write_tables(result, storage.join(root, "latest"))
    reg = gauges(result)
    storage.write_bytes_atomic(storage.join(root, "metrics.prom"), generate_latest(reg))
    url = settings.monitor_pushgateway_url if pushgateway_url is None else pushgateway_url
    if url:
        try:
            push_to_gateway(url, job=PUSH_JOB, registry=reg, timeout=10)
        except OSError as exc:  # the run's files are written; the stale-monitoring alert covers a lost push
            logger.warning("could not push the monitoring gauges to %s: %s", url, exc)
    return result
