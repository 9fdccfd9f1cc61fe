"""Prometheus metrics of the CityScale predictor and transformer.

kserve's REST server exposes ``GET /metrics`` from prometheus_client's default registry, so metrics
defined here appear there with no extra server (the cluster's PodMonitor scrapes that port). kserve's own
histograms (``request_predict_seconds`` ...) say how long each handler took; these add what an operator of
a forecast service needs on top: outcomes by status, end-to-end latency per protocol, batch sizes, time
spent in the feature platform and which model version is live.

Label sets stay small and bounded (model, version, protocol, status): sensor ids never become labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge, Histogram

from cityscale.forecasting.service import HistorySource

# Latency buckets from 0.5 ms (a warm in-memory forecast) to 2.5 s (a feature server timing out).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUESTS = Counter(
    "cityscale_forecast_requests",
    "Forecast requests by outcome: ok, invalid (400 / INVALID_ARGUMENT: the client's fault) or error (500).",
    ["model_name", "model_version", "protocol", "status"],
)
LATENCY = Histogram(
    "cityscale_forecast_latency_seconds",
    "Time inside the model handler per forecast request (validation, features, model, response).",
    ["model_name", "protocol"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SENSORS = Histogram(
    "cityscale_forecast_batch_sensors",
    "Sensors per forecast request (one request may forecast up to max_batch_sensors).",
    ["model_name"],
    buckets=BATCH_BUCKETS,
)
COALESCED_REQUESTS = Histogram(
    "cityscale_forecast_coalesced_requests",
    "Requests answered by one forecast call: those that waited while the forecast threads were busy.",
    ["model_name"],
    buckets=BATCH_BUCKETS,
)
FEATURE_FETCH = Histogram(
    "cityscale_feature_fetch_seconds",
    "Time to fetch online history from the history source (raw zone in memory, Feast or Tecton).",
    ["model_name", "source", "call"],
    buckets=LATENCY_BUCKETS,
)
MODEL_INFO = Gauge(
    "cityscale_model_info",
    "1 for the model version this process serves (0 for versions it served before a reload).",
    ["model_name", "model_version", "role"],
)
FORECAST_CACHE_ROWS = Counter(
    "cityscale_forecast_cache_rows",
    "Forecast rows (one per sensor asked) by source: hit (answered from the forecast cache) or miss (the model ran).",
    ["model_name", "result"],
)
COMPILED_TREES = Gauge(
    "cityscale_compiled_trees",
    "How the boosters' trees run: 0 in LightGBM, 1 compiled to native code, 2 compiled with inlining.",
    ["model_name"],
)


def count_cache_rows(model_name: str) -> Callable[[int, int], None]:
    """The ``on_rows(hits, misses)`` callback of a ``serving.caches.ForecastCache``, counting into the metric."""
    hit, miss = FORECAST_CACHE_ROWS.labels(model_name, "hit"), FORECAST_CACHE_ROWS.labels(model_name, "miss")

    def on_rows(hits: int, misses: int) -> None:
        hit.inc(hits)
        miss.inc(misses)

    return on_rows


def set_model_version(model_name: str, version: str, role: str = "predictor") -> None:
    """Mark ``version`` as the one served, and every version served before as not."""
    for metric in list(MODEL_INFO.collect()):
        for sample in metric.samples:
            labels = sample.labels
            if labels.get("model_name") == model_name and labels.get("role") == role:
                MODEL_INFO.labels(**labels).set(0)
    MODEL_INFO.labels(model_name=model_name, model_version=version, role=role).set(1)


@contextmanager
def observe_request(model_name: str, version: str, protocol: str) -> Iterator[dict[str, str]]:
    """Time one request and count it by status; the body sets ``state["status"]`` on client errors.

    Any exception that escapes and was not marked ``invalid`` counts as ``error`` (what kserve answers 500).
    """
    state = {"status": "ok"}
    start = time.perf_counter()
    try:
        yield state
    except Exception:
        if state["status"] == "ok":
            state["status"] = "error"
        raise
    finally:
        LATENCY.labels(model_name, protocol).observe(time.perf_counter() - start)
        REQUESTS.labels(model_name, version, protocol, state["status"]).inc()


class TimedHistorySource:
    """A ``HistorySource`` wrapper that records each fetch in ``cityscale_feature_fetch_seconds``."""

    def __init__(self, inner: HistorySource, model_name: str):
        self.inner = inner
        self.source = type(inner).__name__
        self._city = FEATURE_FETCH.labels(model_name, self.source, "cities_of")
        self._history = FEATURE_FETCH.labels(model_name, self.source, "history")

    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        start = time.perf_counter()
        try:
            return self.inner.cities_of(sensor_ids)
        finally:
            self._city.observe(time.perf_counter() - start)

    def history(self, sensor_ids: list[str], starts: list[pd.Timestamp], length: int) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.inner.history(sensor_ids, starts, length)
        finally:
            self._history.observe(time.perf_counter() - start)

    def __getattr__(self, name: str):  # e.g. RawZoneHistory.last_hour, FeastHistorySource.url
        return getattr(self.inner, name)
