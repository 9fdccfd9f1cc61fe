"""Training and evaluation examples cut from a panel at forecast origins.

An example at origin ``t`` holds the ``input_window`` hours before ``t`` (history), the calendar
covariates of the ``horizon`` hours from ``t`` on, and those hours' counts (target). Origins are
chosen on a fixed hourly stride so only the examples the model needs are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cityscale.calendar import CALENDAR_FEATURES, calendar_features
from cityscale.panel import Panel


@dataclass
class Examples:
    history: np.ndarray  # float32 [N, L], NaN = missing
    calendar: np.ndarray  # float32 [N, H, K]
    target: np.ndarray  # float32 [N, H], NaN = missing
    sensor_ids: np.ndarray  # str [N]
    cities: np.ndarray  # str [N]
    origins: np.ndarray  # datetime64[ns] [N]

    def __len__(self) -> int:
        return len(self.history)

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **self.__dict__)

    @classmethod
    def load(cls, path: str | Path) -> Examples:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def select(self, mask: np.ndarray) -> Examples:
        return Examples(**{k: v[mask] for k, v in self.__dict__.items()})


def origin_grid(start: pd.Timestamp, end: pd.Timestamp, stride_hours: int) -> pd.DatetimeIndex:
    """Origins in [start, end) on a stride anchored at local midnight."""
    if stride_hours <= 0 or (24 % stride_hours and stride_hours % 24):
        raise ValueError(f"origin stride must divide a day or be whole days, got {stride_hours} h")
    return pd.date_range(pd.Timestamp(start).ceil("D"), pd.Timestamp(end), freq=f"{stride_hours}h", inclusive="left")


def cut_examples(
    panel: Panel,
    origins: pd.DatetimeIndex,
    input_window: int,
    horizon: int,
    min_history_fraction: float,
    require_target: bool = True,
) -> Examples:
    """Examples for every (sensor, origin) with enough observed history (and target, if required)."""
    n_s = len(panel.sensor_ids)
    positions = np.array([panel.position(o) for o in origins], dtype=np.int64)
    rows = np.repeat(np.arange(n_s), len(positions))
    pos = np.tile(positions, n_s)
    history = panel.window(rows, pos - input_window, input_window)
    target = panel.window(rows, pos, horizon)
    keep = np.isfinite(history).mean(axis=1) >= min_history_fraction
    if require_target:
        keep &= np.isfinite(target).any(axis=1)
    rows, pos, history, target = rows[keep], pos[keep], history[keep], target[keep]

    calendar = np.empty((len(rows), horizon, len(CALENDAR_FEATURES)), dtype=np.float32)
    cities = np.asarray(panel.cities)[rows]
    for city in np.unique(cities):
        sel = cities == city
        # Calendar of every grid hour the targets touch, computed once per city and gathered.
        lo, hi = int(pos[sel].min()), int(pos[sel].max()) + horizon
        stamps = pd.date_range(panel.index[0] + pd.Timedelta(hours=lo), periods=hi - lo, freq="h")
        table = calendar_features(stamps, str(city))
        calendar[sel] = table[(pos[sel] - lo)[:, None] + np.arange(horizon)[None, :]]
    return Examples(
        history=history,
        calendar=calendar,
        target=target,
        sensor_ids=np.asarray(panel.sensor_ids)[rows],
        cities=cities,
        origins=(panel.index[0] + pd.to_timedelta(pos, unit="h")).to_numpy(),
    )
