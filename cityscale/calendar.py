"""Calendar covariates known in advance for every target hour: weekday, hour, holidays and their neighbours, lockdowns.

Holidays come from the ``holidays`` package for the city's region; lockdown windows from the
bundled table (``cityscale/data/covid_lockdowns.csv``, approximate to the day).
"""

from __future__ import annotations

from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

from cityscale.cities import get_city
from cityscale.config import PACKAGE_DATA

# Day flags beyond the holiday itself, kept because they lowered validation WAPE (docs/benchmarks.md, "Four-week
# features and calendar flags"): the day before / after a public holiday (not itself one), a bridge day (a Monday
# before or Friday after a holiday) and the day of a daylight-saving change. School holidays (official term dates)
# were measured too and dropped: no gain on the validation periods.
DAY_FLAGS = ["holiday", "lockdown", "holiday_eve", "holiday_after", "bridge_day", "dst_change"]
CALENDAR_FEATURES = [f"dow_{d}" for d in range(7)] + ["hour_sin", "hour_cos", *DAY_FLAGS]


@lru_cache(maxsize=8)
def _lockdown_days(region: str) -> frozenset[pd.Timestamp]:
    table = pd.read_csv(PACKAGE_DATA / "covid_lockdowns.csv", parse_dates=["start", "end"])
    days: set[pd.Timestamp] = set()
    for row in table[table["region"] == region].itertuples():
        days.update(pd.date_range(row.start, row.end, freq="D"))
    return frozenset(days)


@lru_cache(maxsize=64)
def _holiday_days(country: str, subdiv: str, year: int) -> frozenset[pd.Timestamp]:
    return frozenset(pd.Timestamp(d) for d in holidays.country_holidays(country, subdiv=subdiv, years=year))


def day_flags(days: pd.DatetimeIndex, city: str) -> tuple[np.ndarray, np.ndarray]:
    """Holiday and lockdown flags (float32) for normalised local days."""
    info = get_city(city)
    hol: set[pd.Timestamp] = set()
    for year in np.unique(days.year):
        hol |= _holiday_days(info.holiday_country, info.holiday_subdiv, int(year))
    lock = _lockdown_days(info.lockdown_region)
    return (
        np.fromiter((d in hol for d in days), dtype=np.float32, count=len(days)),
        np.fromiter((d in lock for d in days), dtype=np.float32, count=len(days)),
    )


def _dst_change(days: pd.DatetimeIndex, city: str) -> np.ndarray:
    """1 on days whose local length is not 24 hours (the clocks change)."""
    tz = get_city(city).timezone

    def utc(stamps: pd.DatetimeIndex) -> pd.DatetimeIndex:
        return stamps.tz_localize(tz, nonexistent="shift_forward", ambiguous=np.ones(len(stamps), dtype=bool))

    length = (utc(days + pd.Timedelta(days=1)) - utc(days)) / pd.Timedelta(hours=1)
    return (np.asarray(length) != 24).astype(np.float32)


def day_features(days: pd.DatetimeIndex, city: str) -> np.ndarray:
    """The ``DAY_FLAGS`` of normalised local days, ``[len(days), len(DAY_FLAGS)]``."""
    one = pd.Timedelta(days=1)
    holiday, lockdown = day_flags(days, city)
    before, _ = day_flags(days - one, city)
    after, _ = day_flags(days + one, city)
    dow = days.dayofweek.to_numpy()
    not_holiday = 1.0 - holiday
    flags = {
        "holiday": holiday,
        "lockdown": lockdown,
        "holiday_eve": after * not_holiday,
        "holiday_after": before * not_holiday,
        "bridge_day": (((dow == 0) & (after == 1)) | ((dow == 4) & (before == 1))) * not_holiday,
        "dst_change": _dst_change(days, city),
    }
    return np.stack([np.asarray(flags[name], dtype=np.float32) for name in DAY_FLAGS], axis=1)


def calendar_features(stamps: pd.DatetimeIndex, city: str) -> np.ndarray:
    """Covariates ``[len(stamps), len(CALENDAR_FEATURES)]`` for naive local-time hours."""
    stamps = pd.DatetimeIndex(stamps)
    out = np.zeros((len(stamps), len(CALENDAR_FEATURES)), dtype=np.float32)
    out[np.arange(len(stamps)), stamps.dayofweek] = 1.0
    angle = 2 * np.pi * stamps.hour.to_numpy() / 24.0
    out[:, 7] = np.sin(angle)
    out[:, 8] = np.cos(angle)
    unique_days, inverse = np.unique(stamps.normalize().to_numpy(), return_inverse=True)
    out[:, 9:] = day_features(pd.DatetimeIndex(unique_days), city)[inverse]
    return out
