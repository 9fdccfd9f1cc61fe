"""Calendar covariates known in advance for every target hour: weekday, hour, holidays, lockdowns.

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

CALENDAR_FEATURES = [f"dow_{d}" for d in range(7)] + ["hour_sin", "hour_cos", "holiday", "lockdown"]


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


def calendar_features(stamps: pd.DatetimeIndex, city: str) -> np.ndarray:
    """Covariates ``[len(stamps), len(CALENDAR_FEATURES)]`` for naive local-time hours."""
    stamps = pd.DatetimeIndex(stamps)
    out = np.zeros((len(stamps), len(CALENDAR_FEATURES)), dtype=np.float32)
    out[np.arange(len(stamps)), stamps.dayofweek] = 1.0
    angle = 2 * np.pi * stamps.hour.to_numpy() / 24.0
    out[:, 7] = np.sin(angle)
    out[:, 8] = np.cos(angle)
    days = stamps.normalize()
    unique_days, inverse = np.unique(days.to_numpy(), return_inverse=True)
    hol, lock = day_flags(pd.DatetimeIndex(unique_days), city)
    out[:, 9] = hol[inverse]
    out[:, 10] = lock[inverse]
    return out
