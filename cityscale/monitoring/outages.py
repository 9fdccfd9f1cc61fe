"""Sensor outages in the last hours of counts: missing streams, stuck-at-zero and flatlined sensors.

- ``missing``: a sensor that reported in the reference weeks has no count in the last ``hours``.
- ``stuck_at_zero``: a run of zeros covering at least ``zero_run_hours`` hours at which the sensor usually
  sees traffic (reference median for that hour of day >= ``zero_expected_min``). Quiet night hours read 0
  on real sensors, so zeros there neither count nor break the run.
- ``flatline``: the same non-zero count ``flatline_hours`` hours in a row (a frozen feed repeating its
  last value); real hourly counts essentially never repeat that long.

Detection only reads the raw zone, so it also covers sensors no one asked to forecast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["sensor_id", "kind", "since", "hours", "detail"]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end exclusive) of each run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2], strict=True))


def outage_table(
    raw: pd.DataFrame,
    as_of: pd.Timestamp,
    hours: int,
    reference_days: int,
    zero_run_hours: int,
    zero_expected_min: float,
    flatline_hours: int,
) -> pd.DataFrame:
    """One row per detected outage (a sensor may have several kinds); empty when all is well."""
    start = as_of - pd.Timedelta(hours=hours)
    reference_start = start - pd.Timedelta(days=reference_days)
    rows = raw[(raw["timestamp_local"] >= reference_start) & (raw["timestamp_local"] < as_of)]
    grid = pd.date_range(start, as_of - pd.Timedelta(hours=1), freq="h")
    found = []
    for sensor, frame in rows.groupby("sensor_id", sort=True):
        series = frame.set_index("timestamp_local")["count"].astype(float).sort_index()
        reference, recent = series[series.index < start], series.reindex(grid)
        observed = recent.notna().to_numpy()
        if len(reference) and not observed.any():
            last = reference.index.max()
            found.append(
                (
                    sensor,
                    "missing",
                    last + pd.Timedelta(hours=1),
                    int((as_of - last) / pd.Timedelta("1h")) - 1,
                    f"no count since {last:%Y-%m-%d %H:%M}",
                )
            )
            continue
        values = recent.to_numpy()
        expected = reference.groupby(reference.index.hour).median().reindex(range(24)).to_numpy()
        busy = np.nan_to_num(expected[grid.hour], nan=0.0) >= zero_expected_min
        for a, b in _runs(observed & (values == 0)):
            if busy[a:b].sum() >= zero_run_hours:
                found.append(
                    (sensor, "stuck_at_zero", grid[a], int(b - a), f"{int(busy[a:b].sum())} usually busy hours read 0")
                )
        same = np.concatenate([[False], (values[1:] == values[:-1]) & (values[1:] > 0)])
        for a, b in _runs(same):
            if b - a + 1 >= flatline_hours:
                found.append((sensor, "flatline", grid[a - 1], int(b - a + 1), f"count stuck at {values[a]:.0f}"))
    return pd.DataFrame(found, columns=COLUMNS)
