"""Online forecasting: validate a request, fetch each sensor's recent history, run the model.

This is the whole forecast path behind the KServe predictor, kept free of KServe so it can be
tested directly. Every problem with a request raises ``ForecastRequestError`` with a message
that says what is wrong; the server turns it into a 400 / INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
import pandas as pd

from cityscale import raw_zone
from cityscale.cities import get_city
from cityscale.forecasting.forecaster import Forecaster
from cityscale.panel import Panel

MISSING = -1.0  # marker for a missing hour in an explicit history tensor (JSON has no NaN)


class ForecastRequestError(ValueError):
    """The request cannot be served as sent (the client's fault, not the server's)."""


class HistorySource(Protocol):
    def city_of(self, sensor_id: str) -> str | None: ...

    def history(self, sensor_ids: list[str], starts: list[pd.Timestamp], length: int) -> np.ndarray: ...


class RawZoneHistory:
    """Recent history read from the raw zone into memory once (the embedded default).

    The feature platform's online store replaces this in the cluster; the interface is the same.
    """

    def __init__(self, store_uri: str):
        df = raw_zone.read(store_uri)
        if df.empty:
            raise FileNotFoundError(f"the raw zone at {store_uri} holds no counts")
        self.panel = Panel.from_raw(df)

    def city_of(self, sensor_id: str) -> str | None:
        return self.panel.city_of(sensor_id)

    @property
    def last_hour(self) -> pd.Timestamp:
        return self.panel.index[-1]

    def history(self, sensor_ids: list[str], starts: list[pd.Timestamp], length: int) -> np.ndarray:
        rows = np.array([self.panel.row(s) for s in sensor_ids])
        position = {t: self.panel.position(t) for t in set(starts)}  # requests mostly share one start
        positions = np.array([position[t] for t in starts])
        return self.panel.window(rows, positions - length, length)


@dataclass
class ForecastBatch:
    sensor_ids: list[str]
    starts: list[pd.Timestamp]
    quantiles: list[float]
    values: np.ndarray  # [N, H, Q]
    target_times: np.ndarray  # str [N, H], local ISO hours
    latest_observation: np.ndarray | None = None  # str [N]: local ISO hour of the latest count the forecast used

    def quantile(self, q: float) -> np.ndarray:
        return self.values[..., self.quantiles.index(q)]


def parse_start(text: str, city: str) -> pd.Timestamp:
    """A forecast start as a naive local hour; offsets are converted to the city's time zone."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ForecastRequestError(f"forecast_start {text!r} is not an ISO 8601 date-time") from exc
    if stamp is pd.NaT or pd.isna(stamp):
        raise ForecastRequestError(f"forecast_start {text!r} is not a date-time")
    # Outside ~1677-2262 nanosecond arithmetic overflows (a 500 found by tests/reliability): refuse far dates early.
    if not 1900 <= stamp.year <= 2200:
        raise ForecastRequestError(f"forecast_start {text!r} is out of range (years 1900-2200)")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(get_city(city).timezone).tz_localize(None)
    if stamp != stamp.floor("h"):
        raise ForecastRequestError(f"forecast_start {text!r} must be on the hour (e.g. 2022-10-01T00:00:00)")
    return stamp


@lru_cache(maxsize=4096)
def target_hours(start: pd.Timestamp, horizon: int) -> np.ndarray:
    """The local ISO hours ``start`` .. ``start + horizon - 1``, memoised (requests keep asking for the same starts).

    Read-only: every caller gets the same array.
    """
    hours = np.array([f"{start + pd.Timedelta(hours=h):%Y-%m-%dT%H:%M:%S}" for h in range(horizon)], dtype=object)
    hours.flags.writeable = False
    return hours


def latest_observation(values: np.ndarray, starts: list[pd.Timestamp]) -> np.ndarray:
    """Per row, the local ISO hour of the last observed (finite) value of a history window ending before start.

    Lets a client of the real-time path see which count a forecast already reflects.
    """
    length = values.shape[1]
    last = length - 1 - np.argmax(np.isfinite(values[:, ::-1]), axis=1)  # rows have >= 1 observed hour
    return np.array(
        [f"{s - pd.Timedelta(hours=int(length - j)):%Y-%m-%dT%H:%M:%S}" for s, j in zip(starts, last, strict=True)],
        dtype=object,
    )


class ForecastService:
    def __init__(
        self,
        forecaster: Forecaster,
        history: HistorySource,
        max_batch: int,
        min_history_fraction: float,
        default_city: str = "melbourne",
    ):
        self.forecaster = forecaster
        self.history_source = history
        self.max_batch = max_batch
        self.min_history_fraction = min_history_fraction
        self.default_city = default_city

    def forecast(self, sensor_ids: list[str], starts: list[str], history: np.ndarray | None = None) -> ForecastBatch:
        n = len(sensor_ids)
        if n == 0:
            raise ForecastRequestError("sensor_id is empty: send at least one sensor")
        if n > self.max_batch:
            raise ForecastRequestError(f"batch of {n} sensors exceeds the limit of {self.max_batch}")
        if len(starts) == 1 and n > 1:
            starts = starts * n
        if len(starts) != n:
            raise ForecastRequestError(f"forecast_start has {len(starts)} values for {n} sensors (send 1 or {n})")
        window = self.forecaster.input_window
        cities = []
        for sensor in sensor_ids:
            city = self.history_source.city_of(sensor)
            if city is None and history is None:
                raise ForecastRequestError(f"unknown sensor {sensor!r}; send its history explicitly to forecast it")
            cities.append(city or self.default_city)
        parsed: dict[tuple[str, str], pd.Timestamp] = {}  # requests mostly send one start for all their sensors
        stamps = []
        for text, city in zip(starts, cities, strict=True):
            if (text, city) not in parsed:
                parsed[text, city] = parse_start(text, city)
            stamps.append(parsed[text, city])

        if history is None:
            values = self.history_source.history(sensor_ids, stamps, window)
        else:
            values = self._explicit_history(history, n, window)
        observed = np.isfinite(values).mean(axis=1)
        short = np.flatnonzero(observed < self.min_history_fraction)
        if len(short):
            i = int(short[0])
            raise ForecastRequestError(
                f"not enough history for sensor {sensor_ids[i]!r} before {stamps[i]:%Y-%m-%dT%H:%M}: "
                f"{observed[i]:.0%} of the last {window} hours observed, need {self.min_history_fraction:.0%}"
            )
        quantiles = self.forecaster.predict(values, stamps, cities)
        target_times = np.stack([target_hours(s, self.forecaster.horizon) for s in stamps])
        latest = latest_observation(values, stamps)
        return ForecastBatch(
            sensor_ids, stamps, list(self.forecaster.contract.quantiles), quantiles, target_times, latest
        )

    @staticmethod
    def _explicit_history(history: np.ndarray, n: int, window: int) -> np.ndarray:
        if history.shape != (n, window):
            raise ForecastRequestError(f"history must have shape [{n}, {window}], got {list(history.shape)}")
        if not np.isfinite(history).all():
            raise ForecastRequestError(f"history holds NaN or infinite values; mark missing hours with {MISSING}")
        values = history.astype(np.float32)
        values[values < 0] = np.nan
        return values
