"""Online forecasting: validate a request, fetch each sensor's recent history, run the model.

This is the whole forecast path behind the KServe predictor, kept free of KServe so it can be
tested directly. Every problem with a request raises ``ForecastRequestError`` with a message
that says what is wrong; the server turns it into a 400 / INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
import pandas as pd

from cityscale import raw_zone
from cityscale.cities import get_city
from cityscale.forecasting.forecaster import Forecaster
from cityscale.model.inputs import RECENT_HOURS, observed_fraction
from cityscale.panel import Panel

MISSING = -1.0  # marker for a missing hour in an explicit history tensor (JSON has no NaN)


class ForecastRequestError(ValueError):
    """The request cannot be served as sent (the client's fault, not the server's)."""


class HistorySource(Protocol):
    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        """Each sensor's city, None for an unknown sensor; one round trip for the batch on a remote source."""
        ...

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

    def cities_of(self, sensor_ids: list[str]) -> list[str | None]:
        return [self.panel.city_of(s) for s in sensor_ids]

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


@lru_cache(maxsize=4096)
def parse_start(text: str, city: str) -> pd.Timestamp:
    """A forecast start as a naive local hour; offsets are converted to the city's time zone.

    Memoised (requests keep sending the same few starts; pandas parsing is a tenth of a one-sensor forecast).
    Errors are not cached: they raise before a value is stored.
    """
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
    hours_before = np.argmax(np.isfinite(values[:, ::-1]), axis=1) + 1  # rows have >= 1 observed hour
    return np.array([_hours_before(s, int(k)) for s, k in zip(starts, hours_before, strict=True)], dtype=object)


@lru_cache(maxsize=8192)
def _hours_before(start: pd.Timestamp, hours: int) -> str:
    """The local ISO hour ``hours`` before ``start`` (memoised: pandas formatting costs ~10 us a call)."""
    return f"{start - pd.Timedelta(hours=hours):%Y-%m-%dT%H:%M:%S}"


@dataclass(frozen=True)
class ForecastRequest:
    """One client request: sensors, their start hour(s) (1 or N ISO strings), optional explicit history [N, L]."""

    sensor_ids: list[str]
    starts: list[str]
    history: np.ndarray | None = None


@dataclass
class _Checked:
    """A request that passed validation: parsed starts, cities, and explicit history (None: fetch it)."""

    sensor_ids: list[str]
    stamps: list[pd.Timestamp]
    cities: list[str]
    values: np.ndarray | None


