"""A dense hourly panel of counts: one row per sensor on a shared local-time hourly grid.

Missing hours are NaN. Window features, baselines and backtests all slice this one array, which
keeps them vectorised and makes "nothing at or after the origin" a matter of index arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Panel:
    values: np.ndarray  # float32 [n_sensors, n_hours], NaN = missing
    index: pd.DatetimeIndex  # naive local hours, freq 1h
    sensor_ids: list[str]
    cities: list[str]
    _row_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._row_of = {s: i for i, s in enumerate(self.sensor_ids)}

    @classmethod
    def from_raw(cls, df: pd.DataFrame) -> Panel:
        """Pivot long raw rows (city, sensor_id, timestamp_local, count) onto the hourly grid."""
        if df.empty:
            raise ValueError("cannot build a panel from no rows")
        index = pd.date_range(df["timestamp_local"].min(), df["timestamp_local"].max(), freq="h")
        keys = df[["city", "sensor_id"]].drop_duplicates().sort_values(["city", "sensor_id"])
        sensor_ids = keys["sensor_id"].tolist()
        if len(set(sensor_ids)) != len(sensor_ids):
            raise ValueError("a sensor_id appears in more than one city; ids must be unique")
        row = pd.Series(np.arange(len(sensor_ids)), index=sensor_ids)
        values = np.full((len(sensor_ids), len(index)), np.nan, dtype=np.float32)
        cols = ((df["timestamp_local"] - index[0]) // pd.Timedelta(hours=1)).to_numpy()
        values[row[df["sensor_id"]].to_numpy(), cols] = df["count"].to_numpy(dtype=np.float32)
        return cls(values, index, sensor_ids, keys["city"].tolist())

    def position(self, stamp: pd.Timestamp) -> int:
        """Grid position of a local hour (may lie outside the panel)."""
        return int((pd.Timestamp(stamp) - self.index[0]) // pd.Timedelta(hours=1))

    def row(self, sensor_id: str) -> int:
        try:
            return self._row_of[sensor_id]
        except KeyError:
            raise KeyError(f"unknown sensor {sensor_id!r}") from None

    def city_of(self, sensor_id: str) -> str | None:
        """The sensor's city, or None for a sensor the panel does not hold."""
        row = self._row_of.get(sensor_id)
        return None if row is None else self.cities[row]

    def gather(self, rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``values[rows[i], offsets[i, j]]`` with NaN where an offset lies outside the grid."""
        inside = (offsets >= 0) & (offsets < self.values.shape[1])
        out = np.full(offsets.shape, np.nan, dtype=np.float32)
        out[inside] = self.values[np.broadcast_to(rows[:, None], offsets.shape)[inside], offsets[inside]]
        return out

    def window(self, rows: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """``values[rows[i], starts[i]:starts[i]+length]`` with NaN outside the grid.

        Copied from a sliding-window view of the asked rows over the asked hours (padded with NaN beyond the
        grid): one memcpy per window, no index arrays (those of a million four-week windows would take ~15 GB),
        and no copy of hours no window reads (a forecast request reads one window of a multi-year grid).
        """
        rows, starts = np.asarray(rows, dtype=np.int64), np.asarray(starts, dtype=np.int64)
        n_hours = self.values.shape[1]
        out = np.full((len(rows), length), np.nan, dtype=np.float32)
        # Windows entirely outside the grid stay NaN.
        inside = (starts > -length) & (starts < n_hours)
        if length and inside.any():
            rows, starts = rows[inside], starts[inside]
            lo, hi = int(starts.min()), int(starts.max()) + length  # grid hours the windows cover, may overhang
            used, local_rows = np.unique(rows, return_inverse=True)
            block = np.full((len(used), hi - lo), np.nan, dtype=np.float32)
            first, last = max(lo, 0), min(hi, n_hours)
            block[:, first - lo : last - lo] = self.values[used, first:last]
            view = np.lib.stride_tricks.sliding_window_view(block, length, axis=1)
            out[inside] = view[local_rows, starts - lo]
        return out

    def select_city(self, city: str) -> Panel | None:
        """The rows of one city's sensors on the same grid, or None when the panel holds none."""
        rows = [i for i, c in enumerate(self.cities) if c == city]
        if not rows:
            return None
        return Panel(self.values[rows], self.index, [self.sensor_ids[i] for i in rows], [city] * len(rows))
