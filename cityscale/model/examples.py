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
from cityscale.model.inputs import RECENT_HOURS, has_enough_history
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


def panel_calendar(panel: Panel, rows: np.ndarray, positions: np.ndarray, horizon: int) -> np.ndarray:
    """Calendar covariates ``[P, horizon, K]`` of the hours from each (panel row, origin position) on."""
    calendar = np.empty((len(rows), horizon, len(CALENDAR_FEATURES)), dtype=np.float32)
    cities = np.asarray(panel.cities)[rows]
    for city in np.unique(cities):
        sel = cities == city
        # Calendar of every grid hour the targets touch, computed once per city and gathered.
        lo, hi = int(positions[sel].min()), int(positions[sel].max()) + horizon
        stamps = pd.date_range(panel.index[0] + pd.Timedelta(hours=lo), periods=hi - lo, freq="h")
        table = calendar_features(stamps, str(city))
        calendar[sel] = table[(positions[sel] - lo)[:, None] + np.arange(horizon)[None, :]]
    return calendar


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
    # Eligibility reads only the recent hours; the long window is gathered for the kept examples alone.
    recent_hours = min(input_window, RECENT_HOURS)
    target = panel.window(rows, pos, horizon)
    keep = has_enough_history(panel.window(rows, pos - recent_hours, recent_hours), min_history_fraction)
    if require_target:
        keep &= np.isfinite(target).any(axis=1)
    rows, pos, target = rows[keep], pos[keep], target[keep]
    history = panel.window(rows, pos - input_window, input_window)

    cities = np.asarray(panel.cities)[rows]
    return Examples(
        history=history,
        calendar=panel_calendar(panel, rows, pos, horizon),
        target=target,
        sensor_ids=np.asarray(panel.sensor_ids)[rows],
        cities=cities,
        origins=(panel.index[0] + pd.to_timedelta(pos, unit="h")).to_numpy(),
    )


def validation_mask(origins: np.ndarray, days: int) -> np.ndarray:
    """The examples of the latest ``days`` of origins: held out from fitting, they validate and calibrate.

    A history shorter than that (a small sample) falls back to its latest tenth, so both parts stay non-empty.
    """
    latest = origins.max()
    mask = origins > latest - np.timedelta64(days, "D")
    if mask.all() or not mask.any():
        cutoff = np.quantile(origins.astype("int64"), 0.9).astype("datetime64[ns]")
        mask = origins >= cutoff
    return mask
