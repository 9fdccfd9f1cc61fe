"""Stronger baselines for the backtest: a statistical model (statsforecast MSTL) and a LightGBM
global model on the model's own four-week features (lags, same-hour-of-week statistics, levels, trend,
calendar and holidays). They are computed in the same run as the model, on the same cells.

Both are optional dependencies of the evaluation only; serving never imports this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cityscale.calendar import CALENDAR_FEATURES
from cityscale.evaluation.baselines import BASELINES, Baseline
from cityscale.model.boosted import features
from cityscale.model.examples import panel_calendar
from cityscale.panel import Panel

MSTL_WINDOW = 672  # four weeks of history per fit
LIGHTGBM_WINDOW = 672


def _fill_for_fit(history: np.ndarray) -> np.ndarray:
    """Statistical models need gap-free input: fill with last week's value, then the daily, then the mean."""
    out = history.copy()
    for lag in (168, 24):
        shifted = np.full_like(out, np.nan)
        shifted[:, lag:] = out[:, :-lag]
        out = np.where(np.isfinite(out), out, shifted)
    mean = np.nanmean(np.where(np.isfinite(out), out, np.nan), axis=1, keepdims=True)
    return np.where(np.isfinite(out), out, np.nan_to_num(mean, nan=0.0))


def mstl_forecast(panel: Panel, rows: np.ndarray, positions: np.ndarray, horizon: int) -> np.ndarray:
    """MSTL (daily + weekly seasonality, AutoETS trend) refit at every (sensor, origin) on 4 weeks of history."""
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    history = panel.window(rows, positions - MSTL_WINDOW, MSTL_WINDOW)
    usable = np.isfinite(history).mean(axis=1) >= 0.5
    out = np.full((len(rows), horizon), np.nan, dtype=np.float32)
    if not usable.any():
        return out
    filled = _fill_for_fit(history[usable])
    ids = np.repeat(np.flatnonzero(usable), MSTL_WINDOW)
    frame = pd.DataFrame({"unique_id": ids, "ds": np.tile(np.arange(MSTL_WINDOW), usable.sum()), "y": filled.ravel()})
    model = MSTL(season_length=[24, 168], trend_forecaster=AutoETS(model="ZNN"))
    forecast = StatsForecast(models=[model], freq=1, n_jobs=2).forecast(df=frame, h=horizon)
    values = forecast.sort_values(["unique_id", "ds"])["MSTL"].to_numpy().reshape(-1, horizon)
    out[np.sort(forecast["unique_id"].unique())] = np.clip(values, 0, None)
    return out


def _lag_features(panel: Panel, rows: np.ndarray, positions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """One row per (pair, step): the model's own four-week features (boosted.features) and each pair's scale.

    The bar is honest only if the baseline sees everything the model sees: lags and same-hour-of-week statistics
    over four weeks, daily and weekly levels, trend, every calendar flag and holiday.
    """
    history = panel.window(rows, positions - LIGHTGBM_WINDOW, LIGHTGBM_WINDOW)
    return features(history, panel_calendar(panel, rows, positions, horizon), CALENDAR_FEATURES)


def lightgbm_forecast(
    train_panel: Panel,
    train_positions: np.ndarray,
    panel: Panel,
    rows: np.ndarray,
    positions: np.ndarray,
    horizon: int,
    seed: int = 42,
) -> np.ndarray:
    """A global LightGBM regressor on scaled lag features, trained on every sensor of ``train_panel`` at origins
    before the test period, forecasting ``panel``'s (sensor, origin) pairs (both panels share one hourly grid)."""
    import lightgbm as lgb

    n_s = len(train_panel.sensor_ids)
    train_rows = np.repeat(np.arange(n_s), len(train_positions))
    train_pos = np.tile(train_positions, n_s)
    target = train_panel.window(train_rows, train_pos, horizon)
    x_train, train_scale = _lag_features(train_panel, train_rows, train_pos, horizon)
    y_train = (target / train_scale[:, None]).ravel()
    keep = np.isfinite(y_train)
    params = {"objective": "l1", "learning_rate": 0.05, "num_leaves": 63, "seed": seed, "num_threads": 2, "verbose": -1}
    model = lgb.train(params, lgb.Dataset(x_train[keep], y_train[keep]), num_boost_round=300)
    x_test, scale = _lag_features(panel, rows, positions, horizon)
    pred = model.predict(x_test).reshape(len(rows), horizon) * scale[:, None]
    return np.clip(pred, 0, None).astype(np.float32)


STRONG_BASELINES = ("lightgbm", "mstl")


def backtest_baselines(panel: Panel, train_end: pd.Timestamp, strong: list[str]) -> dict[str, Baseline]:
    """The seasonal baselines plus the named strong ones, ready for ``run_backtest``.

    LightGBM trains on every sensor of ``panel`` (all cities, as the model does) at daily origins before
    ``train_end``, so it never sees the test period; it forecasts whichever panel the backtest scores (e.g. one
    city's rows of the same grid).
    """
    unknown = sorted(set(strong) - set(STRONG_BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {list(STRONG_BASELINES)}")
    out: dict[str, Baseline] = dict(BASELINES)
    if "lightgbm" in strong:
        first = panel.index[0] + pd.Timedelta(days=28)
        origins = pd.date_range(first.ceil("D"), train_end - pd.Timedelta(hours=24), freq="D")
        train_positions = np.array([panel.position(o) for o in origins], dtype=np.int64)
        out["lightgbm"] = lambda p, r, pos, h: lightgbm_forecast(panel, train_positions, p, r, pos, h)
    if "mstl" in strong:
        out["mstl"] = mstl_forecast
    return out
