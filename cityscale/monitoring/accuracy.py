"""Accuracy of served forecasts: the forecast log joined with the actual counts as they land.

Each logged (model version, sensor, origin) is one forecast "pair" of up to ``horizon`` hours, the unit
``cityscale.evaluation.metrics.summarise`` scores in the backtest, so WAPE / MASE / coverage mean the same here as in
the evaluation report. MASE scales each pair by the seasonal-naive (24 h) error of the sensor's history
before the origin (``metrics.mase_scale``), exactly as the backtest does. Hours whose count has not landed
yet are not scored.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cityscale.evaluation import metrics
from cityscale.monitoring.forecast_log import QUANTILE_COLUMNS
from cityscale.panel import Panel

PAIR_KEY = ["model_version", "sensor_id", "origin"]
OVERALL = "all"  # the sensor_id of the all-sensors rows in the accuracy tables
METRIC_COLUMNS = ["wape", "mase", "coverage", "mae", "n_pairs", "n_hours"]


def join_actuals(forecasts: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows (deduplicated: the last served copy of each) with an ``actual`` column (NaN = not landed)."""
    latest = forecasts.sort_values("served_at").drop_duplicates([*PAIR_KEY, "target_time"], keep="last")
    actuals = raw[["sensor_id", "timestamp_local", "count"]].rename(
        columns={"timestamp_local": "target_time", "count": "actual"}
    )
    joined = latest.merge(actuals, on=["sensor_id", "target_time"], how="left")
    joined["actual"] = joined["actual"].astype("float64")
    return joined.sort_values([*PAIR_KEY, "horizon"], ignore_index=True)


def pair_scales(joined: pd.DataFrame, panel: Panel, season: int = 24) -> pd.Series:
    """The MASE scale of every (sensor, origin) in ``joined`` from the panel's history before the origin."""
    pairs = joined[["sensor_id", "origin"]].drop_duplicates()
    origins = pd.DatetimeIndex(pairs["origin"].unique())
    positions = np.array([panel.position(o) for o in origins])
    scale = metrics.mase_scale(panel.values.astype(np.float64), positions, season)  # [sensors, origins]
    column = {o: j for j, o in enumerate(origins)}
    values = [
        scale[panel.row(s), column[o]] if panel.city_of(s) is not None else np.nan
        for s, o in zip(pairs["sensor_id"], pairs["origin"], strict=True)
    ]
    return pd.Series(values, index=pd.MultiIndex.from_frame(pairs), dtype="float64")


def score(rows: pd.DataFrame, scales: pd.Series) -> dict[str, float]:
    """``metrics.summarise`` over the rows' forecast pairs (empty rows score NaN with zero counts)."""
    scored = rows[rows["actual"].notna()]
    if scored.empty:
        return {"wape": np.nan, "mase": np.nan, "coverage": np.nan, "mae": np.nan, "n_pairs": 0, "n_hours": 0}
    pair = scored.groupby(PAIR_KEY, sort=False).ngroup().to_numpy()
    first = scored.groupby(PAIR_KEY, sort=False)[["sensor_id", "origin"]].first()
    n_pairs, horizon = pair.max() + 1, int(scored["horizon"].max()) + 1
    point = np.full((n_pairs, horizon), np.nan)
    actual = np.full((n_pairs, horizon), np.nan)
    quantiles = np.full((n_pairs, horizon, len(QUANTILE_COLUMNS)), np.nan)
    hours = scored["horizon"].to_numpy()
    point[pair, hours] = scored["p50"].to_numpy()
    actual[pair, hours] = scored["actual"].to_numpy()
    for k, column in enumerate(QUANTILE_COLUMNS.values()):
        quantiles[pair, hours, k] = scored[column].to_numpy()
    scale = scales.reindex(pd.MultiIndex.from_frame(first)).to_numpy()
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        out = metrics.summarise(point, actual, scale, quantiles, np.array(list(QUANTILE_COLUMNS)))
    return {k: out[k] for k in METRIC_COLUMNS}


def accuracy_tables(joined: pd.DataFrame, panel: Panel) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(by_sensor, daily): window metrics per sensor plus an ``all`` row, and the same per target day."""
    scales = pair_scales(joined, panel) if len(joined) else pd.Series(dtype="float64")
    by_sensor = [{"sensor_id": OVERALL, **score(joined, scales)}]
    by_sensor += [{"sensor_id": s, **score(rows, scales)} for s, rows in joined.groupby("sensor_id", sort=True)]
    daily = []
    for day, rows in joined.groupby(joined["target_time"].dt.normalize(), sort=True):
        daily.append({"date": day, "sensor_id": OVERALL, **score(rows, scales)})
        daily += [{"date": day, "sensor_id": s, **score(r, scales)} for s, r in rows.groupby("sensor_id", sort=True)]
    by_sensor_frame = pd.DataFrame(by_sensor, columns=["sensor_id", *METRIC_COLUMNS])
    daily_frame = pd.DataFrame(daily, columns=["date", "sensor_id", *METRIC_COLUMNS])
    return by_sensor_frame, daily_frame