def _split_rows(array: np.ndarray, requests: list[_Checked]) -> list[np.ndarray]:
    """``array``'s rows cut back into one block per request, in order (each request has one row per sensor)."""
    return np.split(array, np.cumsum([len(c.sensor_ids) for c in requests])[:-1])


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
        """One request's forecasts; ``ForecastRequestError`` says what is wrong with it."""
        result = self.forecast_many([ForecastRequest(sensor_ids, starts, history)])[0]
        if isinstance(result, ForecastRequestError):
            raise result
        return result

    def forecast_many(self, requests: Sequence[ForecastRequest]) -> list[ForecastBatch | ForecastRequestError]:
        """Several requests with one history fetch and one model call; each gets its batch or its own error.

        Why: a forecast's fixed costs (LightGBM's per-call set-up, torch dispatch, a feature-server round trip)
        dominate a one-sensor request. A server under concurrent load hands every request waiting at that moment
        to one call (serving/batching.py); rows are independent, so each answer is the one it would get alone.
        A bad request fails alone and never costs the others their forecasts.
        """
        results: list[ForecastBatch | ForecastRequestError | None] = [None] * len(requests)
        checked: dict[int, _Checked] = {}
        for i, request in enumerate(requests):
            try:
                checked[i] = self._check(request)
            except ForecastRequestError as exc:
                results[i] = exc
        refused = self._fetch_history(checked)
        for i, c in list(checked.items()):
            try:
                if i in refused:
                    raise refused[i]
                self._check_history(c)
            except ForecastRequestError as exc:
                results[i] = exc
                del checked[i]
        if checked:
            ready = list(checked.values())
            quantiles = self.forecaster.predict(
                np.concatenate([c.values for c in ready]),
                [t for c in ready for t in c.stamps],
                [city for c in ready for city in c.cities],
            )
            for i, c, own in zip(checked, ready, _split_rows(quantiles, ready), strict=True):
                results[i] = self._batch(c, own)
        return results  # type: ignore[return-value]  # every slot is filled above

    def _check(self, request: ForecastRequest) -> _Checked:
        sensor_ids, starts = request.sensor_ids, request.starts
        n = len(sensor_ids)
        if n == 0:
            raise ForecastRequestError("sensor_id is empty: send at least one sensor")
        if n > self.max_batch:
            raise ForecastRequestError(f"batch of {n} sensors exceeds the limit of {self.max_batch}")
        if len(starts) == 1 and n > 1:
            starts = starts * n
        if len(starts) != n:
            raise ForecastRequestError(f"forecast_start has {len(starts)} values for {n} sensors (send 1 or {n})")
        cities = []
        for sensor, city in zip(sensor_ids, self.history_source.cities_of(list(sensor_ids)), strict=True):
            if city is None and request.history is None:
                raise ForecastRequestError(f"unknown sensor {sensor!r}; send its history explicitly to forecast it")
            cities.append(city or self.default_city)
        stamps = [parse_start(text, city) for text, city in zip(starts, cities, strict=True)]
        values = None
        if request.history is not None:
            values = self._explicit_history(request.history, n, self.forecaster.input_window)
        return _Checked(list(sensor_ids), stamps, cities, values)

    def _fetch_history(self, checked: dict[int, _Checked]) -> dict[int, ForecastRequestError]:
        """Fill in the history of every request that sent none, in one call; the refusals, by request.

        A source refuses a window with ``ForecastRequestError`` (e.g. Feast holds none for a sensor): that must
        fail only the request that asked for it, so a refused shared call is retried request by request.
        """
        fetch = {i: c for i, c in checked.items() if c.values is None}
        window = self.forecaster.input_window
        if not fetch:
            return {}
        try:
            values = self.history_source.history(
                [s for c in fetch.values() for s in c.sensor_ids], [t for c in fetch.values() for t in c.stamps], window
            )
        except ForecastRequestError as exc:
            if len(fetch) == 1:
                return dict.fromkeys(fetch, exc)
            refused = {}
            for i, c in fetch.items():
                try:
                    c.values = self.history_source.history(c.sensor_ids, c.stamps, window)
                except ForecastRequestError as own:
                    refused[i] = own
            return refused
        for c, own in zip(fetch.values(), _split_rows(values, list(fetch.values())), strict=True):
            c.values = own
        return {}

    def _check_history(self, checked: _Checked) -> None:
        observed = observed_fraction(checked.values)
        short = np.flatnonzero(observed < self.min_history_fraction)
        if len(short):
            i = int(short[0])
            raise ForecastRequestError(
                f"not enough history for sensor {checked.sensor_ids[i]!r} before {checked.stamps[i]:%Y-%m-%dT%H:%M}: "
                f"{observed[i]:.0%} of the last {RECENT_HOURS} hours observed, "
                f"need {self.min_history_fraction:.0%}"
            )

    def _batch(self, checked: _Checked, quantiles: np.ndarray) -> ForecastBatch:
        target_times = np.stack([target_hours(s, self.forecaster.horizon) for s in checked.stamps])
        latest = latest_observation(checked.values, checked.stamps)
        quantile_levels = list(self.forecaster.contract.quantiles)
        return ForecastBatch(checked.sensor_ids, checked.stamps, quantile_levels, quantiles, target_times, latest)

    @staticmethod
    def _explicit_history(history: np.ndarray, n: int, window: int) -> np.ndarray:
        """A client's own history, newest hour last; a shorter one (a new sensor) counts as missing before it.

        At least the recent hours must be sent: they set the forecast's level and its eligibility.
        """
        shortest = min(RECENT_HOURS, window)
        if history.ndim != 2 or history.shape[0] != n or not shortest <= history.shape[1] <= window:
            raise ForecastRequestError(
                f"history must have shape [{n}, L] with {shortest} <= L <= {window} (newest hour last), "
                f"got {list(history.shape)}"
            )
        if not np.isfinite(history).all():
            raise ForecastRequestError(f"history holds NaN or infinite values; mark missing hours with {MISSING}")
        values = np.full((n, window), np.nan, dtype=np.float32)
        values[:, window - history.shape[1] :] = history
        values[values < 0] = np.nan
        return values
