"""Recent counts per sensor in memory, and the pushed feature rows recomputed from them.

The gateway keeps the last ``lookback`` hours of every sensor (enough for the longest window of the
pushed views: 28-day aggregates, 4-week same-hour-of-week profiles) plus each sensor's first hour and
city. When counts arrive it recomputes the rows of the spec's pushed views at the city's freshness hour
(the hour after the city's latest count, as ``FeatureComputer.latest_spine``) with the *same definitions*
as the DuckDB SQL in :mod:`cityscale.features.compute`, so the online row after a push equals what the
next batch build computes offline (a test checks it value for value).
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import cached_property
from itertools import repeat

import numpy as np
import pandas as pd

from cityscale.features.compute import EPOCH, hour_positions, local_to_utc, position_stamps, sensor_locations
from cityscale.features.spec import SPEC, Feature, FeatureSpec, FeatureView
from cityscale.realtime.records import CountRow


def _lookback(spec: FeatureSpec) -> int:
    hours = [1]
    for view in spec.pushed_views():
        for f in view.features:
            hours += [f.length, f.window_hours + 1, 168 * f.weeks]
    return max(hours)


class CountState:
    """Counts by sensor and hour position, last write wins (the raw zone's upsert semantics)."""

    def __init__(self, spec: FeatureSpec = SPEC):
        self.spec = spec
        self.lookback = _lookback(spec)
        self.counts: dict[str, dict[int, int]] = defaultdict(dict)
        self.names: dict[str, str | None] = {}
        self.city_of: dict[str, str] = {}
        self.first_pos: dict[str, int] = {}
        self.city_last: dict[str, int] = {}
        self._install = self._installation_positions()

    @staticmethod
    def _installation_positions() -> dict[str, int]:
        meta = sensor_locations()
        meta = meta[meta["installation_date"] != ""]
        return dict(zip(meta["sensor_id"], hour_positions(pd.to_datetime(meta["installation_date"])), strict=True))

    def load_raw(self, raw: pd.DataFrame) -> None:
        """Seed from the raw zone: every sensor's first hour and city, the recent hours' counts."""
        if raw.empty:
            return
        pos = hour_positions(raw["timestamp_local"])
        frame = pd.DataFrame(
            {"city": raw["city"].astype(str), "sensor_id": raw["sensor_id"].astype(str), "pos": pos}
        ).assign(count=raw["count"].to_numpy(), name=raw["sensor_name"].to_numpy())
        for sensor, part in frame.groupby("sensor_id", sort=False):
            self.city_of[str(sensor)] = str(part["city"].iloc[0])
            self.first_pos[str(sensor)] = int(part["pos"].min())
        for city, last in frame.groupby("city")["pos"].max().items():
            self.city_last[str(city)] = max(int(last), self.city_last.get(str(city), int(last)))
        horizon = frame["city"].map(self.city_last) - self.lookback
        recent = frame[frame["pos"] >= horizon]
        for row in recent.itertuples(index=False):
            self.counts[row.sensor_id][int(row.pos)] = int(row.count)
            self.names[row.sensor_id] = row.name if isinstance(row.name, str) else None

    def conflict(self, row: CountRow) -> str | None:
        """Why a row cannot be accepted given what is known (a sensor id moving city), else None."""
        known = self.city_of.get(row.sensor_id)
        if known is not None and known != row.city:
            return f"sensor {row.sensor_id!r} belongs to {known!r}, not {row.city!r} (sensor ids are unique)"
        return None

    def diff(self, rows: list[CountRow]) -> list[CountRow]:
        """The rows that would change something (last write per key wins within the batch too).

        A row equal to what is held (a duplicate or retried push) changes nothing and is not journaled.
        """
        last = {row.key: row for row in rows}
        return [
            row
            for row in last.values()
            if row.sensor_id not in self.city_of or self.counts[row.sensor_id].get(row.pos) != row.count
        ]

    def apply(self, rows: list[CountRow]) -> set[str]:
        """Merge rows (as returned by :meth:`diff`); returns the cities whose latest hour moved."""
        advanced: set[str] = set()
        for row in rows:
            self.counts[row.sensor_id][row.pos] = row.count
            if row.sensor_name is not None or row.sensor_id not in self.names:
                self.names[row.sensor_id] = row.sensor_name
            self.city_of[row.sensor_id] = row.city
            self.first_pos[row.sensor_id] = min(self.first_pos.get(row.sensor_id, row.pos), row.pos)
            if row.pos > self.city_last.get(row.city, -1):
                self.city_last[row.city] = row.pos
                advanced.add(row.city)
        return advanced

    def prune(self) -> None:
        """Forget hours no pushed feature can reach any more (bounded memory on a long-running gateway)."""
        for sensor, hours in self.counts.items():
            floor = self.city_last.get(self.city_of.get(sensor, ""), 0) - self.lookback
            for pos in [p for p in hours if p < floor]:
                del hours[pos]

    def sensors_of(self, cities: set[str]) -> list[str]:
        return sorted(s for s, c in self.city_of.items() if c in cities)

    def as_of(self, sensor: str) -> int:
        """The event hour a sensor's online row is for: the hour after its city's latest count."""
        return self.city_last[self.city_of[sensor]] + 1

    # --- feature rows -----------------------------------------------------------------------------
    def rows(self, view: FeatureView, sensors: list[str]) -> dict[str, list]:
        """The view's rows for ``sensors`` at their freshness hours, as Feast push columns.

        Vectorized per sensor (numpy over the window, one UTC conversion per city hour): it runs under the
        gateway's state lock and holds the GIL, so its cost is a wait for every push of the moment.
        """
        out: dict[str, list] = {"sensor_id": [], "event_timestamp": []}
        for f in view.features:
            out[f.name] = []
        stamps: dict[tuple[str, int], str] = {}
        for sensor in sensors:
            city, t = self.city_of[sensor], self.as_of(sensor)
            if (city, t) not in stamps:
                stamps[city, t] = local_to_utc(position_stamps(np.array([t])), city)[0].isoformat()
            out["sensor_id"].append(sensor)
            out["event_timestamp"].append(stamps[city, t])
            series = _Series(self._series(sensor, t))
            for f in view.features:
                out[f.name].append(self._value(f, sensor, t, series))
        return out

    def _series(self, sensor: str, t: int) -> np.ndarray:
        """Counts of the ``lookback`` hours before t, oldest first, NaN = missing."""
        hours = self.counts.get(sensor, {})
        return np.array(list(map(hours.get, range(t - self.lookback, t), repeat(math.nan))), dtype=np.float64)

    def _value(self, f: Feature, sensor: str, t: int, series: _Series) -> object:
        if f.kind == "window":
            window = series.values[-f.length :]
            return np.where(np.isnan(window), -1.0, window).astype(np.float32).tolist()
        if f.kind == "same_hour_of_week":
            # Hour h of the profile: the hours 168k - h before t, k = 1..weeks (a sum of integers: exact in float64).
            n = len(series.values)
            same = series.values[n - (168 * np.arange(1, f.weeks + 1)[:, None] - np.arange(f.length)[None, :])]
            seen = (~np.isnan(same)).sum(axis=0)
            total = np.nansum(same, axis=0)
            means = np.divide(total, seen, out=np.full(f.length, -1.0), where=seen > 0).astype(np.float32)
            return means.astype(np.float64).tolist()
        if f.kind == "aggregate":
            return _aggregate(f, *series.moments(f.window_hours))
        if f.kind == "age":
            base = self._install.get(sensor, self.first_pos[sensor])
            return float(np.float32((t - base) / 24.0))
        raise ValueError(f"feature {f.name!r} of kind {f.kind!r} cannot be pushed")


class _Series:
    """One sensor's recent counts and the exact integer moments of their trailing windows."""

    def __init__(self, values: np.ndarray):
        self.values = values

    @cached_property
    def _trailing_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, sum and sum of squares of the last 1, 2, ... hours; built on first use (window rounds, on the
        pushes' critical path, never ask)."""
        seen = ~np.isnan(self.values)
        counts = np.where(seen, self.values, 0).astype(np.int64)  # <= 100,000 per hour: squares' sums fit in int64
        n, s1, s2 = (np.cumsum(a[::-1]) for a in (seen.astype(np.int64), counts, counts * counts))
        return n, s1, s2

    def moments(self, hours: int) -> tuple[int, int, int]:
        """Count, sum and sum of squares of the observed counts of the last ``hours`` hours."""
        i = min(hours, len(self.values)) - 1
        n, s1, s2 = self._trailing_sums
        return int(n[i]), int(s1[i]), int(s2[i])


def _aggregate(f: Feature, n: int, s1: int, s2: int) -> object:
    """Exactly ``FeatureComputer._agg_expr``: exact integer moments, then one rounding to the declared type."""
    if f.function == "count":
        return n
    if f.function == "sum":
        return s1
    if f.function == "mean":
        return float(np.float32(s1 / n)) if n > 0 else None
    if f.function == "stddev":
        return float(np.float32(math.sqrt((n * s2 - s1 * s1) / (n * (n - 1))))) if n > 1 else None
    raise ValueError(f"unknown aggregation {f.function!r} for {f.name}")


def pos_to_local(pos: int) -> pd.Timestamp:
    return EPOCH + pd.Timedelta(hours=pos)
