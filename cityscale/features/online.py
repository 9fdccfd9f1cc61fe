"""Online features for serving: ``HistorySource`` implementations over a feature platform's online API.

The predictor's :class:`cityscale.forecasting.service.ForecastService` asks a ``HistorySource`` for each sensor's city
and for the ``length`` hours before a forecast start. Here that comes from the online store:

- :class:`FeastHistorySource` (default): the Feast feature server's ``POST /get-online-features``;
- :class:`TectonHistorySource` (opt-in): Tecton's FeatureService HTTP API via ``tecton-client``
  (Apache-2.0; imported only when the Tecton backend is configured).

What the online store can serve: it holds each sensor's window *as of its city's freshness hour* (the
hour after the latest materialized count), so it serves forecasts that start at exactly that hour. Any
other start raises ``ForecastRequestError`` saying which start is servable; a client can still send the
history explicitly. Transport failures are the server's problem, not the client's: they raise
:class:`FeatureServiceError` (a 500), never a 400.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import requests

from cityscale.cities import get_city
from cityscale.config import Settings
from cityscale.features.spec import HISTORY_FEATURE, HISTORY_VIEW
from cityscale.forecasting.service import ForecastRequestError, HistorySource

CITY_REF = "sensor_metadata:city"
HISTORY_REF = f"{HISTORY_VIEW}:{HISTORY_FEATURE}"


class FeatureServiceError(RuntimeError):
    """The online feature service failed or answered something unusable (not the request's fault)."""


def _as_of_local(event_ts: str | pd.Timestamp, city: str) -> pd.Timestamp:
    stamp = pd.Timestamp(event_ts)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    return stamp.tz_convert(get_city(city).timezone).tz_localize(None)


def _check_window(sensor: str, start: pd.Timestamp, as_of: pd.Timestamp, values: Any, length: int) -> np.ndarray:
    if start != as_of:
        raise ForecastRequestError(
            f"the online store holds sensor {sensor!r} as of {as_of:%Y-%m-%dT%H:%M:%S} (the hour after its latest "
            f"materialized count), so it serves forecast_start {as_of:%Y-%m-%dT%H:%M:%S} only, not "
            f"{start:%Y-%m-%dT%H:%M:%S}; send the history explicitly or rebuild the feature store"
        )
    window = np.asarray(values, dtype=np.float32)
    if window.ndim != 1 or len(window) < length:
        raise FeatureServiceError(f"online window of {sensor!r} has {window.shape} values, need {length}")
    window = window[-length:].copy()
    window[window < 0] = np.nan  # -1 marks a missing hour
    return window


class FeastHistorySource(HistorySource):
    """Recent history from the Feast feature server (``POST /get-online-features``).

    Cities are static metadata, so they are cached per sensor (``city_ttl_s``); windows are fetched for
    the whole batch in one request per forecast.
    """

    def __init__(self, url: str, timeout_s: float = 2.0, city_ttl_s: float = 300.0):
        if not url:
            raise ValueError("no feature server URL (set CITYSCALE_FEATURE_SERVER_URL or FEAST_FEATURE_SERVER_URL)")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.city_ttl_s = city_ttl_s
        self._session = requests.Session()
        self._cities: dict[str, tuple[float, str | None]] = {}

    def _get(self, features: list[str], sensor_ids: list[str]) -> dict[str, tuple[list[Any], list[str], list[str]]]:
        body = {"features": features, "entities": {"sensor_id": sensor_ids}, "full_feature_names": False}
        try:
            resp = self._session.post(f"{self.url}/get-online-features", json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise FeatureServiceError(f"feature server {self.url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise FeatureServiceError(f"feature server {self.url} answered {resp.status_code}: {resp.text[:300]}")
        try:
            payload = resp.json()
            names = payload["metadata"]["feature_names"]
            results = payload["results"]
            out = {
                name: (r["values"], r.get("statuses", []), r.get("event_timestamps", []))
                for name, r in zip(names, results, strict=True)
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise FeatureServiceError(f"feature server {self.url} sent an unexpected response: {exc}") from exc
        for feature in features:
            short = feature.split(":")[1]
            if short not in out or len(out[short][0]) != len(sensor_ids):
                raise FeatureServiceError(f"feature server response lacks {feature} for {len(sensor_ids)} sensors")
        return out

    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        now = time.monotonic()
        fresh = {s: hit[1] for s in sensor_ids if (hit := self._cities.get(s)) and now - hit[0] < self.city_ttl_s}
        missing = sorted(set(sensor_ids) - fresh.keys())
        if missing:  # one request for every sensor not cached: a cold batch is one round trip, not one per sensor
            values, statuses, _ = self._get([CITY_REF], missing)["city"]
            for sensor, value, status in zip(missing, values, statuses or [None] * len(missing), strict=True):
                fresh[sensor] = value if status == "PRESENT" and value else None
                self._cities[sensor] = (now, fresh[sensor])
        return [fresh[s] for s in sensor_ids]

    def history(self, sensor_ids: list[str], starts: list[pd.Timestamp], length: int) -> np.ndarray:
        result = self._get([HISTORY_REF], sensor_ids)[HISTORY_FEATURE]
        values, statuses, stamps = result
        out = np.empty((len(sensor_ids), length), dtype=np.float32)
        cities = self.cities_of(sensor_ids)
        for i, (sensor, start) in enumerate(zip(sensor_ids, starts, strict=True)):
            if statuses[i] != "PRESENT" or values[i] is None:
                raise ForecastRequestError(
                    f"the online store has no history window for sensor {sensor!r} (status {statuses[i]}); "
                    "send its history explicitly"
                )
            city = cities[i] or "melbourne"
            out[i] = _check_window(sensor, start, _as_of_local(stamps[i], city), values[i], length)
        return out


class TectonHistorySource(HistorySource):
    """Recent history from Tecton's FeatureService HTTP API (``tecton-client``), for Tecton customers.

    One ``get-features`` call per sensor (the API takes one join-key map per request); the response's
    ``effectiveTime`` metadata says as of when the window holds.
    """

    def __init__(self, url: str, api_key: str, workspace: str, feature_service: str = "sensor_online"):
        from tecton_client import MetadataOptions, TectonClient  # Apache-2.0; only on the opt-in path

        if not (url and api_key and workspace):
            raise ValueError("the Tecton backend needs TECTON_URL, TECTON_API_KEY and TECTON_WORKSPACE")
        self._client = TectonClient(url, api_key=api_key, default_workspace_name=workspace)
        self._options = MetadataOptions(include_names=True, include_data_types=True, include_effective_times=True)
        self.feature_service = feature_service
        self._cities: dict[str, str | None] = {}

    def _features(self, sensor_id: str) -> tuple[dict[str, Any], dict[str, str]]:
        from tecton_client.exceptions import NotFoundError, TectonHttpException

        try:
            resp = self._client.get_features(
                feature_service_name=self.feature_service,
                join_key_map={"sensor_id": sensor_id},
                metadata_options=self._options,
            )
        except NotFoundError as exc:
            raise FeatureServiceError(f"Tecton feature service {self.feature_service!r} not found: {exc}") from exc
        except TectonHttpException as exc:
            raise FeatureServiceError(f"Tecton feature service failed: {exc}") from exc
        except Exception as exc:  # httpx transport errors
            raise FeatureServiceError(f"Tecton feature service unreachable: {exc}") from exc
        values = resp.get_features_dict()
        meta = resp.metadata.get("features", []) if resp.metadata else []
        effective = {m["name"]: m.get("effectiveTime", "") for m in meta}
        return values, effective

    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        for sensor in sensor_ids:  # the API serves one sensor per call
            if sensor not in self._cities:
                values, _ = self._features(sensor)
                self._cities[sensor] = values.get("sensor_metadata.city") or None
        return [self._cities[s] for s in sensor_ids]

    def history(self, sensor_ids: list[str], starts: list[pd.Timestamp], length: int) -> np.ndarray:
        out = np.empty((len(sensor_ids), length), dtype=np.float32)
        name = f"{HISTORY_VIEW}.{HISTORY_FEATURE}"
        for i, (sensor, start) in enumerate(zip(sensor_ids, starts, strict=True)):
            values, effective = self._features(sensor)
            if values.get(name) is None or not effective.get(name):
                raise ForecastRequestError(f"Tecton holds no history window for sensor {sensor!r}")
            city = values.get("sensor_metadata.city") or "melbourne"
            out[i] = _check_window(sensor, start, _as_of_local(effective[name], city), values[name], length)
        return out


def history_source_from_settings(settings: Settings) -> HistorySource:
    """The online history source serving should use: the configured feature platform, or the raw zone.

    With no feature server configured (the embedded default of ``make run``) the predictor keeps reading
    the raw zone directly (``RawZoneHistory``).
    """
    if settings.feature_backend == "tecton":
        return TectonHistorySource(
            settings.tecton_url, settings.tecton_api_key, settings.tecton_workspace, settings.tecton_feature_service
        )
    if settings.feature_server_url:
        return FeastHistorySource(settings.feature_server_url, settings.feature_server_timeout_s)
    from cityscale.forecasting.service import RawZoneHistory

    return RawZoneHistory(settings.resolved_store_uri)
