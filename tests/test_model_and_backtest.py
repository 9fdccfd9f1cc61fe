"""Windows, the model, baselines and metrics: leakage, shapes, and hand-checked values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cityscale import raw_zone
from cityscale.calendar import CALENDAR_FEATURES, calendar_features
from cityscale.evaluation.backtest import daily_origins, run_backtest
from cityscale.evaluation.baselines import same_hour_mean, seasonal_naive
from cityscale.evaluation.metrics import mase_scale, summarise
from cityscale.forecasting.forecaster import Forecaster
from cityscale.model.examples import cut_examples, origin_grid
from cityscale.panel import Panel


@pytest.fixture(scope="module")
def panel(trained_workdir) -> Panel:
    from cityscale.config import Settings

    return Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri))


@pytest.fixture(scope="module")
def forecaster(trained_workdir) -> Forecaster:
    return Forecaster.load(trained_workdir / "model")


def test_examples_use_only_hours_before_the_origin(panel: Panel) -> None:
    origins = origin_grid(pd.Timestamp("2022-03-01"), pd.Timestamp("2022-03-08"), 6)
    assert list(origins.hour[:4]) == [0, 6, 12, 18]
    ex = cut_examples(panel, origins, 168, 24, 0.5)
    for i in range(0, len(ex), 17):
        row = panel.row(str(ex.sensor_ids[i]))
        pos = panel.position(pd.Timestamp(ex.origins[i]))
        np.testing.assert_array_equal(ex.history[i], panel.values[row, pos - 168 : pos])
        np.testing.assert_array_equal(ex.target[i], panel.values[row, pos : pos + 24])


def test_calendar_flags_holidays_and_lockdowns() -> None:
    stamps = pd.DatetimeIndex(["2022-11-01 10:00", "2022-11-02 10:00", "2021-08-10 12:00", "2022-08-10 12:00"])
    cal = calendar_features(stamps, "melbourne")
    holiday, lockdown = CALENDAR_FEATURES.index("holiday"), CALENDAR_FEATURES.index("lockdown")
    assert cal[:, holiday].tolist() == [1, 0, 0, 0]  # Melbourne Cup Day 2022 is a VIC public holiday
    assert cal[:, lockdown].tolist() == [0, 0, 1, 0]  # Melbourne lockdown 6 (Aug-Oct 2021)
    assert cal[0, stamps[0].dayofweek] == 1 and cal[0, :7].sum() == 1


def test_forecast_ignores_everything_at_or_after_the_origin(panel: Panel, forecaster: Forecaster) -> None:
    window = forecaster.input_window
    start = pd.Timestamp("2022-10-10 00:00")
    rows = np.arange(len(panel.sensor_ids))
    pos = np.full(len(rows), panel.position(start))
    clean = forecaster.predict(panel.window(rows, pos - window, window), [start] * len(rows), panel.cities)

    corrupted = Panel(panel.values.copy(), panel.index, panel.sensor_ids, panel.cities)
    corrupted.values[:, panel.position(start) :] = 1e6
    again = forecaster.predict(corrupted.window(rows, pos - window, window), [start] * len(rows), panel.cities)
    np.testing.assert_array_equal(clean, again)

    corrupted.values[:, panel.position(start) - 1] += 500  # the last hour before the origin does matter
    moved = forecaster.predict(corrupted.window(rows, pos - window, window), [start] * len(rows), panel.cities)
    assert not np.allclose(clean, moved)


def test_quantiles_are_ordered_and_non_negative(panel: Panel, forecaster: Forecaster) -> None:
    window = forecaster.input_window
    start = pd.Timestamp("2022-10-20 13:00")
    rows = np.arange(len(panel.sensor_ids))
    hist = panel.window(rows, np.full(len(rows), panel.position(start)) - window, window)
    q = forecaster.predict(hist, [start] * len(rows), panel.cities)
    assert q.shape == (len(rows), 24, 3)
    assert (q >= 0).all() and (np.diff(q, axis=-1) >= 0).all()


def test_baselines_match_hand_computation(panel: Panel) -> None:
    row, start = panel.row("FliS_T"), pd.Timestamp("2022-06-15")
    pos = panel.position(start)
    rows, positions = np.array([row]), np.array([pos])
    np.testing.assert_array_equal(seasonal_naive(panel, rows, positions, 24, 24)[0], panel.values[row, pos - 24 : pos])
    np.testing.assert_array_equal(
        seasonal_naive(panel, rows, positions, 24, 168)[0], panel.values[row, pos - 168 : pos - 144]
    )
    weeks = np.stack([panel.values[row, pos - 168 * w : pos - 168 * w + 24] for w in range(1, 5)])
    np.testing.assert_allclose(same_hour_mean(panel, rows, positions, 24)[0], np.nanmean(weeks, axis=0), rtol=1e-6)


def test_mase_scale_matches_brute_force(panel: Panel) -> None:
    positions = np.array([panel.position(pd.Timestamp("2022-05-01")), panel.position(pd.Timestamp("2022-08-01"))])
    scale = mase_scale(panel.values, positions, 24)
    for j, p in enumerate(positions):
        y = panel.values[3, :p]
        expected = np.nanmean(np.abs(y[24:] - y[:-24]))
        assert scale[3, j] == pytest.approx(expected, rel=1e-6)


def test_summarise_on_a_tiny_known_case() -> None:
    actual = np.array([[10.0, 20.0, np.nan]])
    point = np.array([[12.0, 15.0, 99.0]])
    q = np.stack([point - 2, point, point + 2], axis=-1)
    out = summarise(point, actual, np.array([2.0]), q, np.array([0.1, 0.5, 0.9]))
    assert out["mae"] == pytest.approx(3.5)
    assert out["wape"] == pytest.approx(7 / 30)
    assert out["mase"] == pytest.approx(1.75)
    assert out["coverage"] == pytest.approx(0.5)  # 10 lies in [10, 14]; 20 is outside [13, 17]
    assert out["n_hours"] == 2


def test_backtest_scores_all_methods_on_the_same_cells(panel: Panel, forecaster: Forecaster) -> None:
    origins = daily_origins("2022-09-01", "2022-10-01")
    result = run_backtest(panel, origins, {"model": forecaster}, 24)
    assert set(result.summary.index) == {"model", "snaive24", "snaive168", "mean4w"}
    assert result.summary["n_hours"].nunique() == 1
    assert result.summary.loc["model", "n_pairs"] == pytest.approx(result.pairs_with_actuals, rel=0.05)
    assert 0 < result.summary.loc["model", "wape"] < 1
    assert 0 <= result.summary.loc["model", "coverage"] <= 1
