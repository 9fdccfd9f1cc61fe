"""Data-quality checks and the cleaning of known source artefacts.

Soft problems (artefacts we know how to repair, missing hours) are repaired and counted; hard
problems (negative counts, impossible values, duplicate keys) fail the run, because training on
them silently would poison every downstream model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cityscale.cities import get_city
from cityscale.schema import RAW_KEY

MAX_PLAUSIBLE_HOURLY_COUNT = 100_000


class DataQualityError(ValueError):
    """The data has problems that must not reach the raw zone."""


@dataclass
class QualityReport:
    rows_in: int = 0
    rows_out: int = 0
    daily_total_artefacts_masked: int = 0
    dst_nonexistent_hours_dropped: int = 0
    dst_ambiguous_hours: int = 0
    hard_errors: list[str] = field(default_factory=list)
    sensors: pd.DataFrame = field(default_factory=pd.DataFrame)

    def raise_for_errors(self) -> None:
        if self.hard_errors:
            raise DataQualityError("; ".join(self.hard_errors))

    def to_markdown(self) -> str:
        lines = [
            "# Data quality report",
            "",
            "| check | value |",
            "| --- | --- |",
            f"| rows in | {self.rows_in:,} |",
            f"| rows out | {self.rows_out:,} |",
            f"| daily-total artefacts masked (lone 00:00 value in a day) | {self.daily_total_artefacts_masked:,} |",
            f"| DST gap hours dropped (local hour that does not exist) | {self.dst_nonexistent_hours_dropped:,} |",
            f"| DST overlap hours (assigned to daylight time) | {self.dst_ambiguous_hours:,} |",
            f"| hard errors | {len(self.hard_errors)} |",
            "",
        ]
        for err in self.hard_errors:
            lines.append(f"- **error**: {err}")
        if not self.sensors.empty:
            lines += ["", "## Sensors", "", self.sensors.to_markdown(index=False, floatfmt=".3f")]
        return "\n".join(lines) + "\n"


def _mask_daily_total_artefact(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop days where a sensor reports only a value at 00:00 (a daily total, e.g. Sept 2010)."""
    day = df["timestamp_local"].dt.normalize()
    per_day = df.groupby([df["city"], df["sensor_id"], day])["count"].transform("size")
    artefact = (per_day == 1) & (df["timestamp_local"].dt.hour == 0)
    return df.loc[~artefact], int(artefact.sum())


def _attach_utc(df: pd.DataFrame, report: QualityReport) -> pd.DataFrame:
    """Localise wall-clock hours per city; gap hours cannot be placed in UTC and are dropped."""
    parts = []
    for city_name, part in df.groupby("city", sort=False):
        tz = get_city(str(city_name)).timezone
        stamps = pd.DatetimeIndex(part["timestamp_local"].unique())
        utc_dst = stamps.tz_localize(tz, ambiguous=np.ones(len(stamps), bool), nonexistent="NaT")
        utc_std = stamps.tz_localize(tz, ambiguous=np.zeros(len(stamps), bool), nonexistent="NaT")
        report.dst_ambiguous_hours += int(((utc_dst != utc_std) & ~utc_dst.isna()).sum())
        mapping = pd.Series(utc_dst.tz_convert("UTC"), index=stamps)
        part = part.assign(timestamp_utc=part["timestamp_local"].map(mapping))
        gap = part["timestamp_utc"].isna()
        report.dst_nonexistent_hours_dropped += int(gap.sum())
        parts.append(part.loc[~gap])
    return pd.concat(parts, ignore_index=True) if parts else df.assign(timestamp_utc=pd.NaT)


def _sensor_summary(df: pd.DataFrame) -> pd.DataFrame:
    grouped = df.groupby(["city", "sensor_id"])
    summary = grouped["timestamp_local"].agg(first="min", last="max", rows="size").reset_index()
    span_hours = (summary["last"] - summary["first"]) / pd.Timedelta(hours=1) + 1
    summary["missing_rate"] = 1.0 - summary["rows"] / span_hours
    summary["first"] = summary["first"].dt.strftime("%Y-%m-%d %H:%M")
    summary["last"] = summary["last"].dt.strftime("%Y-%m-%d %H:%M")
    return summary


def clean_and_check(df: pd.DataFrame) -> tuple[pd.DataFrame, QualityReport]:
    """Repair known artefacts, attach UTC timestamps and collect hard errors.

    Input: long rows with city, sensor_id, sensor_name, timestamp_local, count.
    Output: the same plus timestamp_utc, in the raw contract's column order.
    """
    report = QualityReport(rows_in=len(df))
    if (df["count"] < 0).any():
        report.hard_errors.append(f"{int((df['count'] < 0).sum())} negative counts")
    too_big = df["count"] > MAX_PLAUSIBLE_HOURLY_COUNT
    if too_big.any():
        report.hard_errors.append(f"{int(too_big.sum())} counts above {MAX_PLAUSIBLE_HOURLY_COUNT} per hour")
    fractional = (df["count"] % 1) != 0
    if fractional.any():
        report.hard_errors.append(f"{int(fractional.sum())} non-integer counts")
    duplicates = df.duplicated(RAW_KEY).sum()
    if duplicates:
        report.hard_errors.append(f"{int(duplicates)} duplicate (city, sensor_id, timestamp_local) keys")

    df, report.daily_total_artefacts_masked = _mask_daily_total_artefact(df)
    df = _attach_utc(df, report)
    df = df.sort_values(RAW_KEY, ignore_index=True)
    report.rows_out = len(df)
    report.sensors = _sensor_summary(df) if len(df) else pd.DataFrame()
    cols = ["city", "sensor_id", "sensor_name", "timestamp_local", "timestamp_utc", "count"]
    return df[cols], report
