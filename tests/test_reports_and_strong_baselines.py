"""Strong baselines (LightGBM, MSTL) and the HTML report, on real data."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from cityscale import raw_zone
from cityscale.config import Settings
from cityscale.evaluation.backtest import daily_origins, run_backtest
from cityscale.evaluation.report import backtest_charts, render_html
from cityscale.evaluation.strong_baselines import backtest_baselines, mstl_forecast
from cityscale.forecasting.forecaster import Forecaster
from cityscale.panel import Panel


@pytest.fixture(scope="module")
def panel(trained_workdir) -> Panel:
    return Panel.from_raw(raw_zone.read(Settings(workdir=trained_workdir).resolved_store_uri))


def test_lightgbm_is_scored_with_the_others_and_beats_yesterday(panel: Panel, trained_workdir) -> None:
    model = Forecaster.load(trained_workdir / "model")
    baselines = backtest_baselines(panel, pd.Timestamp("2022-09-15"), ["lightgbm"])
    result = run_backtest(panel, daily_origins("2022-09-15", "2022-10-15"), {"model": model}, 24, 0.5, baselines)
    assert {"lightgbm", "snaive24", "mean4w", "model"} <= set(result.summary.index)
    assert result.summary["n_hours"].nunique() == 1  # same cells for every method
    assert result.summary.loc["lightgbm", "wape"] < result.summary.loc["snaive24", "wape"]


def test_lightgbm_trains_on_every_sensor_and_forecasts_any_panel_of_the_same_grid(panel: Panel) -> None:
    """Scoring one city's rows must not shrink the baseline's training data (the model trains on every city)."""
    baselines = backtest_baselines(panel, pd.Timestamp("2022-09-15"), ["lightgbm"])
    flinders = panel.row("FliS_T")
    rows = np.array([flinders, next(r for r in range(len(panel.sensor_ids)) if r != flinders)])
    one_city = Panel(panel.values[rows], panel.index, [panel.sensor_ids[r] for r in rows], ["melbourne"] * 2)
    pos = np.array([panel.position(pd.Timestamp("2022-09-20"))] * 2)
    on_subset = baselines["lightgbm"](one_city, np.arange(2), pos, 24)
    on_full = baselines["lightgbm"](panel, rows, pos, 24)
    assert np.isfinite(on_subset).all()
    np.testing.assert_allclose(on_subset, on_full, rtol=1e-6)


def test_mstl_follows_daily_and_weekly_seasonality(panel: Panel) -> None:
    row = np.array([panel.row("FliS_T")] * 2)
    pos = np.array([panel.position(pd.Timestamp("2022-08-10")), panel.position(pd.Timestamp("2022-08-13"))])
    forecast = mstl_forecast(panel, row, pos, 24)
    actual = panel.window(row, pos, 24)
    assert forecast.shape == (2, 24) and np.isfinite(forecast).all() and (forecast >= 0).all()
    assert np.corrcoef(forecast.ravel(), actual.ravel())[0, 1] > 0.8  # follows the daily shape
    assert np.nanmean(np.abs(forecast - actual)) / np.nanmean(actual) < 0.5


def test_html_report_embeds_three_png_charts(panel: Panel, trained_workdir) -> None:
    model = Forecaster.load(trained_workdir / "model")
    result = run_backtest(panel, daily_origins("2022-10-01", "2022-10-15"), {"model": model}, 24)
    html = render_html("t", [("summary", result.summary)], "text", backtest_charts(result))
    images = html.split("src='data:image/png;base64,")[1:]
    assert len(images) == 3
    for chunk in images:
        assert base64.b64decode(chunk.split("'", 1)[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table" in html and "mean4w" in html


def test_an_unknown_baseline_name_is_refused(panel: Panel) -> None:
    with pytest.raises(ValueError, match="unknown baselines"):
        backtest_baselines(panel, pd.Timestamp("2022-09-15"), ["lightgbn"])
