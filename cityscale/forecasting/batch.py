"""Batch forecasting: quantile forecasts for every sensor in a file and every daily origin in a range.

Reads a Melbourne export in the wide layout of ``../shared/data/melbourne_pcs/*.csv`` or raw long
Parquet, and uses only the hours before each origin. Output: one row per (sensor, origin, target
hour) with p10, p50, p90; the sensor column is the file's own row label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cityscale.forecasting.forecaster import Forecaster
from cityscale.ingestion.quality import clean_and_check
from cityscale.ingestion.run import load_snapshot
from cityscale.model.inputs import has_enough_history
from cityscale.panel import Panel
from cityscale.sources.melbourne import parse_sensor_label

OUTPUT_COLUMNS = ["sensor", "origin", "target_time", "p10", "p50", "p90"]


def _labels(path: Path, sensor_ids: list[str]) -> dict[str, str]:
    """The file's own row label for each sensor id (wide CSV: "Description | Code [Id]")."""
    if path.suffix == ".csv":
        first = pd.read_csv(path, usecols=[0]).iloc[:, 0]
        return {parse_sensor_label(label)[0]: " ".join(str(label).split()) for label in first}
    return {s: s for s in sensor_ids}


def batch_forecast(
    data: str | Path,
    forecaster: Forecaster,
    start: str,
    end: str,
    min_history_fraction: float = 0.5,
    origin_hour: int = 0,
    chunk: int = 4096,
) -> tuple[pd.DataFrame, int]:
    """Forecast every (sensor, daily origin) in [start, end] (both days included).

    Returns the forecast rows and the number of (sensor, origin) pairs skipped for too little history.
    """
    path = Path(data)
    clean, report = clean_and_check(load_snapshot(path))
    report.raise_for_errors()
    panel = Panel.from_raw(clean)
    labels = _labels(path, panel.sensor_ids)
    origins = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), freq="D")
    origins = origins + pd.Timedelta(hours=origin_hour)
    n_s = len(panel.sensor_ids)
    rows = np.repeat(np.arange(n_s), len(origins))
    pos = np.tile(np.array([panel.position(o) for o in origins], dtype=np.int64), n_s)
    window = forecaster.input_window
    history = panel.window(rows, pos - window, window)
    usable = has_enough_history(history, min_history_fraction)
    rows, pos, history = rows[usable], pos[usable], history[usable]
    starts = list(panel.index[0] + pd.to_timedelta(pos, unit="h"))
    cities = list(np.asarray(panel.cities)[rows])
    quantiles = np.concatenate(
        [
            forecaster.predict(history[i : i + chunk], starts[i : i + chunk], cities[i : i + chunk])
            for i in range(0, len(rows), chunk)
        ]
        or [np.zeros((0, forecaster.horizon, len(forecaster.contract.quantiles)), np.float32)]
    )
    h = forecaster.horizon
    q_index = {q: forecaster.contract.quantiles.index(q) for q in (0.1, 0.5, 0.9)}
    origin_col = np.repeat(np.asarray(starts, dtype="datetime64[ns]"), h)
    frame = pd.DataFrame(
        {
            "sensor": np.repeat([labels.get(s, s) for s in np.asarray(panel.sensor_ids)[rows]], h),
            "origin": origin_col,
            "target_time": origin_col + np.tile(np.arange(h) * np.timedelta64(1, "h"), len(rows)),
            "p10": quantiles[..., q_index[0.1]].ravel(),
            "p50": quantiles[..., q_index[0.5]].ravel(),
            "p90": quantiles[..., q_index[0.9]].ravel(),
        }
    )
    return frame[OUTPUT_COLUMNS], int((~usable).sum())
