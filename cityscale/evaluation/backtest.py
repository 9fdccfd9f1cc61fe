"""Rolling-origin backtests: models and baselines scored on the same (sensor, origin, hour) cells.

Every method forecasts from data strictly before each origin; a cell is scored only where the
actual is observed and every method produced a forecast, so the numbers are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cityscale.evaluation.baselines import BASELINES, Baseline
from cityscale.evaluation.metrics import mase_scale, summarise
from cityscale.forecasting.forecaster import Forecaster
from cityscale.model.inputs import has_enough_history
from cityscale.panel import Panel


@dataclass
class BacktestResult:
    summary: pd.DataFrame  # one row per method: mase, wape, mae, (pinball, wql, coverage), n_pairs
    per_sensor: pd.DataFrame  # wape per sensor and method
    by_hour: pd.DataFrame  # MAE per forecast hour-of-day and method
    forecasts: dict[str, np.ndarray]  # method -> [P, H] point (model: also "<name>:quantiles" [P, H, Q])
    actual: np.ndarray  # [P, H] (NaN where unscored)
    sensor_ids: np.ndarray  # [P]
    origins: np.ndarray  # [P]
    pairs_with_actuals: int

    def forecast_rate(self, method: str = "model") -> float:
        """Share of the (sensor, origin) pairs with actuals that ``method`` forecast (the rest lacked history)."""
        return float(self.summary.loc[method, "n_pairs"] / max(self.pairs_with_actuals, 1))

    def metrics(self, method: str) -> dict[str, float]:
        return self.summary.loc[method].dropna().to_dict()

    def best_baseline(self, metric: str = "wape", models: tuple[str, ...] = ("model", "production")) -> str:
        base = self.summary.drop(index=[m for m in models if m in self.summary.index])
        return str(base[metric].idxmin())


RELATIVE_PREFIX = "last:"


def held_out_start(spec: str, data_end: pd.Timestamp) -> pd.Timestamp:
    """The first held-out day: a date (``2022-07-01``), or ``last:<span>`` counted back from the data's end.

    ``last:28d`` (or ``last:4w``) is the midnight 28 days before the day after the newest count, so a scheduled
    retrain always holds out, and is judged on, the newest weeks of whatever the raw zone holds by then.
    """
    if not spec.startswith(RELATIVE_PREFIX):
        return pd.Timestamp(spec)
    try:
        span = pd.Timedelta(spec.removeprefix(RELATIVE_PREFIX))
    except ValueError as exc:
        raise ValueError(f"held-out start {spec!r}: expected a date or last:<days>d / last:<weeks>w") from exc
    if span < pd.Timedelta(days=1) or span % pd.Timedelta(days=1):
        raise ValueError(f"held-out start {spec!r}: the span must be whole days")
    return (pd.Timestamp(data_end) + pd.Timedelta(hours=1)).ceil("D") - span


def daily_origins(start: str | pd.Timestamp, end: str | pd.Timestamp, hour: int = 0) -> pd.DatetimeIndex:
    """Daily origins at ``hour`` local time in [start, end)."""
    days = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end), freq="D", inclusive="left")
    return days + pd.Timedelta(hours=hour)


def run_backtest(
    panel: Panel,
    origins: pd.DatetimeIndex,
    models: dict[str, Forecaster],
    horizon: int,
    min_history_fraction: float = 0.5,
    baselines: dict[str, Baseline] | None = None,
) -> BacktestResult:
    """Score ``models`` and ``baselines`` (default: the seasonal ones) at every (sensor, origin) with actuals."""
    n_s = len(panel.sensor_ids)
    positions = np.array([panel.position(o) for o in origins], dtype=np.int64)
    rows = np.repeat(np.arange(n_s), len(positions))
    pos = np.tile(positions, n_s)
    actual = panel.window(rows, pos, horizon)
    has_actual = np.isfinite(actual).any(axis=1)
    pairs_with_actuals = int(has_actual.sum())
    for model in models.values():
        if model.horizon < horizon:
            raise ValueError(f"model horizon {model.horizon} is shorter than the backtest horizon {horizon}")
        history = panel.window(rows, pos - model.input_window, model.input_window)
        has_actual &= has_enough_history(history, min_history_fraction)
    rows, pos, actual = rows[has_actual], pos[has_actual], actual[has_actual]
    cities = np.asarray(panel.cities)[rows]
    starts = list(panel.index[0] + pd.to_timedelta(pos, unit="h"))

    forecasts: dict[str, np.ndarray] = {}
    quantile_preds: dict[str, np.ndarray] = {}
    for name, model in models.items():
        history = panel.window(rows, pos - model.input_window, model.input_window)
        q = model.predict(history, starts, cities)[:, :horizon, :]
        quantile_preds[name] = q
        forecasts[name] = q[..., model.contract.quantiles.index(0.5)] if 0.5 in model.contract.quantiles else q.mean(-1)
    for name, baseline in (BASELINES if baselines is None else baselines).items():
        forecasts[name] = baseline(panel, rows, pos, horizon)

    common = np.isfinite(actual)
    for point in forecasts.values():
        common &= np.isfinite(point)
    scored_actual = np.where(common, actual, np.nan)
    scale = mase_scale(panel.values, pos, 24)[rows, np.arange(len(rows))] if len(rows) else np.zeros(0)

    summary, per_sensor, by_hour = {}, {}, {}
    hours = (pos[:, None] + np.arange(horizon)[None, :]) % 24 + panel.index[0].hour
    sensors = np.asarray(panel.sensor_ids)[rows]
    for name, point in forecasts.items():
        qp = quantile_preds.get(name)
        quantiles = np.asarray(models[name].contract.quantiles) if name in models else None
        summary[name] = summarise(point, scored_actual, scale, qp, quantiles)
        err = np.abs(point - scored_actual)
        frame = pd.DataFrame({"sensor": np.repeat(sensors, horizon), "err": err.ravel(), "y": scored_actual.ravel()})
        grouped = frame.dropna().groupby("sensor")
        per_sensor[name] = grouped["err"].sum() / grouped["y"].sum()
        by_hour[name] = pd.Series(err.ravel()).groupby((hours % 24).ravel()).mean()
    for name, q in quantile_preds.items():
        forecasts[f"{name}:quantiles"] = q
    return BacktestResult(
        summary=pd.DataFrame(summary).T,
        per_sensor=pd.DataFrame(per_sensor),
        by_hour=pd.DataFrame(by_hour),
        forecasts=forecasts,
        actual=scored_actual,
        sensor_ids=sensors,
        origins=np.asarray(starts, dtype="datetime64[ns]"),
        pairs_with_actuals=pairs_with_actuals,
    )
