"""The predictor's memoised forecast parts give the answers a fresh computation gives (serving/caches.py).

The forecast cache is keyed by a window's content, so the tests that matter are the ones where the content
changes (a new count, another start, another city): each must reach the model, and get the model's answer.
Also here: ``Panel.window``, which the history fetch of every request runs, against a plain loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cityscale import raw_zone, registry
from cityscale.config import Settings
from cityscale.forecasting.forecaster import Forecaster
from cityscale.panel import Panel
from serving.caches import CalendarCache, ForecastCache
from serving.predictor import CityScalePredictor

START = pd.Timestamp("2022-09-20")


@pytest.fixture(scope="module")
def forecaster(trained_workdir: Path) -> Forecaster:
    settings = Settings(workdir=trained_workdir)
    return Forecaster.load(*registry.resolve("production", settings.resolved_registry_uri, settings.model_name))


@pytest.fixture(scope="module")
def panel(trained_workdir: Path) -> Panel:
    return Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri))


class CountingPredict:
    """The forecaster's own predict, counting the rows that reach it."""

    def __init__(self, forecaster: Forecaster):
        self.forecaster, self.rows = forecaster, 0

    def __call__(self, history: np.ndarray, starts, cities) -> np.ndarray:
        self.rows += len(history)
        return self.forecaster.predict(history, starts, cities)


def _windows(panel: Panel, forecaster: Forecaster, start: pd.Timestamp = START) -> np.ndarray:
    rows = np.arange(len(panel.sensor_ids))
    window = forecaster.input_window
    return panel.window(rows, np.full(len(rows), panel.position(start)) - window, window)


def _filled_cache(forecaster: Forecaster, panel: Panel):
    """Every sensor's window at ``START``, a counting cache, and its first answer (all misses, counted)."""
    history, cities = _windows(panel, forecaster), list(panel.cities)
    starts = [START] * len(history)
    counting = CountingPredict(forecaster)
    cache = ForecastCache(counting, max_entries=100)
    first = cache(history, starts, cities)
    assert counting.rows == len(history)
    return history, starts, cities, counting, cache, first


def test_a_repeated_forecast_is_the_models_answer_without_the_model(forecaster: Forecaster, panel: Panel) -> None:
    history, starts, cities, counting, cache, first = _filled_cache(forecaster, panel)
    # The same rows again, shuffled and one of them twice: all hits, in the asked order.
    order = [3, 0, 3, *range(len(history))]
    again = cache(history[order], [starts[i] for i in order], [cities[i] for i in order])
    assert counting.rows == len(history)
    np.testing.assert_array_equal(again, first[order])
    np.testing.assert_allclose(first, forecaster.predict(history, starts, cities), rtol=1e-6, atol=1e-4)


def test_a_new_count_another_start_or_city_reaches_the_model(forecaster: Forecaster, panel: Panel) -> None:
    history, starts, cities, counting, cache, before = _filled_cache(forecaster, panel)
    pushed = history.copy()
    pushed[0, -1] = np.nan_to_num(pushed[0, -1]) + 500  # one new count in the newest hour of one sensor
    after = cache(pushed, starts, cities)
    assert counting.rows == len(history) + 1
    np.testing.assert_allclose(after[0], forecaster.predict(pushed[:1], starts[:1], cities[:1])[0], rtol=1e-6)
    assert not np.allclose(after[0], before[0])
    np.testing.assert_array_equal(after[1:], before[1:])
    cache(history[:1], [START + pd.Timedelta(hours=1)], cities[:1])  # another start
    cache(history[:1], starts[:1], ["auckland" if cities[0] != "auckland" else "melbourne"])  # another city
    assert counting.rows == len(history) + 3


def test_the_caches_keep_at_most_their_bound(forecaster: Forecaster, panel: Panel) -> None:
    history = _windows(panel, forecaster)[:3]
    cache = ForecastCache(forecaster.predict, max_entries=2)
    cache(history, [START] * 3, list(panel.cities[:3]))
    assert len(cache) == 2
    counting = CountingPredict(forecaster)
    cache = ForecastCache(counting, max_entries=2)
    cache(history[:2], [START] * 2, list(panel.cities[:2]))
    cache(history[:1], [START], list(panel.cities[:1]))  # row 0 becomes the most recent ...
    cache(history[2:3], [START], list(panel.cities[2:3]))  # ... so row 1 is the one evicted
    cache(history[:1], [START], list(panel.cities[:1]))
    assert counting.rows == 3
    calendar = CalendarCache(forecaster.calendar, max_entries=1)
    block = calendar([START, START + pd.Timedelta(hours=1)], ["melbourne", "melbourne"])
    np.testing.assert_array_equal(block, forecaster.calendar([START, START + pd.Timedelta(hours=1)], ["melbourne"] * 2))


def test_the_predictor_caches_forecasts_unless_told_not_to(trained_workdir: Path) -> None:
    settings = Settings(workdir=trained_workdir, forecast_log_enabled=False, serving_predict_threads=-1)
    cached = CityScalePredictor(settings)
    cached.load()
    plain = CityScalePredictor(settings.model_copy(update={"serving_forecast_cache_size": 0}))
    plain.load()
    assert isinstance(cached.service.forecaster.predict, ForecastCache)
    assert not isinstance(plain.service.forecaster.predict, ForecastCache)
    sensors = list(cached.history_source.panel.sensor_ids)
    for _ in range(2):  # the second round is answered from the cache
        a = cached.service.forecast(sensors, ["2022-10-01T00:00:00"])
        b = plain.service.forecast(sensors, ["2022-10-01T00:00:00"])
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-4)
    assert len(cached.service.forecaster.predict) == len(sensors)


def test_panel_window_equals_slicing_with_nan_outside_the_grid() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((5, 50)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = np.nan
    panel = Panel(values, pd.date_range("2022-01-01", periods=50, freq="h"), list("abcde"), ["melbourne"] * 5)
    padded = np.pad(values, ((0, 0), (100, 100)), constant_values=np.nan)
    for _ in range(50):
        n, length = int(rng.integers(1, 8)), int(rng.integers(0, 30))
        rows = rng.integers(0, 5, n)
        starts = rng.integers(-40, 60, n) if rng.random() < 0.5 else np.full(n, rng.integers(-40, 60))
        expected = np.stack([padded[r, s + 100 : s + 100 + length] for r, s in zip(rows, starts, strict=True)])
        np.testing.assert_array_equal(panel.window(rows, starts, length), expected)


def test_cache_rows_are_counted_as_hits_and_misses(forecaster: Forecaster, panel: Panel) -> None:
    history, cities = _windows(panel, forecaster)[:2], list(panel.cities[:2])
    counts: list[tuple[int, int]] = []
    cache = ForecastCache(forecaster.predict, 10, on_rows=lambda hits, misses: counts.append((hits, misses)))
    cache(history[[0, 0, 1]], [START] * 3, [cities[0], cities[0], cities[1]])
    cache(history, [START] * 2, cities)
    assert counts == [(1, 2), (2, 0)]
